"""The rule registry: every rule name, in the order `clean_table` applies them, and the active lists per config.

Documents are dropped by the FIRST failing rule, in this order. Cheap rules run before expensive ones (Gopher
quality before the n-gram repetition rules); C4 rewrites the text after the Gopher rules, as in FineWeb's
pipeline, `fragmented` then drops a document the line rules cut too much of, and the FineWeb rules judge the
rewritten text. The code profile runs the code rules only.

    empty
    lang, lang_score                                  (prose, docs)
    gopher_* quality, gopher_* repetition, n-grams    (gopher.py)
    c4_line_filter -> c4 page rules, fragmented       (c4.py)
    fineweb_*                                         (fineweb.py)
    code_*                                            (code.py; code profile)

This module reads only the rule modules, never `CleanConfig` at import time, so `config.py` can import it to
validate `rules_disabled` without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plasma_pipeline.clean.docview import Rule
from plasma_pipeline.clean.rules import c4, code, fineweb, gopher

if TYPE_CHECKING:
    from plasma_pipeline.clean.config import CleanConfig

PRE_RULES = ("empty",)
LANG_RULES = ("lang", "lang_score")
GOPHER_QUALITY_RULES = gopher.QUALITY_RULES
GOPHER_REPETITION_RULES = gopher.REPETITION_RULES
C4_LINE_FILTER = c4.C4_LINE_FILTER
C4_PAGE_RULES = c4.PAGE_RULES
FRAGMENTED = c4.FRAGMENTED
FINEWEB_RULES = fineweb.RULES
CODE_RULES = code.RULES

RULE_NAMES: tuple[str, ...] = (
    PRE_RULES
    + LANG_RULES
    + tuple(n for n, _ in GOPHER_QUALITY_RULES)
    + tuple(n for n, _ in GOPHER_REPETITION_RULES)
    + gopher.default_ngram_rule_names()
    + (C4_LINE_FILTER,)
    + C4_PAGE_RULES
    + (FRAGMENTED,)
    + tuple(n for n, _ in FINEWEB_RULES)
    + tuple(n for n, _ in CODE_RULES)
)


def is_rule_name(name: str) -> bool:
    """A known rule name (n-gram rules accept any n, since the n's come from the config)."""
    return name in RULE_NAMES or gopher.NGRAM_RULE_RE.fullmatch(name) is not None


def prose_rules_before_c4(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    """Gopher quality, then Gopher repetition (lines/paragraphs, top n-grams, repeated n-grams), minus disabled."""
    rules = list(GOPHER_QUALITY_RULES) + list(GOPHER_REPETITION_RULES) + gopher.ngram_rules(cfg)
    return [(name, fn) for name, fn in rules if name not in cfg.rules_disabled]


def prose_rules_after_c4(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    return [(name, fn) for name, fn in FINEWEB_RULES if name not in cfg.rules_disabled]


def code_rules(cfg: CleanConfig) -> list[tuple[str, Rule]]:
    return [(name, fn) for name, fn in CODE_RULES if name not in cfg.rules_disabled]


def runs_c4(cfg: CleanConfig) -> bool:
    return cfg.profile != "code" and C4_LINE_FILTER not in cfg.rules_disabled


def active_rule_names(cfg: CleanConfig) -> list[str]:
    """The rules `clean_table` applies for this config, in order."""
    if cfg.profile == "code":
        names = ["empty"] + [n for n, _ in code_rules(cfg)]
    else:
        names = ["empty", "lang", "lang_score"] + [n for n, _ in prose_rules_before_c4(cfg)]
        if runs_c4(cfg):
            names += [n for n in C4_PAGE_RULES if n != "c4_curly_bracket" or c4.curly_bracket_applies(cfg)]
            names.append(FRAGMENTED)
        names += [n for n, _ in prose_rules_after_c4(cfg)]
    return [n for n in names if n not in cfg.rules_disabled]
