"""fastText plumbing shared by the quality and toxicity classifiers: text normalisation, deterministic sampling,
training, a per-process model cache and binary-classification metrics.

fastText is trained with `thread=1` and a fixed seed, which makes a model a pure function of its training file
and parameters. Training files are written in a sorted order (by a seeded hash of the document id) so the result
does not depend on the order in which upstream shards arrive.

Note on the binding: `fasttext-numpy2-wheel` 0.9.2 produces "Encountered NaN" during training on this machine
(nondeterministically, for any learning rate > 0); `fasttext-community` 0.11.9 trains correctly and
deterministically and predicts identically with the lid.176 model, so that is the binding this module expects.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

# Every character that is neither a word character, whitespace nor an apostrophe becomes its own token, so that
# "idiot!" and "idiot" share a feature. fastText itself only splits on whitespace.
_PUNCT = re.compile(r"([^\w\s'])")

_MODEL_CACHE: dict[tuple[str, int, int], object] = {}


def ft_text(text: str, max_chars: int) -> str:
    """Lower-case, one line, punctuation split off: the form every classifier sees, in training and scoring."""
    t = text[:max_chars].lower()
    t = _PUNCT.sub(r" \1 ", t)
    return " ".join(t.split())


def unit_hash(seed: int, key: str) -> float:
    """A seeded hash of `key` mapped to [0, 1): deterministic, independent of arrival order."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()).digest()
    return struct.unpack(">Q", h)[0] / 2**64


@dataclass(frozen=True)
class Example:
    key: str  # stable id (document id, or "<file>:<line>" for sentences)
    source: str  # where the text came from, for per-source metrics
    text: str  # raw text (normalised only when written for fastText)
    label: str  # class name without the __label__ prefix
    origin: str  # how the label was made (e.g. "curated_positive", "wordlist_term"), for metadata


class LowestHashSample:
    """Keep the `k` items with the lowest seeded hash: a uniform sample that is independent of arrival order."""

    def __init__(self, k: int, seed: int):
        self.k, self.seed = k, seed
        self._heap: list[tuple[float, str, object]] = []  # max-heap through negated hash
        self.seen = 0

    def offer(self, key: str, item: object) -> None:
        self.seen += 1
        h = unit_hash(self.seed, key)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-h, key, item))
        elif -self._heap[0][0] > h:
            heapq.heapreplace(self._heap, (-h, key, item))

    def items(self) -> list[object]:
        """The kept items, sorted by hash (a deterministic order)."""
        return [item for _, _, item in sorted(self._heap, key=lambda t: (-t[0], t[1]))]


def iter_docs(tables: Iterable[pa.Table], min_chars: int = 1) -> Iterator[tuple[str, str, str]]:
    """(id, source, text) of every row with at least `min_chars` characters of text."""
    for table in tables:
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        sources = table.column("source").to_pylist() if "source" in table.column_names else ["?"] * len(ids)
        for i, s, t in zip(ids, sources, texts):
            if t is not None and len(t.strip()) >= min_chars:
                yield str(i), str(s), t


def split_holdout(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split by a seeded hash of the key (salted apart from the sampling hash), so the split is stable."""
    train, hold = [], []
    for ex in examples:
        (hold if unit_hash(seed + 7919, ex.key) < fraction else train).append(ex)
    return train, hold


@dataclass(frozen=True)
class FastTextParams:
    epoch: int
    lr: float
    wordNgrams: int
    dim: int
    bucket: int
    minCount: int
    seed: int
    max_chars: int


def train_fasttext(examples: Sequence[Example], params: FastTextParams, work_dir: Path):
    """Train a supervised fastText model (thread=1: deterministic) on `examples`, in their given order."""
    import fasttext

    work_dir.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="train-", suffix=".txt", dir=work_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for ex in examples:
                line = ft_text(ex.text, params.max_chars)
                if line:
                    f.write(f"__label__{ex.label} {line}\n")
        return fasttext.train_supervised(
            input=path,
            epoch=params.epoch,
            lr=params.lr,
            wordNgrams=params.wordNgrams,
            dim=params.dim,
            bucket=params.bucket,
            minCount=params.minCount,
            seed=params.seed,
            thread=1,
            verbose=0,
        ), path
    except BaseException:
        os.unlink(path)
        raise


def load_model(path: str | Path):
    """Load a fastText model once per process; the key includes mtime and size so a rewritten file is reloaded."""
    import fasttext

    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    model = _MODEL_CACHE.get(key)
    if model is None:
        model = fasttext.load_model(str(p))
        _MODEL_CACHE[key] = model
    return model


def predict_proba(model, texts: Sequence[str], label: str, max_chars: int) -> np.ndarray:
    """P(label) for each raw text (normalised here exactly as in training); empty text scores 0.5 (no evidence)."""
    out = np.full(len(texts), 0.5, dtype=np.float64)
    lines = [ft_text(t or "", max_chars) for t in texts]
    idx = [i for i, line in enumerate(lines) if line]
    if not idx:
        return out
    labels, probs = model.predict([lines[i] for i in idx], k=-1)
    want = f"__label__{label}"
    for i, ls, ps in zip(idx, labels, probs):
        p = 0.0
        for lab, pr in zip(ls, ps):
            if lab == want:
                p = float(pr)
                break
        # fastText's softmax adds 1e-5 before normalising; clamp so scores are proper probabilities.
        out[i] = min(1.0, max(0.0, p))
    return out


def binary_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1, accuracy of the rule `p >= threshold` against boolean `y_true`."""
    pred = p >= threshold
    tp = int(np.sum(pred & y_true))
    fp = int(np.sum(pred & ~y_true))
    fn = int(np.sum(~pred & y_true))
    tn = int(np.sum(~pred & ~y_true))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "accuracy": round((tp + tn) / max(1, len(y_true)), 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def roc_auc(y_true: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN when one class is absent."""
    pos, neg = int(y_true.sum()), int((~y_true).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sp = p[order]
    i = 0
    while i < len(sp):
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return round(float((ranks[y_true].sum() - pos * (pos + 1) / 2) / (pos * neg)), 4)


def evaluate(y_true: np.ndarray, p: np.ndarray, sweep: Sequence[float]) -> dict:
    """Held-out report: metrics at 0.5, a threshold sweep, ROC AUC, class counts."""
    return {
        "n": int(len(y_true)),
        "n_positive": int(y_true.sum()),
        "at_0.5": binary_metrics(y_true, p, 0.5),
        "sweep": [binary_metrics(y_true, p, t) for t in sweep],
        "roc_auc": roc_auc(y_true, p),
    }


CLASSIFIER_INFO = "classifier.json"


def write_classifier_info(out_dir: Path, info: dict) -> None:
    """out_dir/classifier.json: which files scoring uses. Content only (no timings), so that a deterministic
    retrain yields a byte-identical asset folder and an unchanged data version."""
    import json

    (out_dir / CLASSIFIER_INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def read_classifier_info(model_dir: str | Path) -> dict:
    """The classifier.json of an asset folder; a folder without one (older layout) falls back to model.bin."""
    import json

    p = Path(model_dir) / CLASSIFIER_INFO
    if p.exists():
        return json.loads(p.read_text(encoding="utf-8"))
    if (Path(model_dir) / "model.bin").exists():
        return {"model_file": "model.bin"}
    raise FileNotFoundError(f"{model_dir}: neither {CLASSIFIER_INFO} nor model.bin found (not a classifier folder?)")


def save_model(model, out_dir: Path, train_file: str, quantize: bool, cutoff: int = 0) -> dict[str, str]:
    """Write model.bin, and model.ftz when asked (product-quantised; with a cutoff, the kept rows are retrained)."""
    files = {"bin": "model.bin"}
    model.save_model(str(out_dir / "model.bin"))
    if quantize:
        model.quantize(input=train_file, cutoff=cutoff, retrain=cutoff > 0, qnorm=True, thread=1)
        model.save_model(str(out_dir / "model.ftz"))
        files["ftz"] = "model.ftz"
    return files
