"""The dedup's memory discipline: signatures go to the spill directory and come back a band at a time, passes are
partitioned to fit `memory_gb`, workers are capped by it, and the spill directory is removed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from plasma_pipeline.dedup import DedupConfig, budget, dedup_tables
from plasma_pipeline.dedup.budget import MemoryPlan
from plasma_pipeline.dedup.lsh import bucket_pairs, pair_jaccard
from plasma_pipeline.dedup.spill import MappedArray, Spill
from plasma_pipeline_tests.dedup.corpora import edit_every, hamlet_words, wiki_docs


def corpus():
    docs = wiki_docs()[:120]
    w = hamlet_words()[7000:7300]
    near = [" ".join(w), " ".join(edit_every(w, 80)), " ".join(edit_every(w, 90, 3))]
    return [pa.table({"id": [f"a{i}" for i in range(80)], "text": docs[:80], "source": ["wiki"] * 80}),
            pa.table({"id": [f"b{i}" for i in range(44)], "text": docs[80:] + near + [docs[5]],
                      "source": ["web"] * 44})]


def test_the_parent_reads_band_hashes_one_band_row_at_a_time(monkeypatch):
    reads = []
    orig = Spill.read

    def spy(self, path, start=0, count=None, row=None):
        out = orig(self, path, start, count, row)
        if str(path).endswith(".bands.npy"):
            reads.append((row, len(out)))
        return out

    monkeypatch.setattr(Spill, "read", spy)
    res = dedup_tables(corpus(), DedupConfig(), Counter())
    assert reads and all(row is not None for row, _ in reads)  # never a whole bands x docs file
    assert max(n for _, n in reads) <= 80  # one band of one shard
    assert {row for row, _ in reads} == set(range(14))
    assert res.metadata["exact_duplicates"] == 1 and res.metadata["kept"] == 121


def test_memory_plan_partitions_and_workers():
    plan = MemoryPlan(1.0)
    assert plan.partitions(1000, 64, resident=0) == 1
    work = plan.work_bytes(0)
    assert work == 2**30 - budget.PROCESS_BYTES
    assert plan.partitions(work // 64 * 3, 64, resident=0) == 4  # powers of two (top bits of the hash)
    assert plan.partitions(work // 96 * 3, 96, resident=0, pow2=False) == 3
    assert plan.workers(4, jobs=10, table_bytes=10 << 20) == 2  # (1024 - 256) // (208 + 2 x 10 + 64) MiB
    assert MemoryPlan(0.5).workers(4, jobs=10, table_bytes=10 << 20) == 1
    assert MemoryPlan(8).workers(4, jobs=2, table_bytes=0) == 2
    with pytest.warns(RuntimeWarning, match="memory_gb"):
        assert MemoryPlan(0.1).work_bytes(0) == budget.MIN_WORK_BYTES


def test_a_small_budget_runs_one_worker():
    with pytest.warns(RuntimeWarning, match="memory_gb"):
        res = dedup_tables(corpus(), DedupConfig(processes=2, memory_gb=0.25), Counter())
    assert res.metadata["memory_plan"]["signature_workers"] == 1 and res.metadata["memory_plan"]["over_budget"]
    assert res.metadata["kept"] == 121


def test_spill_dir_is_removed_when_the_run_fails(tmp_path):
    def broken():
        raise RuntimeError("unreadable shard")

    with pytest.raises(RuntimeError, match="unreadable"):
        dedup_tables([corpus()[0], broken], DedupConfig(spill_dir=str(tmp_path)), Counter())
    assert list(tmp_path.iterdir()) == []


def test_results_do_not_hold_ids_until_asked():
    res = dedup_tables(corpus(), DedupConfig(), Counter())
    assert res._ids is None
    assert res.clusters() == [["a5", "b43"], ["b42", "b40", "b41"]]  # keeper first (the longest), by keeper index
    assert len(res.kept_ids()) == 121 and res._ids is not None


def test_mapped_array_batches_and_bucket_pairs(tmp_path):
    flat = np.array([1, 2, 3, 4, 2, 3, 4, 5, 9], np.uint64)
    path = tmp_path / "sh.u64"
    flat.tofile(path)
    m = MappedArray(path)
    counts = np.array([4, 4, 1])
    starts = np.array([0, 4, 8])
    released = []
    jac = pair_jaccard(np.array([0, 0]), np.array([1, 2]), m.array, starts, counts, batch=1,
                       release=lambda: released.append(1))
    m.close()
    assert jac.tolist() == [0.6, 0.0] and len(released) == 2  # one pair per batch
    pairs = bucket_pairs(np.array([7, 3, 7, 7, 3], np.uint64), np.arange(5), full_pairs_max=2)
    got = sorted({(int(p >> np.uint64(32)), int(p & np.uint64(0xFFFFFFFF))) for p in pairs})
    assert got == [(0, 2), (0, 3), (1, 4), (2, 3)]  # a 3-bucket: star (0-2, 0-3) + chain (0-2, 2-3)
