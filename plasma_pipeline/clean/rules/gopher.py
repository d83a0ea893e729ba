"""Gopher (MassiveText, Rae et al. 2021, table A1 and appendix A): quality rules and repetition rules.

Every rule is `rule(doc, cfg) -> True when the document must be DROPPED` over a `DocView`. The defaults of the
thresholds are in `CleanConfig`; the default stop words and n-gram tables live here, next to the rules that use
them, and `CleanConfig` takes its defaults from these constants.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable
from typing import TYPE_CHECKING

from plasma_pipeline.clean.docview import DocView, Rule
from plasma_pipeline.clean.stopwords import distinct_stop_words, gopher_min_stop_words, gopher_stop_words_for

if TYPE_CHECKING:
    from plasma_pipeline.clean.config import CleanConfig

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
# n -> maximum character fraction of the most frequent n-gram, and of the characters covered by repeated n-grams.
DEFAULT_TOP_NGRAM_CHAR_FRAC: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
DEFAULT_DUP_NGRAM_CHAR_FRAC: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_BULLETS = ("•", "-", "*", "–", "—", "·", "▪", "●", "◦", "‣", "○", "■", "□", "➢", "►")
_ELLIPSES = ("...", "…")


# ---------------------------------------------------------------------------------------------------------------
# Quality rules
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


# The stop-word rule is language-aware: a document detected as English (or of unknown language), or any document
# when the recipe gives its own `stop_words`, is judged by `cfg.stop_words` (Gopher's 8 English words) and
# `cfg.min_stop_words`; any other language by its stopwords-iso list and a scaled minimum (see clean/stopwords.py
# for the calibration). A language without a list is not judged by this rule.
def _configured(doc_lang: str | None, cfg: CleanConfig) -> bool:
    return doc_lang in (None, "en") or list(cfg.stop_words) != GOPHER_STOP_WORDS


def _stop_words(doc_lang: str | None, cfg: CleanConfig) -> Collection[str]:
    """The stop words `gopher_stop_words` looks for in a document detected as `doc_lang`; empty: no judgement."""
    return cfg.stop_words if _configured(doc_lang, cfg) else gopher_stop_words_for(doc_lang)


def _min_stop_words(doc_lang: str | None, cfg: CleanConfig) -> int:
    """How many distinct stop words of `_stop_words(doc_lang, cfg)` a document must hold."""
    if _configured(doc_lang, cfg):
        return cfg.min_stop_words
    return gopher_min_stop_words(doc_lang, cfg.min_stop_words)


_STOPWORD_RES: dict[Hashable, re.Pattern[str]] = {}


def _stopword_re(words: Collection[str]) -> re.Pattern[str]:
    key = words if type(words) in (frozenset, tuple) else tuple(words)
    pat = _STOPWORD_RES.get(key)
    if pat is None:
        alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
        pat = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        _STOPWORD_RES[key] = pat
    return pat


def gopher_stop_words(d: DocView, c: CleanConfig) -> bool:
    need = _min_stop_words(d.lang, c)
    if need <= 0:
        return False
    words = _stop_words(d.lang, c)
    if not words:
        return False  # no stop-word list for this language: the rule cannot judge it
    if not _configured(d.lang, c):
        return distinct_stop_words(d.text, words) < need
    found: set[str] = set()
    for m in _stopword_re(words).finditer(d.text):
        found.add(m.group().lower())
        if len(found) >= need:
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Repetition rules
# ---------------------------------------------------------------------------------------------------------------
def gopher_dup_para_frac(d: DocView, c: CleanConfig) -> bool:
    paras = d.paragraphs
    return bool(paras) and d.dup_paragraphs[0] > c.max_dup_para_frac * len(paras)


def gopher_dup_para_char_frac(d: DocView, c: CleanConfig) -> bool:
    return d.dup_paragraphs[1] > c.max_dup_para_char_frac * len(d.text)


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


def ngram_rules(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    """The n-gram rules for the n's and limits of this config: top n-grams first, then repeated n-grams."""
    rules = [(f"gopher_top_{n}gram", make_top_ngram_rule(n, f)) for n, f in cfg.max_top_ngram_char_frac.items()]
    rules += [(f"gopher_dup_{n}gram", make_dup_ngram_rule(n, f)) for n, f in cfg.max_dup_ngram_char_frac.items()]
    return rules


def default_ngram_rule_names() -> tuple[str, ...]:
    return tuple(f"gopher_top_{n}gram" for n in DEFAULT_TOP_NGRAM_CHAR_FRAC) + tuple(
        f"gopher_dup_{n}gram" for n in DEFAULT_DUP_NGRAM_CHAR_FRAC
    )


NGRAM_RULE_RE = re.compile(r"gopher_(?:top|dup)_\d+gram")

QUALITY_RULES: tuple[tuple[str, Rule], ...] = (
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
REPETITION_RULES: tuple[tuple[str, Rule], ...] = (
    ("gopher_dup_para_frac", gopher_dup_para_frac),
    ("gopher_dup_para_char_frac", gopher_dup_para_char_frac),
    ("gopher_dup_line_frac", gopher_dup_line_frac),
    ("gopher_dup_line_char_frac", gopher_dup_line_char_frac),
)
