"""Resume within a stage: a run killed with kill -9 at ~80% redoes only the missing shards, byte-identically."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from plasma_pipeline.shards import ShardStore, StoreConfig

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
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(store.root), "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "SHOUT_SLEEP": "0.3"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("*.json"))) < 8:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(cache.glob("*.json")))
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
