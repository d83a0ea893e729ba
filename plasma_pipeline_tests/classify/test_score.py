"""score_table on real documents: thresholds drop the right rows, one counter per reason, counters add up."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from plasma_pipeline.classify import (
    ScoreConfig,
    Wordlist,
    load_model,
    load_wordlist,
    predict_proba,
    score_shard,
    score_table,
)
from plasma_pipeline.classify.score import wordlist_signal
from plasma_pipeline.schema import SCORED_SCHEMA
from plasma_pipeline_tests.classify import corpora as C
from plasma_pipeline_tests.classify.conftest import TOX_FRESH_BUILDS


@pytest.fixture(scope="module")
def docs(toxicity_model) -> pa.Table:
    """Unseen wiki extracts, chatterbot dialogs, and nlp-corpus sentences with label terms (fresh builds)."""
    out, _, _ = toxicity_model
    wl = Wordlist.load(out / "wordlist.txt")
    toxic = [s for b in TOX_FRESH_BUILDS for s in C.nlp_sentences(b) if wl.find(s)][:60]
    # One document packed with four distinct label-term sentences: over the default wordlist_max_hits of 3.
    heavy = " ".join(toxic[:8])
    assert wl.count(heavy) >= 4
    dialogs = C.dialogs()
    return pa.concat_tables([
        C.wiki(5000, 80),
        dialogs.slice(0, 60),
        C.clean_table("nlp_toxic", [str(i) for i in range(len(toxic))], toxic),
        C.clean_table("heavy", ["0"], [heavy]),
    ])


def paths(quality_model, toxicity_model):
    (qo, qm, _), (to, tm, _) = quality_model, toxicity_model
    return qo / qm["model_file"], to / tm["model_file"], to / tm["wordlist_file"]


def test_scores_and_schema(docs, quality_model, toxicity_model):
    q, t, w = paths(quality_model, toxicity_model)
    stats = Counter()
    out = score_table(docs, q, t, w, ScoreConfig(enabled=False), stats)
    assert out.schema == SCORED_SCHEMA and out.num_rows == docs.num_rows
    assert stats["kept"] == docs.num_rows and stats["dropped/toxic"] == 0
    src = np.array(out.column("source").to_pylist())
    quality = out.column("quality").to_numpy()
    tox = out.column("toxicity").to_numpy()
    assert np.all((quality >= 0) & (quality <= 1)) and np.all((tox >= 0) & (tox <= 1))
    assert quality[src == "wiki_en"].mean() > 0.8 and quality[src == "dialogs"].mean() < 0.3
    assert tox[src == "wiki_en"].max() < 0.5
    assert np.median(tox[src == "nlp_toxic"]) >= 0.5  # each has >= 1 label term: the signal alone gives 0.5
    # toxicity = max(model P(toxic), 1 - 0.5 ** hits), and quality = model P(hq), exactly
    wl = load_wordlist(w)
    texts = out.column("text").to_pylist()
    hits = np.array([wl.count(x) for x in texts])
    p_tox = predict_proba(load_model(t), texts, "toxic", 4000)
    np.testing.assert_allclose(tox, np.maximum(p_tox, 1 - 0.5 ** hits), atol=1e-6)
    np.testing.assert_allclose(quality, predict_proba(load_model(q), texts, "hq", 4000), atol=1e-6)
    assert np.all(wordlist_signal(np.array([0, 1, 2])) == [0.0, 0.5, 0.75])
    assert (p_tox < 1 - 0.5 ** hits).sum() > 0  # the signal really raises some scores on this mix
    assert stats["wordlist_hits"] == hits.sum() and stats["docs_with_wordlist_hit"] == (hits > 0).sum()
    # the fail/* counters are counted even when dropping is off
    assert stats["fail/toxic"] == int((tox > 0.9).sum())


def test_thresholds_drop_the_right_docs(docs, quality_model, toxicity_model):
    q, t, w = paths(quality_model, toxicity_model)
    all_scored = score_table(docs, q, t, w, ScoreConfig(enabled=False), Counter())
    cfg = ScoreConfig(min_quality=0.5, max_toxicity=0.7, wordlist_max_hits=3)
    stats = Counter()
    kept = score_table(docs, q, t, w, cfg, stats)
    wl = load_wordlist(w)
    expected_reason = {}
    for row in all_scored.to_pylist():
        if wl.count(row["text"]) > 3:
            expected_reason[row["id"]] = "wordlist"
        elif row["toxicity"] > 0.7:
            expected_reason[row["id"]] = "toxic"
        elif row["quality"] < 0.5:
            expected_reason[row["id"]] = "low_quality"
    assert set(kept.column("id").to_pylist()) == set(all_scored.column("id").to_pylist()) - set(expected_reason)
    for reason in ("wordlist", "toxic", "low_quality"):
        assert stats[f"dropped/{reason}"] == sum(r == reason for r in expected_reason.values()), reason
        assert stats[f"dropped/{reason}"] > 0, reason  # every rule fires on this real mix
    assert expected_reason["heavy:0"] == "wordlist"
    assert stats["kept"] + sum(v for k, v in stats.items() if k.startswith("dropped/")) == docs.num_rows
    assert stats["scored"] == docs.num_rows
    # kept rows satisfy every threshold; no wiki extract is dropped as toxic
    assert min(kept.column("quality").to_pylist()) >= 0.5 and max(kept.column("toxicity").to_pylist()) <= 0.7
    assert not [i for i, r in expected_reason.items() if i.startswith("wiki_en") and r != "low_quality"]
    assert sum(i.startswith("wiki_en") for i in kept.column("id").to_pylist()) >= 76  # >= 95% of 80


def test_score_shard_reads_the_asset_folders(docs, quality_model, toxicity_model):
    """The lead's map_shards entry point: model files found through each folder's classifier.json."""
    q, t, w = paths(quality_model, toxicity_model)
    cfg = ScoreConfig(min_quality=0.5, max_toxicity=0.7)
    s1, s2 = Counter(), Counter()
    a = score_table(docs, q, t, w, cfg, s1)
    b = pickle.loads(pickle.dumps(score_shard))(docs, str(quality_model[0]), str(toxicity_model[0]), cfg, s2)
    assert a.equals(b) and s1 == s2


def test_wordlist_rule_can_be_disabled(docs, quality_model, toxicity_model):
    q, t, w = paths(quality_model, toxicity_model)
    stats = Counter()
    score_table(docs, q, t, w, ScoreConfig(max_toxicity=1.0, wordlist_max_hits=-1), stats)
    assert stats["dropped/wordlist"] == 0 and stats["dropped/toxic"] == 0 and stats["dropped/low_quality"] == 0
    assert stats["kept"] == docs.num_rows
    stats = Counter()
    score_table(docs, q, t, None, ScoreConfig(max_toxicity=1.0, wordlist_max_hits=0), stats)
    assert stats["wordlist_hits"] == 0 and stats["dropped/wordlist"] == 0  # no list given: nothing to count


def test_models_cached_per_process_and_wordlist_picklable(quality_model, toxicity_model):
    q, _, w = paths(quality_model, toxicity_model)
    assert load_model(q) is load_model(q)
    assert load_wordlist(w) is load_wordlist(w)
    wl = load_wordlist(w)
    assert pickle.loads(pickle.dumps(wl)) == wl


def test_empty_table(quality_model, toxicity_model):
    q, t, w = paths(quality_model, toxicity_model)
    stats = Counter()
    out = score_table(C.clean_table("x", [], []), q, t, w, ScoreConfig(), stats)
    assert out.num_rows == 0 and out.schema == SCORED_SCHEMA and stats["kept"] == 0


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(min_quality=1.5), "min_quality"),
        (dict(max_toxicity=-0.1), "max_toxicity"),
        (dict(wordlist_max_hits=-2), "wordlist_max_hits"),
        (dict(enabled="yes"), "enabled"),
        (dict(max_chars=0), "max_chars"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ScoreConfig(**kw)
