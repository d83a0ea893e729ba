"""The spilling dedup gives exactly the results of the in-memory one it replaced.

`equality_fixture.json` was captured at commit 22d5e94 (the dedup that gathered every signature in the parent,
kept ids as Arrow strings and ran union-find as a Python loop) by `snapshot()` on `corpora.equality_corpus()`
under each of `corpora.EQUALITY_CONFIGS`: the dropped rows of every shard, every cluster (global doc indices,
keeper first), the counters and the cluster metadata. Regenerate it only when the results are meant to change:
`.venv/bin/python -m plasma_pipeline_tests.dedup.test_equality --capture`."""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from plasma_pipeline.dedup import DedupConfig, budget, dedup_tables
from plasma_pipeline_tests.dedup.corpora import EQUALITY_CONFIGS, equality_corpus

FIXTURE = Path(__file__).with_name("equality_fixture.json")
META = ("docs", "kept", "dup_rate", "dup_rate_per_source", "cluster_size_histogram", "largest_cluster",
        "exact_duplicates", "candidate_pairs", "confirmed_pairs", "rejected_by_confirm")


def snapshot(shards, kw: dict) -> dict:
    stats: Counter = Counter()
    res = dedup_tables(shards, DedupConfig(**kw), stats)
    cluster = res.cluster
    order = np.argsort(cluster, kind="stable")
    clusters = []
    for grp in np.split(order, np.flatnonzero(np.diff(cluster[order])) + 1):
        if len(grp) >= 2:
            k = int(cluster[grp[0]])
            clusters.append([k] + sorted(int(i) for i in grp if i != k))
    return {
        "config": {k: v for k, v in kw.items() if k not in ("processes", "memory_gb")},
        "stats": dict(sorted(stats.items())),
        "metadata": {k: res.metadata[k] for k in META},
        "dropped_rows_per_shard": [np.flatnonzero(~res.keep_mask(i)).tolist() for i in range(len(shards))],
        "clusters": clusters,
        "_memory_plan": res.metadata["memory_plan"],
    }


@pytest.fixture(scope="module")
def corpus():
    return equality_corpus()


@pytest.fixture(scope="module")
def expected():
    return json.loads(FIXTURE.read_text())


def assert_same(got: dict, exp: dict) -> None:
    assert got["stats"] == exp["stats"]
    assert got["metadata"] == exp["metadata"]
    assert got["dropped_rows_per_shard"] == exp["dropped_rows_per_shard"]
    assert got["clusters"] == exp["clusters"]


def test_corpus_is_the_captured_one(corpus, expected):
    assert [t.num_rows for t in corpus] == expected["docs_per_shard"]
    assert set(expected["results"]) == set(EQUALITY_CONFIGS)


@pytest.mark.parametrize("name", list(EQUALITY_CONFIGS))
def test_same_results_as_the_in_memory_dedup(corpus, expected, name):
    got = snapshot(corpus, EQUALITY_CONFIGS[name])
    assert_same(got, expected["results"][name])
    plan = got["_memory_plan"]
    assert plan["exact_partitions"] == plan["band_partitions"] == plan["pair_partitions"] == 1


@pytest.mark.parametrize("name", list(EQUALITY_CONFIGS))
def test_same_results_when_every_pass_is_partitioned(corpus, expected, name, monkeypatch):
    """A budget far below the corpus: exact keys, every band and the candidate pairs are split into many ranges,
    and confirmation runs in batches of a few pairs; the results do not change."""
    monkeypatch.setattr(budget, "MIN_WORK_BYTES", 1 << 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the budget is below the interpreter's own size
        got = snapshot(corpus, {**EQUALITY_CONFIGS[name], "memory_gb": 0.01})
    assert_same(got, expected["results"][name])
    plan = got["_memory_plan"]
    assert plan["over_budget"] and plan["signature_workers"] == 1
    assert plan["exact_partitions"] >= 32 and plan["band_partitions"] >= 32 and plan["pair_partitions"] >= 32
    assert plan["band_peak_bytes"] <= 16 << 10 and plan["jaccard_batch"] < 100


def test_same_results_with_spawned_shard_workers(corpus, expected, monkeypatch):
    from plasma_pipeline.dedup import core

    monkeypatch.setattr(core, "MIN_BYTES_PER_WORKER", 1)  # the corpus is small enough to run inline otherwise
    monkeypatch.setattr(core, "MIN_DOCS_PER_WORKER", 1)
    got = snapshot(corpus, {**EQUALITY_CONFIGS["default"], "processes": 2})
    assert_same(got, expected["results"]["default"])
    assert got["_memory_plan"]["signature_workers"] == got["_memory_plan"]["shingle_workers"] == 2


def _capture() -> None:
    shards = equality_corpus()
    results = {}
    for name, kw in EQUALITY_CONFIGS.items():
        snap = snapshot(shards, kw)
        snap.pop("_memory_plan")
        results[name] = snap
    FIXTURE.write_text(json.dumps({"docs_per_shard": [t.num_rows for t in shards], "results": results},
                                  separators=(",", ":")))
    print(f"wrote {FIXTURE}")


if __name__ == "__main__" and "--capture" in sys.argv:
    _capture()
