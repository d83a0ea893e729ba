"""`DocView`: the statistics of one normalised document that the rules share, computed lazily and at most once.

A rule costs only what it needs, and a document dropped early never pays for the n-gram work. Every rule has the
signature `Rule`: `rule(doc, cfg) -> True when the document must be DROPPED`.

Words. A word is a whitespace-separated token, as in Gopher; a token made only of punctuation/symbols ("-", "&",
"...") is a "symbol token" and is not counted as a word for the word-count and mean-length rules. Ratios over
"tokens" (symbol/word ratio, alphabetic words) use every token. Word lengths exclude punctuation characters.

Lines. `lines` are the physical non-empty lines (Gopher's line rules); `logical_lines` join the lines of a
hard-wrapped paragraph into one (see `lines.py`), and are what FineWeb's line rules count. In text that is not
hard-wrapped the two are the same.

Repetition fractions are over word characters (the sum of token lengths, whitespace excluded) for n-grams, and
over the text's characters for lines and paragraphs. "Duplicate" means a repeat of an earlier occurrence: the
first occurrence is not counted. The top n-gram rule only counts an n-gram that occurs at least twice. Repeated
n-gram characters are a union, so overlapping repeats are not counted twice (Gopher, table A1 and appendix A).

`lang` is the document's detected language (None when unknown; "code" under the code profile), for rules whose
word lists depend on it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from plasma_pipeline.clean.lines import logical_lines

if TYPE_CHECKING:
    from plasma_pipeline.clean.config import CleanConfig

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

_NUMPY_MIN_TOKENS = 300  # longer documents use the numpy n-gram path (sorting hashes beats Counter of tuples)
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiplier for the rolling n-gram hash

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
        "_dup_logical",
        "_dup_paras",
        "_hashes",
        "_lines",
        "_logical",
        "_n_words",
        "_ngram_hashes",
        "_no_punct",
        "_no_repeat_from",
        "_paras",
        "_tokens",
        "_word_chars",
        "lang",
        "text",
    )

    def __init__(self, text: str, lang: str | None = None, logical: tuple[list[str], int] | None = None) -> None:
        """`logical`: the text's (logical lines, soft breaks joined) when already known (`C4Result.logical`)."""
        self.text = text
        self.lang = lang
        self._logical = logical
        self._tokens: list[str] | None = None
        self._n_words: int | None = None
        self._lines: list[str] | None = None
        self._paras: list[str] | None = None
        self._hashes: np.ndarray | None = None
        self._cum_len: np.ndarray | None = None
        self._ngram_hashes: dict[int, np.ndarray] = {}
        self._dup_lines: tuple[int, int] | None = None
        self._dup_logical: tuple[int, int] | None = None
        self._dup_paras: tuple[int, int] | None = None
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
    def logical_lines(self) -> list[str]:
        """Lines with each hard-wrapped paragraph joined into one (`lines.logical_lines`)."""
        if self._logical is None:
            self._logical = logical_lines(self.text)
        return self._logical[0]

    @property
    def logical_newlines(self) -> int:
        """Newlines of the text, less the soft wrap breaks inside hard-wrapped paragraphs."""
        if self._logical is None:
            self._logical = logical_lines(self.text)
        return self.text.count("\n") - self._logical[1]

    @property
    def paragraphs(self) -> list[str]:
        if self._paras is None:
            self._paras = [p for p in self.text.split("\n\n") if p.strip()]
        return self._paras

    @property
    def dup_lines(self) -> tuple[int, int]:
        """(lines repeating an earlier line, their characters)."""
        if self._dup_lines is None:
            self._dup_lines = _dup_count_chars(self.lines)
        return self._dup_lines

    @property
    def dup_logical_lines(self) -> tuple[int, int]:
        """(logical lines repeating an earlier one, their characters).

        Logical lines repeat only where physical lines do (short of one text wrapped two ways), so a text without
        repeated lines is answered without finding its units."""
        if self._dup_logical is None:
            if self.dup_lines[0] == 0:
                self._dup_logical = (0, 0)
            else:
                lines = self.logical_lines
                joined = self.text.count("\n") - self.logical_newlines
                self._dup_logical = self.dup_lines if joined == 0 else _dup_count_chars(lines)
        return self._dup_logical

    @property
    def dup_paragraphs(self) -> tuple[int, int]:
        """(paragraphs repeating an earlier paragraph, their characters)."""
        if self._dup_paras is None:
            self._dup_paras = _dup_count_chars(self.paragraphs)
        return self._dup_paras

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


Rule = Callable[[DocView, "CleanConfig"], bool]
