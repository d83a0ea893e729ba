"""The cleaning rules: each is a named predicate `rule(doc, cfg) -> True when the document must be DROPPED`.

`DocView` computes the statistics the rules share (tokens, lines, paragraphs, word hashes) lazily, once per
document, so a rule costs only what it needs and a document dropped early never pays for the n-gram work.

Words. A word is a whitespace-separated token, as in Gopher; a token made only of punctuation/symbols ("-", "&",
"...") is a "symbol token" and is not counted as a word for the word-count and mean-length rules. Ratios over
"tokens" (symbol/word ratio, alphabetic words) use every token. Word lengths exclude punctuation characters.

Repetition fractions are over word characters (the sum of token lengths, whitespace excluded) for n-grams, and
over the text's characters for lines and paragraphs. "Duplicate" means a repeat of an earlier occurrence: the
first occurrence is not counted. The top n-gram rule only counts an n-gram that occurs at least twice. Repeated
n-gram characters are a union, so overlapping repeats are not counted twice (Gopher, table A1 and appendix A).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np

from plasma_pipeline.clean.config import C4_POLICY_SUBSTRINGS, CleanConfig

# ---------------------------------------------------------------------------------------------------------------
# Shared patterns (compiled once per process)
# ---------------------------------------------------------------------------------------------------------------
# A whole token with no letter/digit/underscore. The leading character class lets `re` skip ahead fast; the
# lookbehind after it checks that this character starts a token.
_SYMBOL_TOKEN_RE = re.compile(r"[^\w\s](?<!\S.)[^\w\s]*(?!\S)")
_NONALPHA_TOKEN_RE = re.compile(r"(?:[^\w\s]|[\d_])(?<!\S.)(?:[^\w\s]|[\d_])*(?!\S)")  # a token with no letter
_PUNCT_CHAR_RE = re.compile(r"[^\w\s]")
# ASCII fast path for the same three counts: delete bytes with `bytes.translate` (C speed) and count what is left.
_ASCII_PUNCT = bytes(c for c in range(128) if _PUNCT_CHAR_RE.match(chr(c)))
_ASCII_NON_LETTER = _ASCII_PUNCT + b"0123456789_"
_ALNUM_RUN_RE = re.compile(r"[^\W_]+")
_BULLETS = ("•", "-", "*", "–", "—", "·", "▪", "●", "◦", "‣", "○", "■", "□", "➢", "►")
_ELLIPSES = ("...", "…")
# Terminal punctuation for C4 / FineWeb line tests: C4's ". ? ! \"" plus "'", curly closing quotes and CJK stops.
TERMINAL_PUNCT = (".", "?", "!", '"', "'", "”", "’", "。", "！", "？", "।", "؟")
_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?。！？]+[\"'”’)\]]*(?=\s|$)")
_C4_POLICY_RE = re.compile("|".join(re.escape(p) for p in C4_POLICY_SUBSTRINGS))

_NUMPY_MIN_TOKENS = 300  # longer documents use the numpy n-gram path (sorting hashes beats Counter of tuples)
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiplier for the rolling n-gram hash

_STOPWORD_RES: dict[tuple[str, ...], re.Pattern[str]] = {}


def _stopword_re(words: list[str]) -> re.Pattern[str]:
    key = tuple(words)
    pat = _STOPWORD_RES.get(key)
    if pat is None:
        alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
        pat = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        _STOPWORD_RES[key] = pat
    return pat


# ---------------------------------------------------------------------------------------------------------------
# Per-document statistics
# ---------------------------------------------------------------------------------------------------------------
def _dup_count_chars(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier item, total characters of those repeats)."""
    seen: set[str] = set()
    dups = dup_chars = 0
    for item in items:
        if item in seen:
            dups += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dups, dup_chars


class DocView:
    """Lazily computed statistics of one (normalised) document text."""

    __slots__ = (
        "_cum_len",
        "_dup_lines",
        "_hashes",
        "_lines",
        "_n_words",
        "_ngram_hashes",
        "_no_punct",
        "_no_repeat_from",
        "_paras",
        "_tokens",
        "_word_chars",
        "text",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens: list[str] | None = None
        self._n_words: int | None = None
        self._lines: list[str] | None = None
        self._paras: list[str] | None = None
        self._hashes: np.ndarray | None = None
        self._cum_len: np.ndarray | None = None
        self._ngram_hashes: dict[int, np.ndarray] = {}
        self._dup_lines: tuple[int, int] | None = None
        self._no_repeat_from: int | None = None  # smallest n known to have no repeated n-gram
        self._word_chars: int | None = None
        self._no_punct: bytes | None = None

    @property
    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = self.text.split()
        return self._tokens

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_words(self) -> int:
        """Tokens holding at least one letter, digit or underscore."""
        if self._n_words is None:
            text = self.text
            if text.isascii():
                self._n_words = len(self._ascii_no_punct().split())
            else:
                self._n_words = self.n_tokens - len(_SYMBOL_TOKEN_RE.findall(text))
        return self._n_words

    def _ascii_no_punct(self) -> bytes:
        if self._no_punct is None:
            self._no_punct = self.text.encode("ascii").translate(None, _ASCII_PUNCT)
        return self._no_punct

    @property
    def punct_chars(self) -> int:
        text = self.text
        if text.isascii():
            return len(text) - len(self._ascii_no_punct())
        return len(_PUNCT_CHAR_RE.findall(text))

    @property
    def alpha_tokens(self) -> int:
        """Tokens holding at least one letter."""
        text = self.text
        if text.isascii():
            return len(text.encode("ascii").translate(None, _ASCII_NON_LETTER).split())
        return self.n_tokens - len(_NONALPHA_TOKEN_RE.findall(text))

    @property
    def mean_word_length(self) -> float:
        n = self.n_words
        if n == 0:
            return 0.0
        word_chars = self.word_chars - self.punct_chars
        return word_chars / n

    @property
    def lines(self) -> list[str]:
        """Non-empty lines (the text is normalised: no leading/trailing spaces on a line)."""
        if self._lines is None:
            self._lines = [ln for ln in self.text.split("\n") if ln]
        return self._lines

    @property
    def paragraphs(self) -> list[str]:
        if self._paras is None:
            self._paras = [p for p in self.text.split("\n\n") if p.strip()]
        return self._paras

    @property
    def dup_lines(self) -> tuple[int, int]:
        if self._dup_lines is None:
            self._dup_lines = _dup_count_chars(self.lines)
        return self._dup_lines

    # -- n-gram machinery: 64-bit word hashes, rolling n-gram hashes, cumulative word lengths --
    def _word_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hashes is None:
            toks = self.tokens
            n = len(toks)
            # Python's str hash is salted per process but stable within it; only equality matters here.
            self._hashes = np.fromiter(map(hash, toks), dtype=np.int64, count=n).view(np.uint64)
            cum = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, toks), dtype=np.int64, count=n), out=cum[1:])
            self._cum_len = cum
            self._ngram_hashes[1] = self._hashes
        return self._hashes, self._cum_len  # type: ignore[return-value]

    def ngram_hashes(self, n: int) -> np.ndarray:
        """Hash of the n-gram starting at each position (length n_tokens - n + 1)."""
        h = self._ngram_hashes.get(n)
        if h is not None:
            return h
        words, _ = self._word_arrays()
        m = max(k for k in self._ngram_hashes if k < n)
        h = self._ngram_hashes[m]
        for k in range(m + 1, n + 1):
            size = len(words) - k + 1
            h = h[:size] * _HASH_MULT ^ words[k - 1 : k - 1 + size]
            self._ngram_hashes[k] = h
        return h

    @property
    def word_chars(self) -> int:
        if self._word_chars is None:
            self._word_chars = sum(map(len, self.tokens))
        return self._word_chars

    def top_ngram_char_frac(self, n: int) -> float:
        """Characters of the most frequent n-gram (occurring >= 2 times) times its count, over word characters.

        Ties go to the n-gram that occurs first. Short documents count tuples of tokens; long ones sort hashes.
        """
        toks = self.tokens
        if len(toks) < n + 1 or (self._no_repeat_from is not None and n >= self._no_repeat_from):
            return 0.0
        total = self.word_chars
        if not total:
            return 0.0
        if len(toks) < _NUMPY_MIN_TOKENS:
            counts = Counter(zip(*[toks[k:] for k in range(n)]))
            top = max(counts.values())
            if top < 2:
                self._note_no_repeat(n)
                return 0.0
            # the first most frequent n-gram (ties broken by position, as Counter.most_common does)
            gram = max(counts, key=counts.__getitem__)
            return sum(map(len, gram)) * top / total
        h = self.ngram_hashes(n)
        _, first, ncounts = np.unique(h, return_index=True, return_counts=True)
        top = int(ncounts.max())
        if top < 2:
            self._note_no_repeat(n)
            return 0.0
        cum = self._cum_len
        start = int(first[ncounts == top].min())  # the earliest most frequent n-gram, as in the Counter path
        return int(cum[start + n] - cum[start]) * top / total

    def dup_ngram_char_frac(self, n: int) -> float:
        """Fraction of word characters covered by n-grams that repeat an earlier n-gram (union of their spans)."""
        toks = self.tokens
        n_tok = len(toks)
        if n_tok < n + 1 or (self._no_repeat_from is not None and n >= self._no_repeat_from):
            return 0.0
        # Fast exit (most documents): no n-gram occurs twice. Repeats of (n+1)-grams imply repeats of n-grams.
        if len(set(zip(*[toks[k:] for k in range(n)]))) == n_tok - n + 1:
            self._note_no_repeat(n)
            return 0.0
        h = self.ngram_hashes(n)
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        starts = np.nonzero(first[inverse] != np.arange(len(h)))[0]
        if len(starts) == 0:
            return 0.0
        # Mark coverage with a difference array: +1 at each repeat's start, -1 after its last word.
        diff = np.zeros(n_tok + 1, dtype=np.int32)
        diff[starts] += 1  # starts are distinct, so plain fancy-index updates are exact
        diff[starts + n] -= 1
        covered = np.cumsum(diff[:-1]) > 0
        cum = self._cum_len
        lengths = cum[1:] - cum[:-1]
        total = self.word_chars
        return int(lengths[covered].sum()) / total if total else 0.0

    def _note_no_repeat(self, n: int) -> None:
        if self._no_repeat_from is None or n < self._no_repeat_from:
            self._no_repeat_from = n


Rule = Callable[[DocView, CleanConfig], bool]


# ---------------------------------------------------------------------------------------------------------------
# Gopher quality rules
# ---------------------------------------------------------------------------------------------------------------
def gopher_min_words(d: DocView, c: CleanConfig) -> bool:
    return d.n_words < c.min_words


def gopher_max_words(d: DocView, c: CleanConfig) -> bool:
    return d.n_words > c.max_words


def gopher_min_mean_word_length(d: DocView, c: CleanConfig) -> bool:
    return d.mean_word_length < c.min_mean_word_length


def gopher_max_mean_word_length(d: DocView, c: CleanConfig) -> bool:
    return d.mean_word_length > c.max_mean_word_length


def gopher_symbol_word_ratio(d: DocView, c: CleanConfig) -> bool:
    n = d.n_tokens
    if n == 0:
        return True
    text = d.text
    limit = c.max_symbol_word_ratio * n
    return text.count("#") > limit or (text.count("...") + text.count("…")) > limit


def gopher_bullet_lines(d: DocView, c: CleanConfig) -> bool:
    lines = d.lines
    return bool(lines) and sum(1 for ln in lines if ln.startswith(_BULLETS)) > c.max_bullet_lines_ratio * len(lines)


def gopher_ellipsis_lines(d: DocView, c: CleanConfig) -> bool:
    lines = d.lines
    return bool(lines) and sum(1 for ln in lines if ln.endswith(_ELLIPSES)) > c.max_ellipsis_lines_ratio * len(lines)


def gopher_alpha_words(d: DocView, c: CleanConfig) -> bool:
    n = d.n_tokens
    if n == 0:
        return True
    return d.alpha_tokens < c.min_alpha_words_ratio * n


def gopher_stop_words(d: DocView, c: CleanConfig) -> bool:
    need = c.min_stop_words
    if need <= 0:
        return False
    found: set[str] = set()
    for m in _stopword_re(c.stop_words).finditer(d.text):
        found.add(m.group().lower())
        if len(found) >= need:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Gopher repetition rules
# ---------------------------------------------------------------------------------------------------------------
def gopher_dup_para_frac(d: DocView, c: CleanConfig) -> bool:
    paras = d.paragraphs
    return bool(paras) and _dup_count_chars(paras)[0] > c.max_dup_para_frac * len(paras)


def gopher_dup_para_char_frac(d: DocView, c: CleanConfig) -> bool:
    return _dup_count_chars(d.paragraphs)[1] > c.max_dup_para_char_frac * len(d.text)


def gopher_dup_line_frac(d: DocView, c: CleanConfig) -> bool:
    lines = d.lines
    return bool(lines) and d.dup_lines[0] > c.max_dup_line_frac * len(lines)


def gopher_dup_line_char_frac(d: DocView, c: CleanConfig) -> bool:
    return d.dup_lines[1] > c.max_dup_line_char_frac * len(d.text)


def make_top_ngram_rule(n: int, limit: float) -> Rule:
    def rule(d: DocView, c: CleanConfig) -> bool:
        return d.top_ngram_char_frac(n) > limit

    rule.__name__ = f"gopher_top_{n}gram"
    return rule


def make_dup_ngram_rule(n: int, limit: float) -> Rule:
    def rule(d: DocView, c: CleanConfig) -> bool:
        return d.dup_ngram_char_frac(n) > limit

    rule.__name__ = f"gopher_dup_{n}gram"
    return rule


# ---------------------------------------------------------------------------------------------------------------
# C4: line filter (modifies the text) and page rules
# ---------------------------------------------------------------------------------------------------------------
# Put this name in rules_disabled to skip the whole C4 step: the text is left unmodified and the C4 page rules
# (c4_lorem_ipsum, c4_curly_bracket, c4_min_sentences) do not run either.
C4_LINE_FILTER = "c4_line_filter"


def c4_filter(text: str, c: CleanConfig, stats: Counter[str]) -> tuple[str, str | None]:
    """C4's clean_page: returns (kept text, None) or (text, name of the page rule that drops it).

    Line removals are counted in `c4_lines/<reason>` and their sum in `modified/c4_lines_removed`. Paragraph
    breaks between kept lines are preserved. The page rules (`c4_lorem_ipsum`, `c4_curly_bracket`) look only at
    lines that survived the line rules, as in the reference implementation. `c4_min_sentences` counts sentence ends
    (a run of . ! ? 。！？, optionally closed by a quote or bracket, then whitespace or the end) in the kept lines,
    where C4 used a sentence tokenizer.
    """
    disabled = c.rules_disabled
    # Whole-text pre-checks: most pages never mention these, and then no line needs lowercasing.
    low = text.lower()
    check_lorem = c.c4_drop_lorem_ipsum and "c4_lorem_ipsum" not in disabled and "lorem ipsum" in low
    check_curly = c.c4_drop_curly_bracket and "c4_curly_bracket" not in disabled and "{" in text
    check_js = c.c4_drop_javascript_lines and "javascript" in low
    check_policy = c.c4_drop_policy_lines and _C4_POLICY_RE.search(low) is not None
    need_lower = check_lorem or check_js or check_policy
    min_words = c.c4_min_words_per_line
    max_word = c.c4_max_word_length
    kept: list[str] = []
    removed: Counter[str] = Counter()
    gap = False
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            gap = True
            continue
        words = line.split()
        if len(line) > max_word and max(map(len, words)) > max_word:
            removed["too_long_word"] += 1
            continue
        if c.c4_remove_citations and "[" in line:
            line = _CITATION_RE.sub("", line).rstrip()
        if c.c4_drop_no_terminal_punct and (not line.endswith(TERMINAL_PUNCT) or line.endswith("...")):
            removed["no_terminal_punct"] += 1
            continue
        if len(words) < min_words:
            removed["too_few_words"] += 1
            continue
        if need_lower:
            lower = line.lower()
            if check_lorem and "lorem ipsum" in lower:
                return text, "c4_lorem_ipsum"
            if check_js and "javascript" in lower:
                removed["javascript"] += 1
                continue
        if check_curly and "{" in line:
            return text, "c4_curly_bracket"
        if check_policy and _C4_POLICY_RE.search(lower) is not None:
            removed["policy"] += 1
            continue
        if gap and kept:
            kept.append("")
        gap = False
        kept.append(line)
    if removed:
        for reason, count in removed.items():
            stats[f"c4_lines/{reason}"] += count
        stats["modified/c4_lines_removed"] += sum(removed.values())
        stats["modified/c4_docs"] += 1
    out = "\n".join(kept)
    min_sentences = c.c4_min_sentences if "c4_min_sentences" not in disabled else 0
    if min_sentences > 0 and len(_SENTENCE_END_RE.findall(out)) < min_sentences:
        return text, "c4_min_sentences"
    if not kept:
        return "", "c4_no_lines_left"
    return out, None


# ---------------------------------------------------------------------------------------------------------------
# FineWeb rules (run on the C4-filtered text)
# ---------------------------------------------------------------------------------------------------------------
def fineweb_line_punct_ratio(d: DocView, c: CleanConfig) -> bool:
    lines = d.lines
    if not lines:
        return True
    return sum(1 for ln in lines if ln.endswith(TERMINAL_PUNCT)) < c.fw_min_line_punct_ratio * len(lines)


def fineweb_short_line_ratio(d: DocView, c: CleanConfig) -> bool:
    lines = d.lines
    limit = c.fw_short_line_chars
    return bool(lines) and sum(1 for ln in lines if len(ln) <= limit) > c.fw_max_short_line_ratio * len(lines)


def fineweb_char_dup_ratio(d: DocView, c: CleanConfig) -> bool:
    chars = len(d.text) - d.text.count("\n")
    return chars > 0 and d.dup_lines[1] > c.fw_max_char_dup_ratio * chars


def fineweb_newline_ratio(d: DocView, c: CleanConfig) -> bool:
    n = d.n_tokens
    return n == 0 or d.text.count("\n") > c.fw_max_newline_ratio * n


# ---------------------------------------------------------------------------------------------------------------
# Code rules (Codex, The Stack, StarCoder)
# ---------------------------------------------------------------------------------------------------------------
def code_max_file_bytes(d: DocView, c: CleanConfig) -> bool:
    text = d.text
    if len(text) * 4 <= c.code_max_file_bytes:  # cannot exceed even if every character took 4 bytes
        return False
    return len(text.encode("utf-8", "surrogatepass")) > c.code_max_file_bytes


def code_max_line_length(d: DocView, c: CleanConfig) -> bool:
    return max(map(len, d.text.split("\n"))) > c.code_max_line_length


def code_mean_line_length(d: DocView, c: CleanConfig) -> bool:
    return len(d.text) / (d.text.count("\n") + 1) > c.code_max_mean_line_length


def code_alnum_frac(d: DocView, c: CleanConfig) -> bool:
    text = d.text
    return sum(map(len, _ALNUM_RUN_RE.findall(text))) < c.code_min_alnum_frac * len(text)


def code_autogenerated(d: DocView, c: CleanConfig) -> bool:
    k = c.code_autogen_scan_lines
    if k <= 0:
        return False
    head = "\n".join(d.text.split("\n", k)[:k]).lower()
    return any(marker in head for marker in c.code_autogen_markers)


# ---------------------------------------------------------------------------------------------------------------
# Rule order
# ---------------------------------------------------------------------------------------------------------------
# Documents are dropped by the FIRST failing rule, in this order. Cheap rules run before expensive ones (Gopher
# quality before the n-gram repetition rules); C4 rewrites the text after the Gopher rules, as in FineWeb's
# pipeline, and the FineWeb rules judge the rewritten text.
PRE_RULES = ("empty",)
LANG_RULES = ("lang", "lang_score")
GOPHER_QUALITY_RULES: tuple[tuple[str, Rule], ...] = (
    ("gopher_min_words", gopher_min_words),
    ("gopher_max_words", gopher_max_words),
    ("gopher_min_mean_word_length", gopher_min_mean_word_length),
    ("gopher_max_mean_word_length", gopher_max_mean_word_length),
    ("gopher_symbol_word_ratio", gopher_symbol_word_ratio),
    ("gopher_bullet_lines", gopher_bullet_lines),
    ("gopher_ellipsis_lines", gopher_ellipsis_lines),
    ("gopher_alpha_words", gopher_alpha_words),
    ("gopher_stop_words", gopher_stop_words),
)
GOPHER_REPETITION_RULES: tuple[tuple[str, Rule], ...] = (
    ("gopher_dup_para_frac", gopher_dup_para_frac),
    ("gopher_dup_para_char_frac", gopher_dup_para_char_frac),
    ("gopher_dup_line_frac", gopher_dup_line_frac),
    ("gopher_dup_line_char_frac", gopher_dup_line_char_frac),
)
C4_PAGE_RULES = ("c4_lorem_ipsum", "c4_curly_bracket", "c4_min_sentences", "c4_no_lines_left")
FINEWEB_RULES: tuple[tuple[str, Rule], ...] = (
    ("fineweb_line_punct_ratio", fineweb_line_punct_ratio),
    ("fineweb_short_line_ratio", fineweb_short_line_ratio),
    ("fineweb_char_dup_ratio", fineweb_char_dup_ratio),
    ("fineweb_newline_ratio", fineweb_newline_ratio),
)
CODE_RULES: tuple[tuple[str, Rule], ...] = (
    ("code_max_file_bytes", code_max_file_bytes),
    ("code_max_line_length", code_max_line_length),
    ("code_mean_line_length", code_mean_line_length),
    ("code_alnum_frac", code_alnum_frac),
    ("code_autogenerated", code_autogenerated),
)
_NGRAM_RULE_RE = re.compile(r"gopher_(?:top|dup)_\d+gram")

RULE_NAMES: tuple[str, ...] = (
    PRE_RULES
    + LANG_RULES
    + tuple(n for n, _ in GOPHER_QUALITY_RULES)
    + tuple(n for n, _ in GOPHER_REPETITION_RULES)
    + tuple(f"gopher_top_{n}gram" for n in (2, 3, 4))
    + tuple(f"gopher_dup_{n}gram" for n in range(5, 11))
    + (C4_LINE_FILTER,)
    + C4_PAGE_RULES
    + tuple(n for n, _ in FINEWEB_RULES)
    + tuple(n for n, _ in CODE_RULES)
)


def is_rule_name(name: str) -> bool:
    """A known rule name (n-gram rules accept any n, since the n's come from the config)."""
    return name in RULE_NAMES or _NGRAM_RULE_RE.fullmatch(name) is not None


def prose_rules_before_c4(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    """Gopher quality, then Gopher repetition (lines/paragraphs, top n-grams, repeated n-grams), minus disabled."""
    rules = list(GOPHER_QUALITY_RULES) + list(GOPHER_REPETITION_RULES)
    rules += [(f"gopher_top_{n}gram", make_top_ngram_rule(n, f)) for n, f in cfg.max_top_ngram_char_frac.items()]
    rules += [(f"gopher_dup_{n}gram", make_dup_ngram_rule(n, f)) for n, f in cfg.max_dup_ngram_char_frac.items()]
    return [(name, fn) for name, fn in rules if name not in cfg.rules_disabled]


def prose_rules_after_c4(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    return [(name, fn) for name, fn in FINEWEB_RULES if name not in cfg.rules_disabled]


def code_rules(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    return [(name, fn) for name, fn in CODE_RULES if name not in cfg.rules_disabled]
