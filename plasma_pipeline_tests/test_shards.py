import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.shards import CorruptShardError, ShardStore, StoreConfig, map_shards


def _docs(n, start=0):
    return pa.table({"id": [f"d{i}" for i in range(start, start + n)], "text": [f"text number {i} " * 5 for i in range(start, start + n)]})


def test_shards_are_bounded_zstd_and_manifest_describes_them(tmp_path):
    store = ShardStore(StoreConfig(max_rows_per_shard=40), root=tmp_path)
    with store.writer("raw/x") as w:
        w.write(_docs(100))
        w.stats["kept"] += 100
        w.stats["dropped/too_short"] += 3
        v = w.publish()
    assert [s["rows"] for s in v.manifest["shards"]] == [40, 40, 20]
    assert v.rows == 100 and v.stats == {"dropped/too_short": 3, "kept": 100}
    meta = pq.ParquetFile(v.shards()[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert "id: string" in v.manifest["schema"][""]
    v.verify()
    assert store.current("raw/x").id == v.id


def test_identical_data_gives_identical_version_and_different_data_a_new_one(tmp_path):
    store = ShardStore(StoreConfig(keep_versions=2), root=tmp_path)
    ids = []
    for start in (0, 0, 1, 2):
        with store.writer("a") as w:
            w.write(_docs(10, start))
            ids.append(w.publish().id)
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    # Retention keeps the two newest distinct versions, side by side.
    kept = sorted(p.name for p in (tmp_path / "a" / "versions").iterdir())
    assert kept == sorted([ids[2], ids[3]])


def test_a_damaged_current_pointer_names_itself_and_the_last_published_version(tmp_path):
    """An empty CURRENT (what a power cut during the pointer's update could leave without the fsync) or one naming
    no version gives an error naming the file and the version history says is last; the next publish repairs it."""
    store = ShardStore(root=tmp_path)
    with store.writer("a") as w:
        w.write(_docs(10))
        v = w.publish()
    for content in ("", "0123456789abcdef0123\n"):
        (tmp_path / "a" / "CURRENT").write_text(content)
        with pytest.raises(FileNotFoundError, match=rf"CURRENT: names version .*last published in history.jsonl: {v.id}"):
            store.current("a")
    with store.writer("a") as w:
        w.write(_docs(10))
        assert w.publish().id == v.id
    assert store.current("a").id == v.id


def test_corrupt_shard_is_detected(tmp_path):
    store = ShardStore(root=tmp_path)
    with store.writer("a") as w:
        w.write(_docs(10))
        v = w.publish()
    shard = v.shards()[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="does not match its manifest"):
        v.verify()
    shard.write_bytes(b"not parquet at all")
    with pytest.raises(CorruptShardError, match="cannot read shard"):
        list(v.iter_tables())


def test_empty_version_is_refused(tmp_path):
    store = ShardStore(root=tmp_path)
    with store.writer("a") as w, pytest.raises(ValueError, match="nothing to publish"):
        w.publish()
    assert not list((tmp_path / "a").glob(".tmp-*"))


def test_killed_writer_leaves_no_version_that_looks_complete(tmp_path):
    """A writer SIGKILLed mid-run leaves only a .tmp folder: CURRENT and versions/ are untouched."""
    store = ShardStore(root=tmp_path)
    with store.writer("a") as w:
        w.write(_docs(5))
        good = w.publish()
    script = textwrap.dedent(f"""
        import os, signal, pyarrow as pa
        from plasma_pipeline.shards import ShardStore, StoreConfig
        store = ShardStore(StoreConfig(max_rows_per_shard=10), root={str(tmp_path)!r})
        w = store.writer("a")
        w.write(pa.table({{"id": [str(i) for i in range(50)], "text": ["x"] * 50}}))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert list((tmp_path / "a").glob(".tmp-*")), "the killed writer's temp folder should be left for the sweep"
    assert store.current("a").id == good.id
    assert [p.name for p in (tmp_path / "a" / "versions").iterdir()] == [good.id]
    store.current("a").verify()


def _double(table, factor, stats):
    stats["kept"] += table.num_rows
    return table.append_column("n2", pa.array([len(t) * factor for t in table["text"].to_pylist()]))


def test_map_shards_in_a_process_pool_keeps_order_and_counts(tmp_path):
    store = ShardStore(StoreConfig(max_rows_per_shard=7), root=tmp_path)
    with store.writer("a") as w:
        w.write(_docs(30))
        v = w.publish()
    total = Counter()
    ids = []
    for _, table, stats in map_shards(_double, v.shards(), (2,), processes=2):
        total.update(stats)
        ids += table["id"].to_pylist()
        assert table["n2"].to_pylist() == [2 * len(t) for t in table["text"].to_pylist()]
    assert ids == [f"d{i}" for i in range(30)] and total["kept"] == 30
