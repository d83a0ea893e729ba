"""The shard store on object storage (store.root = s3://bucket/prefix): same layout, API and promises as the local
store, without rename or flock.

Layout under the root, as on a local disk:

    <asset>/versions/<id>/...        shards and files, then manifest.json
    <asset>/history.jsonl            publish and delete events (rewritten whole, by compare-and-swap)
    <asset>/CURRENT                  the id published last, written last
    <asset>/.lock                    the writer lock (plasma_pipeline.object_root.ObjectLock)
    <asset>/.leases/                 read leases, renewed while held, expiring when their holder dies
    .assets/<quoted asset key>       one empty object per asset, so gc finds assets without listing every shard
    .work/<quoted asset key>/<key>.json   pins of trainer work dirs (the work dirs themselves, checkpoints and
                                     all, stay on the host that trains); one listing finds them all

Publishing: the writer fills a local temp folder exactly like the local store (so stages, worker processes and
the trainer keep writing plain files) and seals it (hashes, manifest). Then, under the writer lock: a version
already live is a no-op (its manifest is never rewritten; missing or rotted files are put back from this
identical copy); otherwise it uploads the files, then the manifest, then appends the publish event to
history.jsonl by compare-and-swap (a writer whose lock was taken over fails here instead of publishing) and
writes CURRENT last, by compare-and-swap too. Readers trust only versions that history lists as live or CURRENT
names, so a writer killed anywhere before that leaves objects no reader looks at; the next writer gets the lock
once the dead one's expires (one TTL), and the next publish of the asset or `plasma gc` deletes those objects
(manifest first).

Reading: a version is downloaded once into a local cache (`store.cache_dir`, default
~/.cache/plasma-pipeline/store/<hash of the root>), every file checked against the manifest hash, the manifest
written last, then renamed into place; versions are immutable, so the cache never goes stale. `Version.path` is that
local folder, so stage code, worker processes and the trainer read plain files. `Version.verify()` re-hashes the
stored objects themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from plasma_pipeline.object_root import LockLost, ObjectLease, ObjectLock, ObjectRoot, leased_versions
from plasma_pipeline.retention import Removal
from plasma_pipeline.shards import (
    MANIFEST,
    TMP_PREFIX,
    CorruptShardError,
    ShardStore,
    StoreConfig,
    Version,
    VersionWriter,
    asset_dir,
    file_sha256,
    history_order,
    parse_history,
)

ASSETS = ".assets"
WORK = ".work"
_HASH_CHUNK = 1 << 20


def _work_rel(asset: str, key: str) -> str:
    return f"{WORK}/{quote(asset, safe='')}/{key}.json"


def default_cache(url: str) -> Path:
    base = os.environ.get("PLASMA_STORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "plasma-pipeline", "store")
    return Path(base) / hashlib.sha256(url.encode()).hexdigest()[:16]


class ObjectVersion(Version):
    """A version read from object storage: `url` is where it is stored, `path` its verified local copy, downloaded
    at the first use of `path` (listing versions, counters or inputs reads only the manifest)."""

    def __init__(self, asset: str, manifest: dict[str, Any], url: str, store: "ObjectShardStore"):
        self.asset, self.manifest, self.url, self._store = asset, manifest, url, store

    @property
    def path(self) -> Path:
        return self._store.download(self.asset, self.id)

    def __repr__(self) -> str:
        return f"ObjectVersion({self.asset!r}, {self.id!r}, {self.url!r})"

    def verify(self) -> None:
        """Re-hash every stored object against the manifest (not the local copy)."""
        root: ObjectRoot = self._store.remote
        vrel = self._store.version_rel(self.asset, self.id)
        sizes = root.sizes(vrel)
        for entry in self.manifest["shards"] + self.manifest.get("files", []):
            where = f"{self.url}/{entry['path']}"
            if entry["path"] not in sizes:
                raise CorruptShardError(f"{self.asset}@{self.id}: {where} is missing")
            if sizes[entry["path"]] != entry["bytes"]:
                raise CorruptShardError(f"{self.asset}@{self.id}: {where} has {sizes[entry['path']]} bytes, "
                                        f"its manifest says {entry['bytes']}")
            h = hashlib.sha256()
            with root.open(f"{vrel}/{entry['path']}") as f:
                while chunk := f.read(_HASH_CHUNK):
                    h.update(chunk)
            if h.hexdigest() != entry["sha256"]:
                raise CorruptShardError(f"{self.asset}@{self.id}: {where} does not match its manifest hash")


class ObjectShardStore(ShardStore):
    def __init__(self, cfg: StoreConfig | None = None, root: str | Path | None = None):
        self.cfg = cfg or StoreConfig()
        self.remote = ObjectRoot(str(root if root is not None else self.cfg.root), self.cfg.storage_options)
        self.root = self.remote.url
        self.cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else default_cache(self.remote.url)
        self._manifests: dict[tuple[str, str], dict[str, Any]] = {}

    # -- names ----------------------------------------------------------------------------------------------
    @staticmethod
    def rel(asset: str) -> str:
        return "/".join(asset_dir(Path(), asset).parts)

    def version_rel(self, asset: str, version_id: str) -> str:
        return f"{self.rel(asset)}/versions/{version_id}"

    def asset_dir(self, asset: str) -> Path:
        """This host's working folder for the asset (writer temp folders, scratch, shard cache, trainer work)."""
        return self.cache / "assets" / self.rel(asset)

    def _cached(self, asset: str, version_id: str) -> Path:
        return self.cache / "versions" / self.rel(asset) / version_id

    # -- history and CURRENT ----------------------------------------------------------------------------------
    def history(self, asset: str) -> tuple[list[dict[str, Any]], bytes | None, str | None]:
        data, etag = self.remote.get_tagged(f"{self.rel(asset)}/history.jsonl")
        return (parse_history(data.decode()) if data else []), data, etag

    def current_id(self, asset: str) -> str | None:
        data = self.remote.get(f"{self.rel(asset)}/CURRENT")
        return data.decode().strip() if data else None

    def versions(self, asset: str) -> list[str]:
        """Live versions of `asset`, oldest first. A publish event is written only after the whole version is
        stored, and a delete event before any of it is deleted, so history alone says what is live."""
        return history_order(self.history(asset)[0])

    # -- reading ----------------------------------------------------------------------------------------------
    def current(self, asset: str) -> Version:
        vid = self.current_id(asset)
        if vid is None:
            raise FileNotFoundError(f"asset {asset!r} has no published version under "
                                    f"{self.remote.url_of(self.rel(asset))}; materialize it first")
        return self._load(asset, vid)

    def version(self, asset: str, version_id: str) -> Version:
        if version_id not in self.versions(asset) and version_id != self.current_id(asset):
            raise FileNotFoundError(f"asset {asset!r} has no version {version_id} "
                                    f"(not live in {self.remote.url_of(self.rel(asset))}/history.jsonl)")
        return self._load(asset, version_id)

    def manifest(self, asset: str, version_id: str) -> dict[str, Any]:
        """A stored manifest; never rewritten once stored, so each is fetched once per store object."""
        if (asset, version_id) in self._manifests:
            return self._manifests[asset, version_id]
        local = self._cached(asset, version_id) / MANIFEST
        if local.exists():
            manifest = json.loads(local.read_text())
        else:
            data = self.remote.get(f"{self.version_rel(asset, version_id)}/{MANIFEST}")
            if data is None:
                raise FileNotFoundError(f"{self.remote.url_of(self.version_rel(asset, version_id))} has no manifest")
            manifest = json.loads(data)
        self._manifests[asset, version_id] = manifest
        return manifest

    def _load(self, asset: str, version_id: str) -> ObjectVersion:
        return ObjectVersion(asset, self.manifest(asset, version_id),
                             self.remote.url_of(self.version_rel(asset, version_id)), self)

    def download(self, asset: str, version_id: str, seed: Path | None = None) -> Path:
        """The version's verified local copy, downloaded the first time (manifest last, then one rename); files
        in `seed` (a writer's own copy) that match the manifest hash are moved in instead of downloaded."""
        dest = self._cached(asset, version_id)
        url = self.remote.url_of(self.version_rel(asset, version_id))
        if not (dest / MANIFEST).exists():
            manifest = self.manifest(asset, version_id)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f"{TMP_PREFIX}{version_id}-{uuid.uuid4().hex[:8]}"
            try:
                vrel = self.version_rel(asset, version_id)
                for entry in manifest["shards"] + manifest.get("files", []):
                    p = tmp / entry["path"]
                    p.parent.mkdir(parents=True, exist_ok=True)
                    mine = seed / entry["path"] if seed is not None else None
                    if mine is not None and mine.is_file() and file_sha256(mine) == entry["sha256"]:
                        os.replace(mine, p)
                        continue
                    try:
                        self.remote.download(f"{vrel}/{entry['path']}", p)
                    except FileNotFoundError as e:
                        raise CorruptShardError(f"{asset}@{version_id}: {url}/{entry['path']} is missing") from e
                    if p.stat().st_size != entry["bytes"] or file_sha256(p) != entry["sha256"]:
                        raise CorruptShardError(
                            f"{asset}@{version_id}: {url}/{entry['path']} does not match its manifest hash")
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
                try:
                    os.rename(tmp, dest)
                except OSError:  # another reader on this host finished first: same bytes
                    if not (dest / MANIFEST).exists():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    # -- locks and leases -------------------------------------------------------------------------------------
    def lock(self, asset: str) -> ObjectLock:
        return ObjectLock(self.remote, f"{self.rel(asset)}/.lock", ttl_s=self.cfg.lease_ttl_s)

    @contextlib.contextmanager
    def lease(self, asset: str, version_id: str) -> Iterator[Version]:
        # Lease first, then check it is live: a retention that lists leases after this sees it, one that ran
        # before has already recorded the delete, and version() refuses.
        with ObjectLease(self.remote, self.rel(asset), version_id, self.cfg.lease_ttl_s):
            yield self.version(asset, version_id)

    def leases(self, asset: str) -> dict[str, int]:
        return leased_versions(self.remote, self.rel(asset))

    def writer(self, asset: str) -> "ObjectVersionWriter":
        return ObjectVersionWriter(self, asset)

    # -- trainer work dirs ------------------------------------------------------------------------------------
    def work_dir(self, asset: str, key: str, inputs: dict[str, str]) -> Path:
        """A local folder as on a local store; its pins go to the store too, so retention on any host keeps
        what a resumable trainer was keyed on. The checkpoints stay on the host that trains."""
        d = super().work_dir(asset, key, inputs)
        if inputs:
            self.remote.put(_work_rel(asset, key), (d / "pins.json").read_bytes())
            self.remote.put(f"{ASSETS}/{quote(asset, safe='')}", b"")  # so gc finds it before a first publish
        return d

    def mark_work_published(self, work: Path, version_id: str) -> None:
        super().mark_work_published(work, version_id)
        *asset, _, key = work.relative_to(self.cache / "assets").parts
        self.remote.put(_work_rel("/".join(asset), key), (work / "pins.json").read_bytes())

    def work_pins(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{asset: {work dir key: pins}} of every asset, from one listing."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name in self.remote.sizes(WORK):
            asset, _, key = name.partition("/")
            with contextlib.suppress(ValueError, TypeError):
                out.setdefault(unquote(asset), {})[key.removesuffix(".json")] = json.loads(
                    self.remote.get(f"{WORK}/{name}"))
        return out

    def assets(self) -> list[str]:
        return sorted(unquote(n) for n in self.remote.children(ASSETS))


class ObjectVersionWriter(VersionWriter):
    """Writes locally like VersionWriter; publish() uploads, then records the version (module docstring)."""

    store: ObjectShardStore

    def publish(self, extra_files=None) -> Version:
        store, remote = self.store, self.store.remote
        rel = store.rel(self.asset)
        version, manifest = self._seal()
        vrel = store.version_rel(self.asset, version)
        # Uploads happen under the writer lock (renewed by its heartbeat however long they take): no two writers
        # of one asset upload at once, so files of one version id never mix two writers' annex files, and
        # retention, which holds the same lock, never deletes an upload in progress.
        with store.lock(self.asset) as lock:
            events, text, etag = store.history(self.asset)
            if version in history_order(events):
                # Identical content is already published: a no-op that returns it (its manifest never rewritten);
                # stored files that rotted or went missing are put back from this identical copy.
                manifest, self.reused = store.manifest(self.asset, version), True
                self.repaired = self._repair(vrel, manifest)
            else:
                # Objects already under versions/<id>/ are a dead writer's: unpublished, so overwritten.
                for entry in manifest["shards"] + manifest["files"]:
                    remote.upload(self.tmp / entry["path"], f"{vrel}/{entry['path']}")
                lock.check()
                remote.put(f"{vrel}/{MANIFEST}", (self.tmp / MANIFEST).read_bytes())
                store._manifests[self.asset, version] = manifest
            line = json.dumps({"event": "publish", "version": version, "at": time.time()}) + "\n"
            lock.check()
            if remote.put_if(f"{rel}/history.jsonl", (text or b"") + line.encode(), etag) is None:
                raise LockLost(f"{remote.url_of(rel)}/history.jsonl changed while this writer held the lock")
            remote.put(f"{ASSETS}/{quote(self.asset, safe='')}", b"")  # idempotent: gc's list of assets
            _, cur_tag = remote.get_tagged(f"{rel}/CURRENT")
            if remote.put_if(f"{rel}/CURRENT", (version + "\n").encode(), cur_tag) is None:
                raise LockLost(f"{remote.url_of(rel)}/CURRENT changed while this writer held the lock")
            retain_objects(store, self.asset)
        # This writer's copy becomes the host's local copy of the version: whole when the stored manifest is
        # ours, else file by file where the hashes match (a reused version's counters differ, not its data).
        dest = store._cached(self.asset, version)
        if not (dest / MANIFEST).exists() and json.loads((self.tmp / MANIFEST).read_text()) == manifest:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.rename(self.tmp, dest)
        if self.tmp.exists():
            store.download(self.asset, version, seed=self.tmp)
        self.abort()
        return store._load(self.asset, version)

    def _repair(self, vrel: str, manifest: dict[str, Any]) -> list[str]:
        """Put back, from this writer's identical copy, stored files that are missing or of the wrong size."""
        stored = self.store.remote.sizes(vrel)
        repaired = []
        for entry in manifest["shards"] + manifest.get("files", []):
            if stored.get(entry["path"]) == entry["bytes"]:
                continue
            mine = self.tmp / entry["path"]
            if not (mine.exists() and file_sha256(mine) == entry["sha256"]):
                raise CorruptShardError(f"{self.store.remote.url_of(vrel)}/{entry['path']} is missing or damaged "
                                        f"and this writer has no identical copy")
            self.store.remote.upload(mine, f"{vrel}/{entry['path']}")
            repaired.append(entry["path"])
        return repaired


# -- retention --------------------------------------------------------------------------------------------------


def pins_objects(store: ObjectShardStore, asset: str, work: dict | None = None) -> dict[str, str]:
    """{version id of `asset`: why it must be kept}: inputs of live versions of any asset, unpublished trainer
    work dirs, unexpired read leases."""
    out: dict[str, str] = {}
    work = store.work_pins() if work is None else work
    for other in store.assets():
        for vid in store.versions(other):
            try:
                ref = (store.manifest(other, vid).get("inputs") or {}).get(asset)
            except FileNotFoundError:
                continue
            if ref:
                out.setdefault(ref, f"input of {other}@{vid}")
        for key, pins in work.get(other, {}).items():
            ref = (pins.get("inputs") or {}).get(asset)
            if ref and not pins.get("published"):
                out.setdefault(ref, f"resumable trainer work dir {other}/work/{key}")
    for vid, n in store.leases(asset).items():
        out.setdefault(vid, f"read by {n} running step(s)")
    return out


def retain_objects(store: ObjectShardStore, asset: str, dry_run: bool = False) -> list[Removal]:
    """Retention for one asset on object storage; the caller holds its writer lock."""
    remote, rel = store.remote, store.rel(asset)
    events, text, etag = store.history(asset)
    order = list(reversed(history_order(events)))  # newest first
    current = store.current_id(asset)
    keep = set(order[: store.cfg.keep_versions]) | ({current} if current else set())
    work = store.work_pins()
    pinned = pins_objects(store, asset, work)
    plan: list[Removal] = []
    for vid in remote.children(f"{rel}/versions"):
        if vid in keep or vid in pinned:
            continue
        url = remote.url_of(store.version_rel(asset, vid))
        if vid in order:
            plan.append(Removal("version", url, f"beyond keep_versions={store.cfg.keep_versions}, not pinned"))
        else:
            plan.append(Removal("leftover", url, "never published (a writer that died)"))
    gone = {r.path.rsplit("/", 1)[-1] for r in plan if r.kind == "version"}
    live_after = {v for v in order if v not in gone}
    for key, pins in work.get(asset, {}).items():
        if pins.get("published") and pins["published"] not in live_after:
            plan.append(Removal("work", remote.url_of(_work_rel(asset, key)),
                                f"trainer work dir of {asset}@{pins['published']}, which is no longer kept"))
    if dry_run:
        return plan
    if gone:
        # Readers stop trusting these versions before any of their objects go.
        now = time.time()
        lines = "".join(json.dumps({"event": "delete", "version": v, "reason": "retention", "at": now}) + "\n"
                        for v in sorted(gone))
        if remote.put_if(f"{rel}/history.jsonl", (text or b"") + lines.encode(), etag) is None:
            raise LockLost(f"{remote.url_of(rel)}/history.jsonl changed while retention held the writer lock")
    # A reader that leased a version after the listing above and found it live before the delete event went in
    # is reading it now: its lease shows here, and its objects stay until that lease ends (then they are debris).
    reading = set(store.leases(asset)) if plan else set()
    for r in plan:
        if r.kind in ("version", "leftover") and r.path.rsplit("/", 1)[-1] in reading:
            continue
        if r.kind in ("version", "leftover"):
            remote.delete_tree(store.version_rel(asset, r.path.rsplit("/", 1)[-1]), first=MANIFEST)
        else:
            key = r.path.rsplit("/", 1)[-1].removesuffix(".json")
            remote.delete(_work_rel(asset, key))
            shutil.rmtree(store.asset_dir(asset) / "work" / key, ignore_errors=True)
    for vid in gone:
        shutil.rmtree(store._cached(asset, vid), ignore_errors=True)
    return plan


def gc_objects(store: ObjectShardStore, dry_run: bool = False) -> list[Removal]:
    """`plasma gc` on object storage: retention over every asset, downstream assets first."""
    assets = store.assets()
    refs = {a: 0 for a in assets}
    for other in assets:
        for vid in store.versions(other):
            with contextlib.suppress(FileNotFoundError):
                for parent in store.manifest(other, vid).get("inputs") or {}:
                    if parent in refs:
                        refs[parent] += 1
    out: list[Removal] = []
    for asset in sorted(assets, key=lambda a: refs[a]):
        with store.lock(asset):
            out += retain_objects(store, asset, dry_run=dry_run)
        # This host's copies of versions no longer live (deleted here or by another host's retention).
        cached = store._cached(asset, "x").parent
        live = set(store.versions(asset))
        for d in sorted(cached.iterdir()) if cached.is_dir() else []:
            if d.name not in live and not d.name.startswith(TMP_PREFIX):
                out.append(Removal("cache", d, "local copy of a version no longer stored"))
                if not dry_run:
                    shutil.rmtree(d, ignore_errors=True)
    return out
