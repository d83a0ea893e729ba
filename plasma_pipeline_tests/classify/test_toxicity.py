"""Toxicity classifier on real text: word-list-labelled nlp-corpus sentences versus clean wiki/recipe sentences."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from plasma_pipeline.classify import ToxicityClassifierConfig, Wordlist, load_model, predict_proba
from plasma_pipeline.classify import train_toxicity_classifier
from plasma_pipeline.classify.fasttext_model import roc_auc
from plasma_pipeline.classify.toxicity import split_sentences
from plasma_pipeline_tests.classify import corpora as C
from plasma_pipeline_tests.classify.conftest import TOX_FRESH_BUILDS, toxicity_config


def fresh_sentences(label_wl: Wordlist) -> tuple[list[str], list[str]]:
    """Sentences the model never saw: nlp-corpus builds 50-89 with a label term, and unseen wiki sentences."""
    toxic = [s for b in TOX_FRESH_BUILDS for s in C.nlp_sentences(b) if label_wl.find(s)]
    clean = [s for t in C.wiki(3000, 150).column("text").to_pylist() for s in split_sentences(t)
             if len(s.split()) >= 3]
    return toxic, clean


def test_flags_offensive_sentences_over_clean_ones(toxicity_model):
    out, meta, _ = toxicity_model
    model = load_model(out / meta["model_file"])
    label_wl = Wordlist.load(out / "wordlist.txt")
    toxic, clean = fresh_sentences(label_wl)
    assert len(toxic) > 80 and len(clean) > 300
    pt = predict_proba(model, toxic, "toxic", 1000)
    pc = predict_proba(model, clean, "toxic", 1000)
    # Measured with seed 0: ~75% of fresh offensive sentences flagged, <1% of fresh wiki sentences.
    assert np.mean(pt >= 0.5) >= 0.6, np.mean(pt >= 0.5)
    assert np.mean(pc >= 0.5) <= 0.02, np.mean(pc >= 0.5)
    y = np.array([True] * len(pt) + [False] * len(pc))
    assert roc_auc(y, np.concatenate([pt, pc])) >= 0.95


def test_held_out_precision_recall(toxicity_model):
    _, meta, _ = toxicity_model
    at = meta["held_out"]["at_0.5"]
    assert at["precision"] >= 0.85 and at["recall"] >= 0.6, at
    assert meta["held_out"]["roc_auc"] >= 0.93
    by = meta["held_out"]["by_origin"]
    assert by["clean_source"]["flagged_at_0.5"] <= 0.02
    assert by["offensive_corpus_no_hit"]["flagged_at_0.5"] <= 0.1  # hard negatives from the same informal mix
    th = meta["term_holdout"]
    assert th["hidden_terms"] > 0 and th["train_sentences_removed"] > 0
    assert th["n_unseen_term_toxic"] > 0 and th["recall_unseen_term_toxic"] is not None
    # Unseen terms are much harder than seen ones: the honest measure of how circular the labels are.
    assert th["recall_unseen_term_toxic"] < th["recall_seen_term_toxic"]
    assert th["false_positive_rate_clean"] <= 0.05


def test_labels_and_wordlist_are_documented(toxicity_model):
    out, meta, stats = toxicity_model
    assert (out / "model.bin").stat().st_size > 0
    assert meta["files"] == ["classifier.json", "model.bin", "wordlist.txt"]
    assert sorted(p.name for p in out.iterdir()) == meta["files"]
    wl = Wordlist.load(out / "wordlist.txt")
    info = meta["wordlists"]
    # better-profanity's 916 entries and LDNOOBW's 403 share 159 terms; 32 clinical/ambiguous ones are excluded.
    assert info["rule_terms"] == 159 and len(info["excluded"]) == 32 and info["label_terms"] == len(wl) == 127
    assert "fuck" in wl and "sex" not in wl and "god" not in wl and "class" not in wl
    assert meta["clean_docs_by_source"] == {"wiki_en": 500, "recipes_en": 250}
    assert "['recipes_en', 'wiki_en']" in meta["label_construction"]
    assert "circular" in meta["circularity"] and "word list" in meta["label_construction"]
    c = meta["counts"]
    assert set(c["sampled_by_origin"]) <= {"offensive_corpus_term", "clean_source_term", "clean_source",
                                           "offensive_corpus_no_hit", "offensive_corpus_broad_only"}
    assert c["sampled"]["toxic"] == c["train"]["toxic"] + c["holdout"]["toxic"]
    assert c["sampled"]["clean_curated"] == 1250  # curated_clean_share 0.5 of 2500
    assert stats["train/toxic"] == c["train"]["toxic"]
    # Every toxic training sentence really holds a label term, and no clean one does.
    assert c["sentences_by_origin"]["offensive_corpus_term"] >= c["sampled_by_origin"]["offensive_corpus_term"]
    json.dumps(meta)  # metadata must be JSON-serialisable for Dagster


def test_label_rule_is_exact():
    """Labels are a pure function of the word list: check it on real sentences with a small config."""
    cfg = toxicity_config(offensive_corpus_glob=str(C.NLP_CORPUS / "doc-95.json"))
    from plasma_pipeline.classify import build_wordlists

    label_wl, union_wl, _ = build_wordlists(cfg)
    sents = C.nlp_sentences(95)
    toxic = [s for s in sents if label_wl.find(s)]
    broad_only = [s for s in sents if union_wl.find(s) and not label_wl.find(s)]
    assert 5 < len(toxic) < 100 and broad_only  # a real build: a few percent are profane
    assert all(union_wl.find(s) for s in toxic)  # label terms are a subset of the union


def test_deterministic(tmp_path):
    cfg = toxicity_config(offensive_corpus_glob=str(C.NLP_CORPUS / "doc-1[0-4].json"), max_sentences_per_class=800,
                          epoch=5, term_holdout_fraction=0.0)
    probe = C.nlp_sentences(99)[:200]
    preds = []
    for i in range(2):
        meta = train_toxicity_classifier([C.wiki(0, 100)], cfg, tmp_path / str(i), Counter())
        assert meta["term_holdout"] is None
        preds.append(predict_proba(load_model(tmp_path / str(i) / "model.bin"), probe, "toxic", 1000))
    assert np.array_equal(preds[0], preds[1])


def test_missing_corpus_fails_clearly(tmp_path):
    cfg = toxicity_config(offensive_corpus_glob=str(tmp_path / "nope-*.json"))
    with pytest.raises(FileNotFoundError, match="offensive_corpus_glob"):
        train_toxicity_classifier([], cfg, tmp_path / "m", Counter())


def test_missing_wordlist_fails_clearly(tmp_path):
    cfg = toxicity_config(wordlists=[str(tmp_path / "none.txt")])
    with pytest.raises(FileNotFoundError, match="none.txt"):
        train_toxicity_classifier([], cfg, tmp_path / "m", Counter())


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(label_terms_rule="any"), "label_terms_rule"),
        (dict(wordlists=[]), "wordlists"),
        (dict(curated_clean_share=1.5), "curated_clean_share"),
        (dict(term_holdout_fraction=1.0), "term_holdout_fraction"),
        (dict(max_sentences_per_class=0), "max_sentences_per_class"),
        (dict(lr=0), "lr"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ToxicityClassifierConfig(**kw)
