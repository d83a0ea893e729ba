"""`CleanConfig`: the recipe's slice for one `clean/<source>` asset.

Defaults are the published values: Gopher quality and repetition rules from Rae et al. 2021 (MassiveText, table A1),
C4's line and page rules from Raffel et al. 2020 (tfds `c4_utils`), FineWeb's extra rules from Penedo et al. 2024,
the language threshold of FineWeb's fastText step, and for code the Codex / The Stack / StarCoder file filters.
Fields are flat scalars, lists or dicts of scalars so the recipe loader can build this from YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The rule modules own their default word lists and n-gram tables; the registry gives the rule names. None of them
# imports this module at run time, so there is no import cycle.
from plasma_pipeline.clean.rules.c4 import C4_POLICY_SUBSTRINGS
from plasma_pipeline.clean.rules.code import CODE_AUTOGEN_MARKERS
from plasma_pipeline.clean.rules.gopher import (
    DEFAULT_DUP_NGRAM_CHAR_FRAC,
    DEFAULT_TOP_NGRAM_CHAR_FRAC,
    GOPHER_STOP_WORDS,
)
from plasma_pipeline.clean.rules.registry import RULE_NAMES, is_rule_name

PROFILES = ("prose", "code", "docs")
DOCS_FORMATS = ("auto", "markdown", "rst")
DOCS_CODE_BLOCKS = ("keep", "drop")

__all__ = [
    "C4_POLICY_SUBSTRINGS", "CODE_AUTOGEN_MARKERS", "DOCS_CODE_BLOCKS", "DOCS_FORMATS", "GOPHER_STOP_WORDS",
    "PROFILES", "CleanConfig",
]


def _default_top_ngrams() -> dict[int, float]:
    return dict(DEFAULT_TOP_NGRAM_CHAR_FRAC)


def _default_dup_ngrams() -> dict[int, float]:
    return dict(DEFAULT_DUP_NGRAM_CHAR_FRAC)


@dataclass
class CleanConfig:
    """Thresholds and switches for cleaning one source; every field has the published default."""

    # --- profile and input handling ---
    # "prose" (lang ID + Gopher + C4 + FineWeb), "code" (code rules only, lang="code", text kept as is but line
    # endings and one final newline) or "docs" (Markdown / reStructuredText turned into prose, then as prose)
    profile: str = "prose"
    html: bool | None = None  # True: strip HTML; False: never; None: auto per doc from meta/url (format html)
    fix_mojibake: bool = True  # repair UTF-8 read as cp1252 ("Ã©" -> "é") when the telltale pairs appear (not code)

    # --- language ID (fastText lid.176) ---
    languages: list[str] = field(default_factory=lambda: ["en"])  # allowed ISO codes; empty list = any language
    min_lang_score: float = 0.65  # minimum fastText probability of the top language (FineWeb / datatrove value)
    lid_chars: int = 2000  # characters of the document given to the language model

    # --- Gopher quality (MassiveText) ---
    min_words: int = 50  # minimum number of words (whitespace tokens with a non-punctuation character)
    max_words: int = 100_000  # maximum number of words
    min_mean_word_length: float = 3.0  # minimum mean word length in characters (punctuation excluded)
    max_mean_word_length: float = 10.0  # maximum mean word length in characters
    max_symbol_word_ratio: float = 0.1  # maximum ratio of "#" (or of "..."/"…") occurrences to words
    max_bullet_lines_ratio: float = 0.9  # maximum fraction of lines starting with a bullet
    max_ellipsis_lines_ratio: float = 0.3  # maximum fraction of lines ending with an ellipsis
    min_alpha_words_ratio: float = 0.8  # minimum fraction of words containing an alphabetic character
    min_stop_words: int = 2  # minimum number of distinct stop words present
    stop_words: list[str] = field(default_factory=lambda: list(GOPHER_STOP_WORDS))  # stop words (lowercase)

    # --- Gopher repetition (MassiveText table A1) ---
    max_dup_line_frac: float = 0.30  # maximum fraction of lines that duplicate an earlier line
    max_dup_para_frac: float = 0.30  # maximum fraction of paragraphs that duplicate an earlier paragraph
    max_dup_line_char_frac: float = 0.20  # maximum fraction of characters in duplicated lines
    max_dup_para_char_frac: float = 0.20  # maximum fraction of characters in duplicated paragraphs
    max_top_ngram_char_frac: dict[int, float] = field(default_factory=_default_top_ngrams)  # n -> max char fraction of the most frequent n-gram
    max_dup_ngram_char_frac: dict[int, float] = field(default_factory=_default_dup_ngrams)  # n -> max char fraction covered by repeated n-grams

    # --- C4 (line filters modify the text; page filters drop) ---
    c4_min_words_per_line: int = 3  # lines with fewer words are removed
    c4_max_word_length: int = 1000  # lines holding a longer word are removed
    c4_drop_no_terminal_punct: bool = True  # remove lines not ending in . ? ! " ' (or ending in "...")
    c4_remove_citations: bool = True  # strip wiki citation marks like [1], [edit], [citation needed]
    c4_drop_javascript_lines: bool = True  # remove lines mentioning "javascript"
    c4_drop_policy_lines: bool = True  # remove lines with cookie / terms-of-use / privacy-policy phrases
    c4_drop_lorem_ipsum: bool = True  # drop the page if a kept line says "lorem ipsum"
    c4_drop_curly_bracket: bool = True  # drop the page if a kept line holds "{"
    c4_min_sentences: int = 5  # drop the page if the kept lines hold fewer sentences
    # drop the document ("fragmented") if the C4 line rules would cut more than this share of its characters
    max_removed_char_frac: float = 0.5

    # --- FineWeb ---
    fw_min_line_punct_ratio: float = 0.12  # minimum fraction of lines ending in terminal punctuation
    fw_max_short_line_ratio: float = 0.67  # maximum fraction of short lines
    fw_short_line_chars: int = 30  # a line this long or shorter is "short"
    fw_max_char_dup_ratio: float = 0.01  # maximum fraction of characters in duplicated lines
    fw_max_newline_ratio: float = 0.3  # maximum ratio of newlines to words

    # --- code profile (Codex / The Stack / StarCoder) ---
    code_max_file_bytes: int = 1_000_000  # files larger than this (UTF-8 bytes) are dropped
    code_max_line_length: int = 1000  # files with a longer line are dropped
    code_max_mean_line_length: float = 100.0  # files with a longer mean line length are dropped
    code_min_alnum_frac: float = 0.25  # files with a lower fraction of alphanumeric characters are dropped
    code_autogen_markers: list[str] = field(default_factory=lambda: list(CODE_AUTOGEN_MARKERS))  # lowercase phrases marking generated files
    code_autogen_scan_lines: int = 5  # how many leading lines are searched for those markers
    code_autogen_scan_chars: int = 1024  # ... within this many leading characters

    # --- docs profile (Markdown / reStructuredText sources) ---
    docs_format: str = "auto"  # "markdown", "rst", or "auto": from meta format / file extension, else sniffed
    docs_code_blocks: str = "keep"  # "keep": code blocks stay verbatim, outside the prose rules; "drop": removed

    # --- switches ---
    rules_disabled: list[str] = field(default_factory=list)  # rule names (see rules.RULE_NAMES) not applied

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile: must be one of {PROFILES}, got {self.profile!r}")
        if self.html not in (True, False, None):
            raise ValueError(f"html: must be true, false or null (auto), got {self.html!r}")
        if not isinstance(self.languages, list) or not all(isinstance(x, str) and x for x in self.languages):
            raise ValueError(f"languages: must be a list of language codes, got {self.languages!r}")
        from plasma_pipeline.clean.langid import normalize_langs  # "fr-FR", "fr_fr" -> the lid.176 label "fr"

        try:
            self.languages = normalize_langs(self.languages)
        except ValueError as e:
            raise ValueError(f"languages: {e}") from None
        self._unit("min_lang_score")
        self._positive("lid_chars")
        self._non_negative("min_words", "max_words", "min_mean_word_length", "max_mean_word_length")
        self._non_negative("max_symbol_word_ratio", "min_stop_words")
        if self.max_words < self.min_words:
            raise ValueError(f"max_words: {self.max_words} is below min_words {self.min_words}")
        if self.max_mean_word_length < self.min_mean_word_length:
            raise ValueError(
                f"max_mean_word_length: {self.max_mean_word_length} is below min_mean_word_length "
                f"{self.min_mean_word_length}"
            )
        self._unit(
            "max_bullet_lines_ratio",
            "max_ellipsis_lines_ratio",
            "min_alpha_words_ratio",
            "max_dup_line_frac",
            "max_dup_para_frac",
            "max_dup_line_char_frac",
            "max_dup_para_char_frac",
            "fw_min_line_punct_ratio",
            "fw_max_short_line_ratio",
            "fw_max_char_dup_ratio",
            "code_min_alnum_frac",
        )
        if not isinstance(self.stop_words, list) or not all(isinstance(w, str) for w in self.stop_words):
            raise ValueError(f"stop_words: must be a list of strings, got {self.stop_words!r}")
        self.stop_words = [w.lower() for w in self.stop_words]
        self.max_top_ngram_char_frac = self._ngram_dict("max_top_ngram_char_frac")
        self.max_dup_ngram_char_frac = self._ngram_dict("max_dup_ngram_char_frac")
        self._non_negative("c4_min_words_per_line", "c4_min_sentences", "fw_short_line_chars", "fw_max_newline_ratio")
        self._positive("c4_max_word_length", "code_max_file_bytes", "code_max_line_length")
        self._positive("code_max_mean_line_length")
        self._non_negative("code_autogen_scan_lines", "code_autogen_scan_chars")
        self._unit("max_removed_char_frac")
        if self.docs_format not in DOCS_FORMATS:
            raise ValueError(f"docs_format: must be one of {DOCS_FORMATS}, got {self.docs_format!r}")
        if self.docs_code_blocks not in DOCS_CODE_BLOCKS:
            raise ValueError(f"docs_code_blocks: must be one of {DOCS_CODE_BLOCKS}, got {self.docs_code_blocks!r}")
        if not isinstance(self.code_autogen_markers, list) or not all(
            isinstance(m, str) and m for m in self.code_autogen_markers
        ):
            raise ValueError(f"code_autogen_markers: must be a list of non-empty strings, got {self.code_autogen_markers!r}")
        self.code_autogen_markers = [m.lower() for m in self.code_autogen_markers]
        if not isinstance(self.rules_disabled, list):
            raise ValueError(f"rules_disabled: must be a list of rule names, got {self.rules_disabled!r}")
        unknown = sorted(name for name in set(self.rules_disabled) if not is_rule_name(name))
        if unknown:
            raise ValueError(f"rules_disabled: unknown rule(s) {unknown}; known: {list(RULE_NAMES)}")

    # -- validation helpers --
    def _number(self, name: str) -> float:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: must be a number, got {value!r}")
        return value

    def _unit(self, *names: str) -> None:
        for name in names:
            if not 0.0 <= self._number(name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)!r}")

    def _non_negative(self, *names: str) -> None:
        for name in names:
            if self._number(name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")

    def _positive(self, *names: str) -> None:
        for name in names:
            if self._number(name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")

    def _ngram_dict(self, name: str) -> dict[int, float]:
        raw = getattr(self, name)
        if not isinstance(raw, dict):
            raise ValueError(f"{name}: must be a mapping n -> fraction, got {raw!r}")
        out: dict[int, float] = {}
        for key, value in raw.items():
            try:
                n = int(key)  # YAML/JSON may give "2" as a string key
            except (TypeError, ValueError):
                raise ValueError(f"{name}: key {key!r} is not an integer n-gram size") from None
            if n < 1 or isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name}: entry {key!r}: {value!r} must map n >= 1 to a fraction in [0, 1]")
            out[n] = float(value)
        return dict(sorted(out.items()))
