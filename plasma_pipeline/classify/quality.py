"""Stage 3a: a DCLM-style quality classifier, a supervised fastText model of "curated" (hq) versus "web-like" (lq) text.

Labels are by provenance only: every document of a `positive_sources` table is hq, every document of a
`negative_sources` table is lq. DCLM uses OpenHermes/ELI5 against RefinedWeb; offline there is no web crawl, so the
default recipe's negatives are informal text (chatterbot dialogs, nlp-corpus sentences): the model then learns
"encyclopedic / instructional register versus chat, forum, review and lyric register", which is what the
metadata says. Optionally, word-shuffled copies of positive documents are added as extra negatives
(`shuffled_negative_fraction`): they teach the model that the vocabulary of good text is not enough, and they are
labelled and counted separately so nobody mistakes them for real data.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from plasma_pipeline.classify.fasttext_model import (
    Example,
    FastTextParams,
    LowestHashSample,
    evaluate,
    iter_docs,
    predict_proba,
    save_model,
    split_holdout,
    train_fasttext,
    write_classifier_info,
)

QUALITY_POSITIVE, QUALITY_NEGATIVE = "hq", "lq"
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class QualityClassifierConfig:
    positive_sources: list[str] = field(default_factory=list)  # recipe sources whose clean docs are "hq"
    negative_sources: list[str] = field(default_factory=list)  # recipe sources whose clean docs are "lq" (web-like)
    max_docs_per_class: int = 5000  # per class, a seeded order-independent sample of this many docs
    min_chars: int = 20  # docs shorter than this are not used for training
    max_chars: int = 4000  # characters of each doc the model sees (training and scoring)
    holdout_fraction: float = 0.2  # share of sampled docs held out for precision/recall
    shuffled_negative_fraction: float = 0.0  # extra negatives: word-shuffled positives, as a share of real negatives
    epoch: int = 10  # fastText epochs
    lr: float = 0.1  # fastText learning rate
    wordNgrams: int = 2  # fastText word n-gram length
    dim: int = 32  # fastText embedding size (even, so the model can be quantised)
    bucket: int = 200000  # fastText hash buckets for n-grams (model size ~ bucket * dim * 4 bytes)
    minCount: int = 1  # fastText minimum word count
    quantize: bool = False  # also write model.ftz (product-quantised; ~20 s with the cutoff, ~70 s without)
    quantize_cutoff: int = 20000  # rows (words + n-grams) kept when quantising, then retrained; 0 keeps all
    seed: int = 0  # sampling, hold-out split, shuffling and fastText seed

    def __post_init__(self):
        for name in ("positive_sources", "negative_sources"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise ValueError(f"{name}: expected a list of source names, got {v!r}")
        both = set(self.positive_sources) & set(self.negative_sources)
        if both:
            raise ValueError(f"positive_sources/negative_sources: {sorted(both)} listed as both")
        check_fasttext_fields(self)
        if not 0.0 <= self.shuffled_negative_fraction <= 1.0:
            raise ValueError(f"shuffled_negative_fraction: must be in [0, 1], got {self.shuffled_negative_fraction}")

    def params(self) -> FastTextParams:
        return FastTextParams(self.epoch, self.lr, self.wordNgrams, self.dim, self.bucket, self.minCount, self.seed,
                              self.max_chars)


def check_fasttext_fields(cfg) -> None:
    """Validation shared by both classifier configs."""
    for name in ("max_docs_per_class", "max_sentences_per_class", "epoch", "dim", "minCount", "max_chars"):
        v = getattr(cfg, name, None)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")
    if not 0.0 < cfg.holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction: must be in (0, 1), got {cfg.holdout_fraction}")
    if not cfg.lr > 0:
        raise ValueError(f"lr: must be > 0, got {cfg.lr}")
    if not isinstance(cfg.wordNgrams, int) or not 1 <= cfg.wordNgrams <= 5:
        raise ValueError(f"wordNgrams: must be an integer in 1..5, got {cfg.wordNgrams!r}")
    if cfg.quantize and cfg.dim % 2:
        raise ValueError(f"dim: must be even when quantize is on (product quantisation uses dsub=2), got {cfg.dim}")
    if not isinstance(cfg.quantize_cutoff, int) or cfg.quantize_cutoff < 0:
        raise ValueError(f"quantize_cutoff: must be a non-negative integer, got {cfg.quantize_cutoff!r}")
    if not isinstance(cfg.bucket, int) or cfg.bucket < 0:
        raise ValueError(f"bucket: must be a non-negative integer, got {cfg.bucket!r}")


def _sample(tables: Iterable[pa.Table], label: str, origin: str, cfg: QualityClassifierConfig, stats: Counter,
            key: str) -> tuple[list[Example], int]:
    sample = LowestHashSample(cfg.max_docs_per_class, cfg.seed)
    for doc_id, source, text in iter_docs(tables):
        if len(text.strip()) < cfg.min_chars:
            stats[f"skipped/{key}_too_short"] += 1
            continue
        sample.offer(f"{source}/{doc_id}", Example(f"{source}/{doc_id}", source, text, label, origin))
    return sample.items(), sample.seen


def _shuffled(examples: list[Example], n: int, seed: int) -> list[Example]:
    """`n` word-shuffled copies of `examples` (cycled), labelled lq with origin 'shuffled_positive'."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ex = examples[i % len(examples)]
        words = ex.text.split()
        rng.shuffle(words)
        out.append(Example(f"shuffled/{i}/{ex.key}", "shuffled_positive", " ".join(words), QUALITY_NEGATIVE,
                           "shuffled_positive"))
    return out


def train_quality_classifier(positives: Iterable[pa.Table], negatives: Iterable[pa.Table],
                             cfg: QualityClassifierConfig, out_dir: Path, stats: Counter) -> dict:
    """Train hq-vs-lq fastText on clean tables; write out_dir/model.bin (+ model.ftz); return metadata.

    The metadata holds how labels were made, per-source counts, held-out precision/recall/F1 at 0.5, a threshold
    sweep and ROC AUC, and which model file scoring should use (`model_file`).
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pos, pos_seen = _sample(positives, QUALITY_POSITIVE, "positive_source", cfg, stats, "positive")
    neg, neg_seen = _sample(negatives, QUALITY_NEGATIVE, "negative_source", cfg, stats, "negative")
    if not pos or not neg:
        raise ValueError(f"quality classifier needs documents of both classes (got {len(pos)} positive, "
                         f"{len(neg)} negative of at least {cfg.min_chars} chars)")
    pos_train, pos_hold = split_holdout(pos, cfg.holdout_fraction, cfg.seed)
    neg_train, neg_hold = split_holdout(neg, cfg.holdout_fraction, cfg.seed)
    n_shuf_train = round(cfg.shuffled_negative_fraction * len(neg_train))
    n_shuf_hold = round(cfg.shuffled_negative_fraction * len(neg_hold))
    # Shuffled copies come from the same split as the document they scramble, so nothing leaks across the split.
    shuf_train = _shuffled(pos_train, n_shuf_train, cfg.seed) if n_shuf_train and pos_train else []
    shuf_hold = _shuffled(pos_hold, n_shuf_hold, cfg.seed + 1) if n_shuf_hold and pos_hold else []
    train = pos_train + neg_train + shuf_train
    hold = pos_hold + neg_hold + shuf_hold
    # A fixed interleaving (seeded shuffle) so SGD does not see one class after the other.
    random.Random(cfg.seed).shuffle(train)

    model, train_file = train_fasttext(train, cfg.params(), out_dir)
    try:
        y = np.array([ex.label == QUALITY_POSITIVE for ex in hold])
        texts = [ex.text for ex in hold]
        p = predict_proba(model, texts, QUALITY_POSITIVE, cfg.max_chars)
        held_out = evaluate(y, p, SWEEP)
        held_out["per_source_accuracy"] = _per_source_accuracy(hold, p)
        files = save_model(model, out_dir, train_file, cfg.quantize, cfg.quantize_cutoff)
        model_file, held_out_ftz = "model.bin", None
        if "ftz" in files:
            p_q = predict_proba(model, texts, QUALITY_POSITIVE, cfg.max_chars)  # `model` is quantised now
            held_out_ftz = evaluate(y, p_q, (0.5,))
            # Use the small file unless quantisation visibly hurts.
            if held_out_ftz["at_0.5"]["f1"] >= held_out["at_0.5"]["f1"] - 0.01:
                model_file = "model.ftz"
    finally:
        Path(train_file).unlink(missing_ok=True)

    write_classifier_info(out_dir, {"model_file": model_file, "label": QUALITY_POSITIVE, "max_chars": cfg.max_chars})
    stats["train/positive"] += len(pos_train)
    stats["train/negative"] += len(neg_train)
    stats["train/shuffled_negative"] += len(shuf_train)
    stats["holdout/docs"] += len(hold)
    return {
        "model_file": model_file,
        "files": sorted([*files.values(), "classifier.json"]),
        "labels": {"positive": f"__label__{QUALITY_POSITIVE}", "negative": f"__label__{QUALITY_NEGATIVE}"},
        "label_construction": _label_text(cfg),
        "positive_sources": cfg.positive_sources,
        "negative_sources": cfg.negative_sources,
        "counts": {
            "positive_docs_seen": pos_seen,
            "negative_docs_seen": neg_seen,
            "positive_sampled_by_source": dict(Counter(ex.source for ex in pos)),
            "negative_sampled_by_source": dict(Counter(ex.source for ex in neg)),
            "train": {"positive": len(pos_train), "negative": len(neg_train), "shuffled_negative": len(shuf_train)},
            "holdout": {"positive": len(pos_hold), "negative": len(neg_hold), "shuffled_negative": len(shuf_hold)},
        },
        "held_out": held_out,
        "held_out_quantized": held_out_ftz,
        "fasttext": {k: getattr(cfg, k) for k in ("epoch", "lr", "wordNgrams", "dim", "bucket", "minCount", "seed")}
        | {"thread": 1, "max_chars": cfg.max_chars},
        "train_seconds": round(time.time() - t0, 2),
    }


def _per_source_accuracy(hold: list[Example], p: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for src in sorted({ex.source for ex in hold}):
        idx = [i for i, ex in enumerate(hold) if ex.source == src]
        correct = sum((p[i] >= 0.5) == (hold[i].label == QUALITY_POSITIVE) for i in idx)
        out[src] = {"n": len(idx), "accuracy": round(float(correct) / len(idx), 4),
                    "mean_p_hq": round(float(p[idx].mean()), 4)}
    return out


def _label_text(cfg: QualityClassifierConfig) -> str:
    text = (
        "Labels by provenance, not by human rating: every clean document of "
        f"{cfg.positive_sources} is __label__hq (curated), every clean document of {cfg.negative_sources} is "
        "__label__lq (stand-in for web text). Up to max_docs_per_class documents per class are kept, chosen by the "
        "lowest seeded hash of source/id (uniform, independent of shard order); holdout_fraction of them, chosen by "
        "another seeded hash, are held out. The held-out scores therefore measure how well the model separates "
        "these sources, not agreement with human quality judgements; with no web crawl offline, 'lq' means "
        "informal/conversational register rather than spam or boilerplate."
    )
    if cfg.shuffled_negative_fraction > 0:
        text += (
            f" In addition, word-shuffled copies of positive documents (shuffled_negative_fraction="
            f"{cfg.shuffled_negative_fraction} of the real negatives, made from each split's own positives) are "
            "labelled __label__lq; they are synthetic and counted apart as 'shuffled_negative'."
        )
    return text
