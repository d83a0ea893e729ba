"""What the store promises, each with real processes: serialised publishes, pins, leases, leftovers, gc."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from plasma_pipeline import retention
from plasma_pipeline.shards import ShardStore, StoreConfig, live_versions, read_history

TRIALS = 50


def _docs(tag: str, n: int = 30) -> pa.Table:
    return pa.table({"id": [f"{tag}-{i}" for i in range(n)], "text": [f"{tag} text {i} " * 4 for i in range(n)]})


def _publisher(root, keep, who, same, barrier, errors):
    store = ShardStore(StoreConfig(keep_versions=keep, max_rows_per_shard=10), root=root)
    for trial in range(TRIALS):
        barrier.wait()
        tag = f"t{trial}" if same else f"t{trial}-w{who}"
        try:
            with store.writer("a") as w:
                w.write(_docs(tag))
                w.publish()
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            errors.put(f"trial {trial} writer {who}: {type(e).__name__}: {e}")
        barrier.wait()
        if who == 0:  # one checker per trial, while nobody writes
            try:
                store.current("a").verify()
                base = store.asset_dir("a")
                for v in live_versions(base):
                    store.version("a", v).verify()
                assert len(os.listdir(base / "versions")) >= 1
            except Exception as e:  # noqa: BLE001
                errors.put(f"trial {trial} check: {type(e).__name__}: {e}")
        barrier.wait()


@pytest.mark.parametrize("keep", [1, 3])
@pytest.mark.parametrize("same", [True, False], ids=["same-content", "different-content"])
def test_two_processes_publishing_one_asset_behind_a_barrier(tmp_path, keep, same):
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(tmp_path, keep, who, same, barrier, errors)) for who in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert not found, found[:5]
    base = tmp_path / "a"
    # Every version history says is live exists and verifies; deleted ones are recorded as such.
    store = ShardStore(StoreConfig(keep_versions=keep), root=tmp_path)
    events = read_history(base)
    published = {e["version"] for e in events if e.get("event") == "publish"}
    deleted = {e["version"] for e in events if e.get("event") == "delete"}
    on_disk = {p.name for p in (base / "versions").iterdir()}
    assert on_disk == published - deleted or on_disk == set(live_versions(base))
    assert set(live_versions(base)) == on_disk
    assert (TRIALS if same else 2 * TRIALS) == len(published)
    assert len(on_disk) <= keep + 1  # keep newest `keep` + CURRENT
    store.current("a").verify()
    assert not [p for p in base.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_publishing_existing_content_is_a_noop_that_never_rewrites_the_manifest(tmp_path):
    store = ShardStore(root=tmp_path)
    with store.writer("a") as w:
        w.write(_docs("x"))
        w.stats["kept"] = 30
        first = w.publish()
    mf = first.path / "manifest.json"
    before, mtime = mf.read_bytes(), mf.stat().st_mtime_ns
    time.sleep(0.01)
    with store.writer("a") as w:
        w.write(_docs("x"))
        w.stats["kept"] = 999  # different counters, same content
        again = w.publish()
    assert again.id == first.id and w.reused
    assert mf.read_bytes() == before and mf.stat().st_mtime_ns == mtime
    assert again.stats["kept"] == 30


def _publish(store, asset, tag, inputs=None):
    with store.writer(asset) as w:
        w.write(_docs(tag))
        w.inputs.update(inputs or {})
        return w.publish()


def test_retention_keeps_a_version_that_a_kept_downstream_version_was_built_from(tmp_path):
    store = ShardStore(StoreConfig(keep_versions=1), root=tmp_path)
    base_v1 = _publish(store, "base_model", "b1")
    _publish(store, "chat_model", "c1", {"base_model": base_v1.id})
    base_v2 = _publish(store, "base_model", "b2")
    # chat_model's current version was trained from base v1: it survives base_model's retention.
    assert set(store.versions("base_model")) == {base_v1.id, base_v2.id}
    store.version("base_model", base_v1.id).verify()
    # Once chat_model moves on, gc may delete base v1.
    _publish(store, "chat_model", "c2", {"base_model": base_v2.id})
    removed = retention.gc(store)
    assert any(r.kind == "version" and r.path.name == base_v1.id for r in removed)
    assert store.versions("base_model") == [base_v2.id]


def test_retention_keeps_what_a_resumable_trainer_work_dir_was_keyed_on(tmp_path):
    store = ShardStore(StoreConfig(keep_versions=1), root=tmp_path)
    shards_v1 = _publish(store, "pretrain_shards", "s1")
    work = store.work_dir("base_model", "fp1", {"pretrain_shards": shards_v1.id})
    _publish(store, "pretrain_shards", "s2")
    assert shards_v1.id in store.versions("pretrain_shards")
    # Published and no longer kept: the work dir goes with retention, and the pin with it.
    model = _publish(store, "base_model", "m1", {"pretrain_shards": shards_v1.id})
    store.mark_work_published(work, model.id)
    _publish(store, "base_model", "m2")
    assert not work.exists()
    _publish(store, "pretrain_shards", "s3")
    assert shards_v1.id not in store.versions("pretrain_shards")


LEASE_HOLDER = textwrap.dedent(
    """
    import sys, time
    from plasma_pipeline.shards import ShardStore, StoreConfig
    store = ShardStore(StoreConfig(keep_versions=1), root=sys.argv[1])
    with store.lease("pretrain_shards", sys.argv[2]) as v:
        print("leased", flush=True)
        time.sleep(600)
    """
)


def test_retention_puts_back_a_version_leased_after_it_read_the_pins(tmp_path):
    """Retention reads the pins, then deletes; a reader may take its lease in between. The delete itself looks
    for leases (before and after moving the version away), so such a version stays, whole; without a lease it goes,
    with a history event."""
    store = ShardStore(StoreConfig(keep_versions=5), root=tmp_path)
    ids = []
    for tag in ("a", "b"):
        with store.writer("x") as w:
            w.write(_docs(tag))
            ids.append(w.publish().id)
    base = store.asset_dir("x")
    with store.lease("x", ids[0]) as v:
        assert not retention.delete_version(base, v.path, "test")
        v.verify()
    assert retention.delete_version(base, base / "versions" / ids[0], "test")
    assert live_versions(base) == [ids[1]] and not list(base.glob(".trash-*"))
    assert read_history(base)[-1]["event"] == "delete"


def test_a_version_read_by_a_running_step_survives_until_its_lease_ends_even_by_kill_9(tmp_path):
    store = ShardStore(StoreConfig(keep_versions=1), root=tmp_path)
    v1 = _publish(store, "pretrain_shards", "s1")
    reader = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(tmp_path), v1.id], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "leased"
        _publish(store, "pretrain_shards", "s2")
        assert v1.id in store.versions("pretrain_shards")
        store.version("pretrain_shards", v1.id).verify()
    finally:
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait()
    # The holder is dead: its lease no longer pins, and the next publish deletes v1.
    _publish(store, "pretrain_shards", "s3")
    assert v1.id not in store.versions("pretrain_shards")


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import pyarrow as pa
    from plasma_pipeline.shards import ShardStore, StoreConfig
    store = ShardStore(StoreConfig(max_rows_per_shard=5), root=sys.argv[1])
    w = store.writer("a")
    w.write(pa.table({"id": [str(i) for i in range(50)]}))
    with store.scratch("a") as spill:
        (spill / "spill.bin").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


KILLED_BETWEEN_HISTORY_AND_CURRENT = textwrap.dedent(
    """
    import os, signal, sys
    import pyarrow as pa
    from plasma_pipeline import shards
    done = set()
    def dies_second(name, real):
        def call(*a, **kw):
            if name == "current" and "CURRENT" not in str(a[0]):
                return real(*a, **kw)
            if done:  # the other of the two steps already ran: the process dies between them
                os.kill(os.getpid(), signal.SIGKILL)
            done.add(name)
            return real(*a, **kw)
        return call
    shards.append_history = dies_second("history", shards.append_history)
    shards.atomic_write_text = dies_second("current", shards.atomic_write_text)
    store = shards.ShardStore(root=sys.argv[1])
    with store.writer("a") as w:
        w.write(pa.table({"id": ["v2-0", "v2-1"], "text": ["two", "two"]}))
        w.publish()
    """
)


def test_a_kill_between_the_history_and_current_leaves_every_readable_version_listed(tmp_path):
    """A publish writes two small files: the history event and CURRENT. Killed between them, the store must
    still list every version a reader can be given (CURRENT's among them), stay readable, take the next writer,
    and the rerun of the same step publishes the same id as CURRENT."""
    store = ShardStore(root=tmp_path)
    v1 = _publish(store, "a", "v1")
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_HISTORY_AND_CURRENT, str(tmp_path)])
    assert proc.returncode == -signal.SIGKILL
    current = store.current("a")
    current.verify()
    listed = store.versions("a")
    assert current.id in listed and v1.id in listed
    assert len(listed) == 2  # the killed publish's version is whole, listed, and kept
    with store.writer("a") as w:
        w.write(pa.table({"id": ["v2-0", "v2-1"], "text": ["two", "two"]}))
        v2 = w.publish()
    assert store.current("a").id == v2.id and v2.id in listed


def test_leftovers_of_a_killed_writer_are_swept_at_the_next_write_and_listed_by_gc(tmp_path):
    store = ShardStore(root=tmp_path)
    _publish(store, "a", "v1")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)])
    assert proc.returncode == -signal.SIGKILL
    base = tmp_path / "a"
    left = [p for p in base.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    assert len(left) == 2  # the version's temp folder and the spill scratch
    assert store.current("a").id  # readers never see the partial version
    dry = retention.gc(store, dry_run=True)
    assert {r.path for r in dry if r.kind == "leftover" and r.path.is_dir()} == set(left)
    assert all(p.exists() for p in left)  # dry run removes nothing
    # A live writer's folder is never swept by another writer.
    with store.writer("a") as live:
        assert not any(p.exists() for p in left)
        with store.writer("a"):
            assert live.tmp.exists()
        live.write(_docs("v2"))
        live.publish()


def test_plasma_gc_dry_run_lists_and_gc_removes(tiny_recipe):
    import yaml

    root = tiny_recipe.parent / "store"
    cfg = yaml.safe_load(tiny_recipe.read_text())
    store = ShardStore(StoreConfig(keep_versions=1), root=root)
    old = _publish(store, "x", "1")
    wide = ShardStore(StoreConfig(keep_versions=5), root=root)  # a wider policy published the second one
    with wide.writer("x") as w:
        w.write(_docs("2"))
        w.publish()
    assert old.id in store.versions("x")
    bin_ = os.path.join(os.path.dirname(sys.executable), "plasma")
    env = {**os.environ, "PLASMA_RECIPE": str(tiny_recipe)}
    assert cfg["store"]["keep_versions"] >= 1
    cfg["store"]["keep_versions"] = 1
    tiny_recipe.write_text(yaml.safe_dump(cfg))
    dry = subprocess.run([bin_, "gc", "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove version  {root / 'x' / 'versions' / old.id}" in dry.stdout
    assert old.id in store.versions("x")
    real = subprocess.run([bin_, "gc"], env=env, capture_output=True, text=True, timeout=120)
    assert real.returncode == 0, real.stderr
    assert old.id not in store.versions("x") and not (root / "x" / "versions" / old.id).exists()


def test_republishing_identical_content_restores_a_rotted_file_of_that_version(tmp_path):
    store = ShardStore(root=tmp_path)
    v = _publish(store, "a", "x")
    shard = v.shards()[0]
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01
    shard.write_bytes(bytes(data))
    with store.writer("a") as w:
        w.write(_docs("x"))
        again = w.publish()
    assert again.id == v.id and w.repaired == [shard.name]
    again.verify()
