"""The dedup's second pass runs in the shard workers: they write, compress and hash the survivors' shards, and
the parent only adopts them. The version holds the rows a parent-side pass keeps (the dedup's keep mask, then the
eval hold-out), in the same order and with the same counters and hold-out summary, and 1 or 2 workers publish
the same version."""

from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.dedup import DedupConfig
from plasma_pipeline.dedup.core import dedup_tables
from plasma_pipeline.dedup.survivors import adopt_survivors, write_survivors
from plasma_pipeline.instruct import InstructionsConfig
from plasma_pipeline.instruct.holdout import Holdout, battery_items
from plasma_pipeline.shards import ShardStore, StoreConfig, read_shard
from plasma_pipeline_tests.mix.test_eval_holdout import planted
from plasma_pipeline_tests.tokenizer.corpora import ROOT

IN_ROWS, MAX_ROWS = 120, 50  # input shards bigger than the store's max_rows_per_shard: the workers split them


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Input shards per source with the battery planted and exact copies across shards, the dedup's result."""
    items = battery_items(InstructionsConfig(sources_root=str(ROOT)))
    tables = planted(items)
    wiki = tables["wiki"]
    copies = wiki.slice(0, 30).set_column(0, "id", pa.array([f"wiki:copy{i}" for i in range(30)]))
    tables["wiki"] = pa.concat_tables([wiki, copies])
    root = tmp_path_factory.mktemp("survivors-in")
    owned = []
    for source, t in tables.items():
        for k, lo in enumerate(range(0, t.num_rows, IN_ROWS)):
            path = root / f"{source}-{k}.parquet"
            pq.write_table(t.slice(lo, IN_ROWS), path)
            owned.append((source, str(path)))
    dedup = DedupConfig()
    result = dedup_tables([p for _, p in owned], dedup, Counter())
    holdout = Holdout(items, dedup, InstructionsConfig(sources_root=str(ROOT)))
    return owned, result, holdout


def publish(corpus, tmp_path: Path, workers: int):
    owned, result, holdout = corpus
    holdout = copy.deepcopy(holdout)
    store = ShardStore(StoreConfig(root=str(tmp_path / f"store-{workers}"), max_rows_per_shard=MAX_ROWS,
                                   row_group_rows=20))
    with store.writer("deduped") as w, store.scratch("deduped") as work:
        parts = write_survivors(owned, result, holdout, work / "survivors", workers, MAX_ROWS, 20)
        _, writers = adopt_survivors(w, parts)
        w.metadata["eval_holdout"] = holdout.summary()
        version = w.publish()
    return version, writers


def test_workers_write_the_survivors_a_parent_pass_keeps_and_the_version_does_not_depend_on_them(corpus, tmp_path):
    owned, result, holdout = corpus
    # what the parent-side pass kept: each shard read again, its keep mask, then the hold-out
    ref, stats, expected = copy.deepcopy(holdout), Counter(), {}
    for i, (source, path) in enumerate(owned):
        table = ref.filter(result.filter_table(i, read_shard(Path(path))), source, stats)
        expected.setdefault(source, []).extend(table["id"].to_pylist())
    assert not result.keep.all()  # the copies
    assert ref.n_dropped > 0 and len({d["source"] for d in ref.dropped}) > 1
    assert sum(map(len, expected.values())) < int(result.keep.sum())  # the hold-out removed dedup survivors

    inline, inline_writers = publish(corpus, tmp_path, 1)
    pooled, pooled_writers = publish(corpus, tmp_path, 2)
    assert inline_writers == {os.getpid()}
    assert pooled_writers and os.getpid() not in pooled_writers  # the parent wrote none of the shards
    assert pooled.id == inline.id
    for v in (inline, pooled):
        got = {}
        for e in v.manifest["shards"]:
            assert e["rows"] <= MAX_ROWS
            got.setdefault(e["split"], []).extend(v.read_shard(v.path / e["path"], ["id"])["id"].to_pylist())
        assert got == expected
        assert v.manifest["stats"] == dict(sorted(stats.items()))
        assert v.manifest["metadata"]["eval_holdout"] == ref.summary()
