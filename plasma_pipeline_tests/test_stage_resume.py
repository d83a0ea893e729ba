"""Resume within a stage: a run killed with kill -9 at ~80% redoes only the missing shards, byte-identically."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from plasma_pipeline.shards import ShardStore, StoreConfig
from plasma_pipeline_tests.kill_run import kill_when_done

N_SHARDS = 10


def shout(table: pa.Table, stats) -> pa.Table:
    """A stand-in stage: upper-cases text, drops every third row, and is slow when asked to be."""
    time.sleep(float(os.environ.get("SHOUT_SLEEP", "0")))
    keep = pc.not_equal(pc.bit_wise_and(pc.cast(pc.utf8_length(table["id"]), pa.int64()), 0), 1)
    out = table.filter(keep).set_column(1, "text", pc.utf8_upper(table["text"]).filter(keep))
    stats["kept"] += out.num_rows
    stats["dropped/short_id"] += table.num_rows - out.num_rows
    return out


RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from plasma_pipeline.shards import ShardStore, StoreConfig
    from plasma_pipeline.shard_work import resumable_map, clear_cache
    from plasma_pipeline_tests.test_stage_resume import shout
    store = ShardStore(StoreConfig(max_rows_per_shard=7), root=sys.argv[1])
    parent = store.current("raw/x")
    cache = store.asset_dir("clean/x") / "work" / "shard-cache"
    inputs = [(parent.path / e["path"], e["sha256"]) for e in parent.manifest["shards"]]
    with store.writer("clean/x") as w:
        for r in resumable_map(cache, shout, inputs, (), "code-v1", processes=int(sys.argv[2]), log=print):
            if r.file is not None:
                w.add_file(r.file, sha256=r.sha256)
            w.stats.update(r.stats)
        v = w.publish()
    clear_cache(cache)
    print("VERSION", v.id, flush=True)
    """
)


def _store_with_input(root: Path) -> ShardStore:
    store = ShardStore(StoreConfig(max_rows_per_shard=7), root=root)
    with store.writer("raw/x") as w:
        w.write(pa.table({"id": [f"d{i}" for i in range(7 * N_SHARDS)], "text": [f"doc {i}" for i in range(7 * N_SHARDS)]}))
        w.publish()
    return store


def _run(root: Path, processes: int = 1, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, str(root), str(processes)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_a_stage_killed_at_80_percent_reuses_its_finished_shards_and_publishes_the_same_bytes(tmp_path):
    whole = _run(_store_with_input(tmp_path / "whole").root)
    assert whole.returncode == 0, whole.stderr
    expected = whole.stdout.split("VERSION ")[1].strip()

    store = _store_with_input(tmp_path / "killed")
    cache = store.asset_dir("clean/x") / "work" / "shard-cache"
    done = kill_when_done([sys.executable, "-c", RUN, str(store.root), "1"], cache, "*.json", 8,
                          env={"SHOUT_SLEEP": "0.3"})
    assert 8 <= done < N_SHARDS, done
    assert not (store.root / "clean" / "x" / "CURRENT").exists()

    again = _run(store.root)
    assert again.returncode == 0, again.stderr
    assert f"reused {done} of {N_SHARDS} shards" in again.stdout
    assert again.stdout.split("VERSION ")[1].strip() == expected
    assert not cache.exists()  # the cache goes once its results are published


def test_workers_write_their_own_shards_in_a_pool_with_the_same_result(tmp_path):
    one = _run(_store_with_input(tmp_path / "one").root, processes=1)
    two = _run(_store_with_input(tmp_path / "two").root, processes=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert one.stdout.split("VERSION ")[1] == two.stdout.split("VERSION ")[1]


# -- dedup: the per-shard signature pass resumes -----------------------------------------------------------------

RUN_DEDUP = textwrap.dedent(
    """
    import sys, time
    from collections import Counter
    from plasma_pipeline.dedup import signatures
    from plasma_pipeline.dedup.config import DedupConfig
    from plasma_pipeline.dedup.core import dedup_tables
    from plasma_pipeline.dedup.resume import SignatureCache
    from plasma_pipeline.shard_work import clear_cache
    from plasma_pipeline.shards import ShardStore, StoreConfig, read_shard
    root, slow = sys.argv[1], float(sys.argv[2])
    if slow:  # the real signatures, slowed down so the test can kill the run in the middle
        sign = signatures.spill_signatures
        signatures.spill_signatures = lambda *a: (time.sleep(slow), sign(*a))[1]
    store = ShardStore(StoreConfig(max_rows_per_shard=40), root=root)
    parent = store.current("scored/x")
    cache = store.asset_dir("deduped") / "work" / "shard-cache"
    keys = [SignatureCache.key("code-v1", e["sha256"]) for e in parent.manifest["shards"]]
    stats = Counter()
    cfg = DedupConfig(processes=1, spill_dir=root + "/spill")
    result = dedup_tables([str(p) for p in parent.shards()], cfg, stats, cache=SignatureCache(str(cache), keys),
                          log=print)
    with store.writer("deduped") as w:
        for i, p in enumerate(parent.shards()):
            w.write(result.filter_table(i, read_shard(p)))
        w.stats.update(stats)
        v = w.publish()
    clear_cache(cache)
    print("DROPPED", stats["dropped/near_duplicate"], stats["dropped/exact_duplicate"])
    print("VERSION", v.id, flush=True)
    """
)


def _scored_store(root: Path) -> ShardStore:
    """10 shards of 40 documents; every 7th document is a copy, one word changed, of a document in another shard."""
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choices(words, k=60)) for _ in range(40 * N_SHARDS)]
    for i in range(0, len(texts), 7):
        j = (i + 97) % len(texts)
        copy = texts[j].split()
        copy[30] = "changed"
        texts[i] = " ".join(copy)
    store = ShardStore(StoreConfig(max_rows_per_shard=40), root=root)
    with store.writer("scored/x") as w:
        w.write(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts, "source": ["x"] * len(texts)}))
        w.publish()
    return store


def test_dedup_killed_at_80_percent_of_its_signatures_signs_only_the_rest_and_publishes_the_same_bytes(tmp_path):
    whole = subprocess.run([sys.executable, "-c", RUN_DEDUP, str(_scored_store(tmp_path / "whole").root), "0"],
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    expected = whole.stdout.split("VERSION ")[1].strip()
    assert int(whole.stdout.split("DROPPED ")[1].split()[0]) > 40  # the planted copies were found

    store = _scored_store(tmp_path / "killed")
    cache = store.asset_dir("deduped") / "work" / "shard-cache"
    done = kill_when_done([sys.executable, "-c", RUN_DEDUP, str(store.root), "0.3"], cache, "*.json", 8)
    assert 8 <= done < N_SHARDS, done
    assert not (store.root / "deduped" / "CURRENT").exists()

    again = subprocess.run([sys.executable, "-c", RUN_DEDUP, str(store.root), "0"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"signatures: reused {done} of {N_SHARDS} shards" in again.stdout
    assert again.stdout.split("VERSION ")[1].strip() == expected
    assert not cache.exists()
