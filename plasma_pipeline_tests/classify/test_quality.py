"""Quality classifier on real text: curated (wiki, recipes) versus informal (chatterbot dialogs, nlp-corpus)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from plasma_pipeline.classify import QualityClassifierConfig, load_model, predict_proba, train_quality_classifier
from plasma_pipeline_tests.classify import corpora as C
from plasma_pipeline_tests.classify.conftest import quality_config, quality_inputs


def test_separates_held_out_sets(quality_model):
    _, meta, _ = quality_model
    at = meta["held_out"]["at_0.5"]
    # Measured with seed 0: precision 0.76-0.80, recall 0.99, AUC 0.95. Precision is capped by nlp-corpus, whose
    # pseudo-docs include UN and encyclopedic sentences that legitimately look curated (label noise, see below).
    assert at["recall"] >= 0.93, at
    assert at["precision"] >= 0.70, at
    assert meta["held_out"]["roc_auc"] >= 0.92
    per = meta["held_out"]["per_source_accuracy"]
    assert per["wiki_en"]["accuracy"] >= 0.95 and per["recipes_en"]["accuracy"] >= 0.9, per
    assert per["dialogs"]["accuracy"] >= 0.9, per
    assert per["nlp_corpus"]["mean_p_hq"] > per["dialogs"]["mean_p_hq"], per
    # The sweep is monotone: a higher threshold never raises recall.
    recalls = [s["recall"] for s in meta["held_out"]["sweep"]]
    assert recalls == sorted(recalls, reverse=True)


def test_unseen_documents(quality_model):
    out, meta, _ = quality_model
    model = load_model(out / meta["model_file"])
    wiki_fresh = C.wiki(3000, 150).column("text").to_pylist()
    p = predict_proba(model, wiki_fresh, "hq", 4000)
    assert np.mean(p >= 0.5) >= 0.95, np.mean(p >= 0.5)
    chat = ["hey whats up lol", "I dunno, maybe later? ttyl", "Do you like pizza? Yes I love it so much"]
    assert predict_proba(model, chat, "hq", 4000).max() < 0.5


def test_files_counts_and_metadata(quality_model):
    out, meta, stats = quality_model
    assert (out / "model.bin").stat().st_size > 0
    assert meta["model_file"] == "model.bin" and meta["files"] == ["classifier.json", "model.bin"]
    assert sorted(p.name for p in out.iterdir()) == meta["files"]  # nothing else left in the asset folder
    assert json.loads((out / "classifier.json").read_text())["model_file"] == "model.bin"
    assert not list(out.glob("train-*.txt")), "the training file must be removed"
    c = meta["counts"]
    assert sum(c["positive_sampled_by_source"].values()) == 600  # 750 seen, capped at max_docs_per_class
    assert c["positive_docs_seen"] == 750
    assert sum(c["negative_sampled_by_source"].values()) == 600
    assert c["train"]["positive"] + c["holdout"]["positive"] == 600
    assert 0.1 < c["holdout"]["positive"] / 600 < 0.3  # holdout_fraction 0.2
    assert stats["train/positive"] == c["train"]["positive"]
    assert stats["holdout/docs"] == meta["held_out"]["n"]
    assert "provenance" in meta["label_construction"] and "wiki_en" in meta["label_construction"]


def test_deterministic_and_order_independent(tmp_path):
    cfg = quality_config(max_docs_per_class=200, epoch=5)
    probe = C.wiki(4000, 30).column("text").to_pylist() + C.dialogs().column("text").to_pylist()[:30]
    preds, metas = [], []
    for i, reverse in enumerate((False, False, True)):
        pos, neg = quality_inputs()
        if reverse:
            pos, neg = pos[::-1], neg[::-1]
        out = tmp_path / f"m{i}"
        metas.append(train_quality_classifier(pos, neg, cfg, out, Counter()))
        preds.append(predict_proba(load_model(out / "model.bin"), probe, "hq", 4000))
    assert np.array_equal(preds[0], preds[1])
    assert np.array_equal(preds[0], preds[2])  # shard order does not matter
    # Byte-identical files, so a rerun leaves the asset's data version (a hash of its files) unchanged.
    for name in ("model.bin", "classifier.json"):
        assert (tmp_path / "m0" / name).read_bytes() == (tmp_path / "m2" / name).read_bytes(), name
    assert metas[0]["held_out"] == metas[2]["held_out"]
    pos, neg = quality_inputs()
    other = train_quality_classifier(pos, neg, quality_config(max_docs_per_class=200, epoch=5, seed=1),
                                     tmp_path / "seed1", Counter())
    assert other["counts"]["positive_sampled_by_source"] != metas[0]["counts"]["positive_sampled_by_source"]


def test_shuffled_negatives_are_labelled_and_counted(tmp_path):
    pos, neg = quality_inputs()
    meta = train_quality_classifier(pos, neg, quality_config(max_docs_per_class=200, epoch=5,
                                                             shuffled_negative_fraction=0.5), tmp_path, Counter())
    c = meta["counts"]
    assert c["train"]["shuffled_negative"] == round(0.5 * c["train"]["negative"])
    assert c["holdout"]["shuffled_negative"] == round(0.5 * c["holdout"]["negative"])
    assert "synthetic" in meta["label_construction"]
    assert "shuffled_positive" in meta["held_out"]["per_source_accuracy"]


def test_needs_both_classes(tmp_path):
    pos, _ = quality_inputs()
    with pytest.raises(ValueError, match="both classes"):
        train_quality_classifier(pos, [], quality_config(), tmp_path, Counter())


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(positive_sources=["a"], negative_sources=["a"]), "positive_sources/negative_sources"),
        (dict(holdout_fraction=0.0), "holdout_fraction"),
        (dict(dim=31, quantize=True), "dim"),
        (dict(wordNgrams=0), "wordNgrams"),
        (dict(max_docs_per_class=0), "max_docs_per_class"),
        (dict(shuffled_negative_fraction=2.0), "shuffled_negative_fraction"),
        (dict(positive_sources="wiki"), "positive_sources"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field.replace("/", ".")):
        QualityClassifierConfig(**kw)
