"""The store on object storage, against a real S3 server on loopback (moto, see conftest.py), with real processes:
publish/read round trip, concurrent publishers, a writer killed by SIGKILL mid-publish, locks that expire, leases
that retention honours."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from plasma_pipeline import retention
from plasma_pipeline.object_root import LockLost, ObjectLock
from plasma_pipeline.object_store import ObjectShardStore
from plasma_pipeline.shards import CorruptShardError, ShardStore, StoreConfig, Version

TTL = 2  # seconds: how long a killed holder's lock or lease blocks others in these tests


def _docs(tag: str, n: int = 30) -> pa.Table:
    return pa.table({"id": [f"{tag}-{i}" for i in range(n)], "text": [f"{tag} text {i} " * 4 for i in range(n)]})


def _store(root, **kw) -> ObjectShardStore:
    kw = {"max_rows_per_shard": 10, "lease_ttl_s": TTL, **kw}
    return ShardStore(StoreConfig(**kw), root=root)


def _publish(store, asset, tag, inputs=None):
    with store.writer(asset) as w:
        w.write(_docs(tag))
        w.inputs.update(inputs or {})
        return w.publish()


def test_publish_and_read_round_trip_on_s3(s3_root, tmp_path):
    store = _store(s3_root)
    assert isinstance(store, ObjectShardStore)
    v = _publish(store, "raw/x", "a")
    assert [s["rows"] for s in v.manifest["shards"]] == [10, 10, 10]
    stored = store.remote.sizes(store.version_rel("raw/x", v.id))
    assert set(stored) == {"part-00000.parquet", "part-00001.parquet", "part-00002.parquet", "manifest.json"}
    assert store.remote.get("raw/x/CURRENT").decode().strip() == v.id
    # Another host: nothing cached, reads through the same API and gets the same rows.
    other = ShardStore(StoreConfig(cache_dir=str(tmp_path / "other-host")), root=s3_root)
    got = other.current("raw/x")
    assert got.rows == 30 and not (tmp_path / "other-host").exists()  # the manifest only, until a file is read
    assert got.id == v.id and str(got.path).startswith(str(tmp_path / "other-host"))
    assert pa.concat_tables(got.iter_tables()).equals(_docs("a"))
    got.verify()
    # The id is the content's, whatever the store: a local store gives the same one for the same rows.
    local = ShardStore(StoreConfig(max_rows_per_shard=10), root=tmp_path / "local")
    assert _publish(local, "raw/x", "a").id == v.id
    # Identical content again: a no-op that never rewrites the stored manifest.
    tag = store.remote.get_tagged(f"{store.version_rel('raw/x', v.id)}/manifest.json")[1]
    with store.writer("raw/x") as w:
        w.write(_docs("a"))
        w.stats["kept"] = 999
        assert w.publish().id == v.id and w.reused
    assert store.remote.get_tagged(f"{store.version_rel('raw/x', v.id)}/manifest.json")[1] == tag
    # The same from a host with an empty cache: its own copy becomes its local copy, under the stored manifest.
    third = ShardStore(StoreConfig(max_rows_per_shard=10, cache_dir=str(tmp_path / "third-host")), root=s3_root)
    with third.writer("raw/x") as w:
        w.write(_docs("a"))
        w.stats["kept"] = 7
        again = w.publish()
    assert w.reused and again.stats == v.stats
    Version("raw/x", again.path, again.manifest).verify()  # the local copy, hashed against the stored manifest
    # verify() re-hashes the stored objects, not the local copy.
    store.remote.put(f"{store.version_rel('raw/x', v.id)}/part-00001.parquet", b"rot")
    with pytest.raises(CorruptShardError, match="part-00001.parquet has 3 bytes"):
        got.verify()
    # Republishing identical content puts the rotted object back from the fresh copy.
    with store.writer("raw/x") as w:
        w.write(_docs("a"))
        w.publish()
    assert w.repaired == ["part-00001.parquet"]
    got.verify()


def test_a_file_url_root_is_the_local_store(tmp_path):
    store = ShardStore(root=f"file://{tmp_path}/s")
    assert type(store) is ShardStore and store.root == tmp_path / "s"
    with pytest.raises(ValueError, match="root: unsupported scheme .ftp://"):
        StoreConfig(root="ftp://host/x")
    with pytest.raises(ValueError, match="root: the store's locks need conditional writes, implemented for S3"):
        StoreConfig(root="gs://bucket/x")


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from plasma_pipeline.shards import ShardStore, StoreConfig
    root, who, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    store = ShardStore(StoreConfig(keep_versions=2, max_rows_per_shard=10, lease_ttl_s=5), root=root)
    while time.time() < start:
        time.sleep(0.005)
    for trial in range(n):
        with store.writer("a") as w:
            w.write(pa.table({"id": [f"{who}-{trial}-{i}" for i in range(25)]}))
            print(w.publish().id, flush=True)
    """
)


def test_two_processes_publishing_one_asset_on_s3_never_lose_current(s3_root):
    n = 4
    start = time.time() + 3  # both past their imports, then publishing at once
    procs = [subprocess.Popen([sys.executable, "-c", PUBLISHER, s3_root, who, str(start), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("p", "q")]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    published = {line for out, _ in outs for line in out.split()}
    assert len(published) == 2 * n
    store = _store(s3_root, keep_versions=2)
    events, _, _ = store.history("a")
    assert {e["version"] for e in events if e["event"] == "publish"} == published  # no publish event lost
    current = store.current("a")
    assert current.id in published
    current.verify()
    live = store.versions("a")
    assert current.id in live and len(live) <= 3
    for vid in live:
        store.version("a", vid).verify()
    # What is stored is exactly what history says is live: deleted versions and uploads are all gone.
    assert set(store.remote.children("a/versions")) == set(live)


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from plasma_pipeline import object_root
    from plasma_pipeline.shards import ShardStore, StoreConfig
    from plasma_pipeline_tests.store.test_object_store import _killed_content
    root, where = sys.argv[1], sys.argv[2]
    store = ShardStore(StoreConfig(max_rows_per_shard=10, lease_ttl_s=2), root=root)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    upload, put, acquire = object_root.ObjectRoot.upload, object_root.ObjectRoot.put, object_root.ObjectLock.acquire
    def upload_then_die(self, local, rel):
        upload(self, local, rel)
        if where == "shards" and rel.endswith("part-00001.parquet"):
            die()
    def put_then_die(self, rel, data):
        put(self, rel, data)
        if where == "manifest" and rel.endswith("manifest.json"):
            die()
    def acquire_then_die(self):
        acquire(self)
        if where == "lock":
            die()
    object_root.ObjectRoot.upload, object_root.ObjectRoot.put = upload_then_die, put_then_die
    object_root.ObjectLock.acquire = acquire_then_die
    with store.writer("a") as w:
        w.write(_killed_content())
        w.publish()
    """
)


def _killed_content() -> pa.Table:
    return pa.table({"id": [f"killed-{i}" for i in range(50)], "text": ["x"] * 50})


@pytest.mark.parametrize("where", ["shards", "manifest", "lock"],
                         ids=["after-2-of-5-shards", "after-the-manifest", "holding-the-lock-before-uploading"])
def test_a_writer_killed_mid_publish_on_s3_leaves_no_visible_version(s3_root, tmp_path, where):
    store = _store(s3_root)
    good = _publish(store, "a", "good")
    with ShardStore(StoreConfig(max_rows_per_shard=10), root=tmp_path / "local").writer("a") as w:
        w.write(_killed_content())
        killed = w.publish().id  # the id is the content's: what the killed writer was publishing
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, s3_root, where], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # Readers see the intact version and nothing of the killed one, though some of its objects are stored.
    debris = where in ("shards", "manifest")
    assert store.remote.children("a/versions") == sorted([good.id, killed] if debris else [good.id])
    assert store.current("a").id == good.id and store.versions("a") == [good.id]
    store.current("a").verify()
    with pytest.raises(FileNotFoundError, match="not live"):
        store.version("a", killed)
    t0 = time.monotonic()
    if where == "manifest":
        # A rerun of the same content takes the dead writer's lock once it expires, overwrites its unpublished
        # objects and publishes the version whole.
        with store.writer("a") as w:
            w.write(_killed_content())
            rerun = w.publish()
        assert not w.reused and rerun.id == killed and store.current("a").id == killed
        rerun.verify()
    else:
        # Other content: that publish's retention deletes the dead writer's objects, then a rerun publishes.
        new = _publish(store, "a", "next")
        assert store.current("a").id == new.id
        assert killed not in store.remote.children("a/versions")
        with store.writer("a") as w:
            w.write(_killed_content())
            assert w.publish().id == killed
        store.current("a").verify()
    assert time.monotonic() - t0 < TTL + 5  # the dead holder blocked the next writer for at most one TTL
    assert json.loads(store.remote.get("a/.lock"))["released"]


def test_a_lock_taken_over_after_expiry_stops_its_old_holder_from_publishing(s3_root):
    store = _store(s3_root)
    first = ObjectLock(store.remote, "a/.lock", ttl_s=TTL)
    first.acquire()
    # the holder's own deadline never outlasts the stored expiry, so it cannot think it still holds a lock that
    # another process may already have taken over (it once did, by the put's latency)
    assert first._beat.deadline <= json.loads(store.remote.get("a/.lock"))["expires"]
    first._beat._stop.set()  # a holder that stalls (GC pause, lost network) and stops renewing
    first._beat._thread.join()
    second = ObjectLock(store.remote, "a/.lock", ttl_s=TTL, timeout=TTL + 5)
    t0 = time.monotonic()
    second.acquire()
    assert TTL - 1 < time.monotonic() - t0 < TTL + 5
    with pytest.raises(LockLost, match="expired or was taken over"):
        first.check()
    second.check()
    first.release()  # releasing a lock it no longer holds leaves the new holder's record alone
    assert json.loads(store.remote.get("a/.lock"))["owner"] == second.owner
    second.release()
    assert json.loads(store.remote.get("a/.lock"))["released"]


LEASE_HOLDER = textwrap.dedent(
    """
    import sys, time
    from plasma_pipeline.shards import ShardStore, StoreConfig
    store = ShardStore(StoreConfig(keep_versions=1, lease_ttl_s=2), root=sys.argv[1])
    with store.lease("pretrain_shards", sys.argv[2]) as v:
        print("leased", v.path, flush=True)
        time.sleep(600)
    """
)


def test_retention_on_s3_keeps_a_leased_version_until_its_lease_ends_even_by_kill_9(s3_root):
    store = _store(s3_root, keep_versions=1)
    v1 = _publish(store, "pretrain_shards", "s1")
    reader = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, s3_root, v1.id], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().startswith("leased")
        time.sleep(TTL)  # the holder has renewed its lease at least once by now
        _publish(store, "pretrain_shards", "s2")
        assert v1.id in store.versions("pretrain_shards")
        assert retention.pins(store, "pretrain_shards") == {v1.id: "read by 1 running step(s)"}
        store.version("pretrain_shards", v1.id).verify()
    finally:
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait()
    time.sleep(TTL + 0.5)  # the dead holder's lease expires unrenewed
    _publish(store, "pretrain_shards", "s3")
    assert v1.id not in store.versions("pretrain_shards")
    assert v1.id not in store.remote.children("pretrain_shards/versions")
    assert not store.leases("pretrain_shards")


def test_retention_and_gc_on_s3_keep_what_kept_versions_and_resumable_work_dirs_were_built_from(s3_root):
    store = _store(s3_root, keep_versions=1)
    base_v1 = _publish(store, "base_model", "b1")
    _publish(store, "chat_model", "c1", {"base_model": base_v1.id})
    base_v2 = _publish(store, "base_model", "b2")
    assert store.versions("base_model") == [base_v1.id, base_v2.id]  # chat_model's current one needs v1
    work = store.work_dir("sft_model", "fp1", {"base_model": base_v1.id})  # a trainer that may resume on v1
    _publish(store, "chat_model", "c2", {"base_model": base_v2.id})
    assert store.versions("base_model") == [base_v1.id, base_v2.id]
    assert retention.pins(store, "base_model")[base_v1.id] == "resumable trainer work dir sft_model/work/fp1"
    assert store.work_pins() == {"sft_model": {"fp1": {"inputs": {"base_model": base_v1.id}, "published": None}}}
    assert retention.gc(store, dry_run=True) == []
    # Published, and that model version is not kept: nothing pins base v1, and the work dir goes too.
    store.mark_work_published(work, "m1")
    expected = [("version", base_v1.id), ("work", "fp1.json")]
    assert sorted((r.kind, r.path.rsplit("/", 1)[-1]) for r in retention.gc(store, dry_run=True)) == expected
    assert base_v1.id in store.versions("base_model") and work.exists()  # a dry run removes nothing
    assert sorted((r.kind, r.path.rsplit("/", 1)[-1]) for r in retention.gc(store)) == expected
    assert store.versions("base_model") == [base_v2.id] and not work.exists()
    assert store.work_pins() == {}
