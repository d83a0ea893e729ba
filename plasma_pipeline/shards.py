"""The shard store: every asset version is a folder of files plus a manifest, published atomically.

Layout under the store root:

    <asset key path>/versions/<version id>/   shards (part-00000.parquet, train/part-00000.parquet, ...) or model
                                               files, and manifest.json
    <asset key path>/CURRENT                   the id of the version published last
    <asset key path>/history.jsonl             publish and delete events, oldest first (drives retention)
    <asset key path>/.lock                     the writer lock: publish, retention, CURRENT and gc hold it
    <asset key path>/.leases/                  read leases of running steps (shared flocks)
    <asset key path>/work/<key>/               scratch that outlives a run (trainer work dirs), with pins.json

A version is written into `<asset>/.tmp-<uuid>/` (its writer holds a flock on `.tmp-<uuid>.lock`), every file
fsynced, the manifest written last, then, under the writer lock, the folder is renamed to `versions/<id>`. A
killed writer leaves only a `.tmp-*` folder whose lock nobody holds; the next writer of that asset sweeps it.
The version id is a hash of the identity files (shards, model files) and the schema, not of timestamps,
counters or run logs, so a rerun that yields identical bytes publishes the same id, and Dagster (which uses the
id as the data version) keeps downstream assets fresh. Publishing an id that exists is a no-op: a published
manifest is never rewritten. Retention (plasma_pipeline.retention) never deletes a pinned version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from plasma_pipeline import locks
from plasma_pipeline.object_root import CONDITIONAL_SCHEMES, OBJECT_SCHEMES, split_url

MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20
TMP_PREFIX = ".tmp-"


class CorruptShardError(RuntimeError):
    """A shard on disk does not match its manifest, or cannot be read as Parquet."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def asset_dir(root: Path, asset: str) -> Path:
    """`raw/wiki` → root/raw/wiki. Asset keys use '/' as Dagster's path separator."""
    parts = [p for p in asset.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        raise ValueError(f"bad asset key {asset!r}")
    return Path(root).joinpath(*parts)


@dataclass
class Version:
    """One published, immutable asset version."""

    asset: str
    path: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.manifest["version"]

    @property
    def inputs(self) -> dict[str, str]:
        """{parent asset: version id} this version was built from."""
        return dict(self.manifest.get("inputs") or {})

    def shards(self, split: str | None = None) -> list[Path]:
        return [
            self.path / s["path"]
            for s in self.manifest["shards"]
            if split is None or s.get("split", "") == split
        ]

    def file(self, name: str) -> Path:
        p = self.path / name
        if not p.exists():
            raise FileNotFoundError(f"{self.asset} version {self.id} has no file {name!r}")
        return p

    @property
    def rows(self) -> int:
        return self.manifest["rows"]

    @property
    def stats(self) -> dict[str, int]:
        return self.manifest.get("stats", {})

    def verify(self) -> None:
        """Re-hash every file against the manifest; raises CorruptShardError naming the first bad one."""
        for entry in self.manifest["shards"] + self.manifest.get("files", []):
            p = self.path / entry["path"]
            if not p.exists():
                raise CorruptShardError(f"{self.asset}@{self.id}: {p} is missing")
            if p.stat().st_size != entry["bytes"]:
                raise CorruptShardError(
                    f"{self.asset}@{self.id}: {p} has {p.stat().st_size} bytes, its manifest says {entry['bytes']}"
                )
            if file_sha256(p) != entry["sha256"]:
                raise CorruptShardError(f"{self.asset}@{self.id}: {p} does not match its manifest hash")

    def read_shard(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        return read_shard(path, columns)

    def iter_tables(self, split: str | None = None, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for p in self.shards(split):
            yield read_shard(p, columns)


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptShardError(f"cannot read shard {path}: {e}") from e


@dataclass
class StoreConfig:
    """Where versions live and how big their shards are."""

    root: str = "data/assets"
    # Published versions kept per asset; older ones are deleted at the next publish (the current one never is).
    keep_versions: int = 3
    # Upper bound of rows per Parquet shard.
    max_rows_per_shard: int = 50_000
    # Upper bound of in-memory Arrow bytes per shard before it is flushed (zstd makes the file smaller).
    max_bytes_per_shard: int = 128 * 1024 * 1024
    # Row group size inside a shard, so readers can stream within a shard too.
    row_group_rows: int = 5_000
    # Worker processes for per-shard stage work; 0 means os.cpu_count().
    processes: int = 0
    # Object storage only (root = s3://bucket/prefix): fsspec options (endpoint_url, key, ...), the TTL of writer
    # locks and read leases (a killed holder blocks at most this long), and the local cache of versions read.
    storage_options: dict[str, Any] = field(default_factory=dict)
    lease_ttl_s: int = 60
    cache_dir: str = ""

    def __post_init__(self) -> None:
        # Messages start with the field name (the recipe loader prefixes "store.").
        for name, low in (("keep_versions", 1), ("max_rows_per_shard", 1), ("max_bytes_per_shard", 1024),
                          ("row_group_rows", 1), ("processes", 0), ("lease_ttl_s", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: expected an integer, got {value!r}")
            if value < low:
                raise ValueError(f"{name}: must be >= {low}, got {value}")
        root = os.fspath(self.root) if isinstance(self.root, os.PathLike) else self.root
        if not isinstance(root, str) or not root:
            raise ValueError(f"root: expected a path or a URL, got {self.root!r}")
        scheme = split_url(root)[0]
        if scheme and scheme != "file" and scheme not in CONDITIONAL_SCHEMES:
            why = ("the store's locks need conditional writes, implemented for S3 only so far"
                   if scheme in OBJECT_SCHEMES else "unsupported scheme")
            raise ValueError(f"root: {why} ({scheme}:// in {self.root!r}); use a path, file:// or s3://")

    @property
    def workers(self) -> int:
        return self.processes or os.cpu_count() or 1


def read_history(base: Path) -> list[dict[str, Any]]:
    hist = base / "history.jsonl"
    if not hist.exists():
        return []
    return parse_history(hist.read_text())


def parse_history(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a crash mid-append carries no event
                continue
    return out


def live_versions(base: Path) -> list[str]:
    """Published and not deleted, in publish order (oldest first); a re-publish moves a version to the end."""
    return [v for v in history_order(read_history(base)) if (base / "versions" / v / MANIFEST).exists()]


def history_order(events: list[dict[str, Any]]) -> list[str]:
    order: dict[str, None] = {}
    for ev in events:
        v = ev.get("version")
        if not v:
            continue
        if ev.get("event", "publish") == "publish":
            order.pop(v, None)
            order[v] = None
        elif ev.get("event") == "delete":
            order.pop(v, None)
    return list(order)


def append_history(base: Path, event: dict[str, Any]) -> None:
    with open(base / "history.jsonl", "a") as f:
        f.write(json.dumps({**event, "at": time.time()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def local_root(root: str | Path) -> Path | None:
    """The folder of a local store root (a path or file:// URL), or None for object storage."""
    if isinstance(root, Path):
        return root
    scheme, rest = split_url(root)
    if not scheme:
        return Path(root)
    if scheme == "file":
        return Path("/" + rest)
    return None


class ShardStore:
    """A store on a local filesystem (atomic rename, flock); a root on object storage (s3://bucket/prefix) gives
    `plasma_pipeline.object_store.ObjectShardStore`, the same API."""

    def __new__(cls, cfg: StoreConfig | None = None, root: str | Path | None = None):
        if cls is ShardStore and local_root(root if root is not None else (cfg or StoreConfig()).root) is None:
            from plasma_pipeline.object_store import ObjectShardStore

            return super().__new__(ObjectShardStore)
        return super().__new__(cls)

    def __init__(self, cfg: StoreConfig | None = None, root: str | Path | None = None):
        self.cfg = cfg or StoreConfig()
        self.root = local_root(root if root is not None else self.cfg.root).resolve()

    def asset_dir(self, asset: str) -> Path:
        return asset_dir(self.root, asset)

    def current(self, asset: str) -> Version:
        d = asset_dir(self.root, asset)
        cur = d / "CURRENT"
        if not cur.exists():
            raise FileNotFoundError(f"asset {asset!r} has no published version under {d}; materialize it first")
        vid = cur.read_text(errors="replace").strip()
        if not vid or not (d / "versions" / vid / MANIFEST).exists():
            live = live_versions(d)
            raise FileNotFoundError(f"{cur}: names version {vid!r}, which is not published under {d / 'versions'} "
                                    f"(last published in history.jsonl: {live[-1] if live else 'none'}); "
                                    f"rematerialize {asset!r} to point it at a whole version")
        return self.version(asset, vid)

    def version(self, asset: str, version_id: str) -> Version:
        path = asset_dir(self.root, asset) / "versions" / version_id
        mf = path / MANIFEST
        if not mf.exists():
            raise FileNotFoundError(f"asset {asset!r} has no version {version_id} (looked in {path})")
        return Version(asset, path, json.loads(mf.read_text()))

    def versions(self, asset: str) -> list[str]:
        """Live versions of `asset`, oldest first."""
        return live_versions(asset_dir(self.root, asset))

    def lock(self, asset: str):
        return locks.writer_lock(asset_dir(self.root, asset))

    @contextlib.contextmanager
    def lease(self, asset: str, version_id: str) -> Iterator[Version]:
        """Read one version under a lease, so retention in another process cannot delete it meanwhile."""
        with locks.read_lease(asset_dir(self.root, asset), version_id):
            yield self.version(asset, version_id)

    def writer(self, asset: str) -> "VersionWriter":
        return VersionWriter(self, asset)

    @contextlib.contextmanager
    def scratch(self, asset: str) -> Iterator[Path]:
        """A temporary folder beside the asset's versions (same filesystem, so spill files can be renamed in),
        removed on exit; one left by a killed run is swept at the asset's next write."""
        base = self.asset_dir(asset)
        held, path = _held_tmp(base, "scratch-")
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            held.release()

    def work_dir(self, asset: str, key: str, inputs: dict[str, str]) -> Path:
        """A folder that outlives one run (a trainer's checkpoints), keyed by its inputs, which it pins until
        `mark_work_published` says the result is published."""
        d = self.asset_dir(asset) / "work" / key
        d.mkdir(parents=True, exist_ok=True)
        pins = d / "pins.json"
        prev = json.loads(pins.read_text()) if pins.exists() else {}
        atomic_write_text(pins, json.dumps({"inputs": inputs, "published": prev.get("published")}, indent=1))
        return d

    def mark_work_published(self, work: Path, version_id: str) -> None:
        pins = work / "pins.json"
        data = json.loads(pins.read_text()) if pins.exists() else {"inputs": {}}
        data["published"] = version_id
        atomic_write_text(pins, json.dumps(data, indent=1))


def _repair_from(final: Path, fresh: Path, manifest: dict[str, Any]) -> list[str]:
    repaired = []
    for entry in manifest["shards"] + manifest.get("files", []):
        p, q = final / entry["path"], fresh / entry["path"]
        intact = p.exists() and p.stat().st_size == entry["bytes"] and file_sha256(p) == entry["sha256"]
        if not intact and q.exists() and file_sha256(q) == entry["sha256"]:
            os.replace(q, p)
            repaired.append(entry["path"])
    return repaired


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) to a temp file beside path, then rename it into place: readers see old or new, whole.
    The bytes are on disk before the rename, so a power cut cannot leave an empty file under the old name."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _held_tmp(base: Path, kind: str = "") -> tuple[locks.HeldFile, Path]:
    """A `.tmp-*` folder with its lock file held, lock first, so a sweeper never sees an unlocked live folder."""
    base.mkdir(parents=True, exist_ok=True)
    name = f"{TMP_PREFIX}{kind}{uuid.uuid4().hex}"
    held = locks.HeldFile(base / f"{name}.lock")
    path = base / name
    path.mkdir()
    return held, path


class VersionWriter:
    """Collects shards (and/or model files) for one new version; `publish()` makes it visible atomically.

    Use as a context manager: leaving the block by an exception removes the temporary folder. Set `inputs`
    ({parent asset: version id}) so retention keeps the parents while this version is kept; name in `annex`
    the files that describe the run but are not its content (logs, metrics): they are hashed and verified but
    left out of the version id.
    """

    def __init__(self, store: ShardStore, asset: str):
        from plasma_pipeline.retention import sweep_leftovers

        self.store = store
        self.asset = asset
        self.base = store.asset_dir(asset)
        sweep_leftovers(self.base)
        self._held, self.tmp = _held_tmp(self.base)
        self.stats: Counter = Counter()
        self.metadata: dict[str, Any] = {}
        self.inputs: dict[str, str] = {}
        self.annex: set[str] = set()
        self.reused = False  # set by publish(): the content was already published
        self.repaired: list[str] = []  # files of that published version restored from this identical copy
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._buffered_bytes: dict[str, int] = {}
        self._shard_counts: dict[str, int] = {}
        self._shards: list[dict[str, Any]] = []
        self._schema: dict[str, pa.Schema] = {}

    # -- tables ---------------------------------------------------------------------------------------------
    def write(self, table: pa.Table | pa.RecordBatch, split: str = "") -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows == 0:
            return
        prev = self._schema.setdefault(split, table.schema)
        if not prev.equals(table.schema):
            raise ValueError(f"{self.asset}: schema changed within split {split!r}:\n{prev}\nvs\n{table.schema}")
        cfg = self.store.cfg
        # Slice big inputs so no shard exceeds max_rows_per_shard.
        offset = 0
        while offset < table.num_rows:
            room = cfg.max_rows_per_shard - self._buffered_rows.get(split, 0)
            part = table.slice(offset, room)
            offset += part.num_rows
            self._buffers.setdefault(split, []).append(part)
            self._buffered_rows[split] = self._buffered_rows.get(split, 0) + part.num_rows
            self._buffered_bytes[split] = self._buffered_bytes.get(split, 0) + part.nbytes
            if (
                self._buffered_rows[split] >= cfg.max_rows_per_shard
                or self._buffered_bytes[split] >= cfg.max_bytes_per_shard
            ):
                self._flush(split)

    def add_file(self, path: Path, split: str = "", sha256: str | None = None) -> None:
        """Take a Parquet shard a worker already wrote (compressed, fsynced, hashed) into this version, after the
        shards written so far in `split`; the parent never re-reads or re-compresses it."""
        for s in list(self._buffers):
            self._flush(s)
        schema = pq.read_schema(path)
        prev = self._schema.setdefault(split, schema)
        if not prev.equals(schema, check_metadata=False):
            raise ValueError(f"{self.asset}: schema of {path} differs within split {split!r}:\n{prev}\nvs\n{schema}")
        n = self._shard_counts.get(split, 0)
        self._shard_counts[split] = n + 1
        rel = Path(split) / f"part-{n:05d}.parquet" if split else Path(f"part-{n:05d}.parquet")
        out = self.tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        try:  # a hard link: the source (a resumable cache entry) stays valid if this run is killed before publish
            os.link(path, out)
        except OSError:
            shutil.copyfile(path, out)
        rows = pq.ParquetFile(out).metadata.num_rows
        self._shards.append({"path": str(rel), "split": split, "rows": rows, "bytes": out.stat().st_size,
                             "sha256": sha256 or file_sha256(out)})

    def writer_for(self, split: str) -> Callable[[pa.Table], None]:
        return lambda t: self.write(t, split)

    def _flush(self, split: str) -> None:
        parts = self._buffers.pop(split, [])
        self._buffered_rows[split] = 0
        self._buffered_bytes[split] = 0
        if not parts:
            return
        table = pa.concat_tables(parts).combine_chunks()
        n = self._shard_counts.get(split, 0)
        self._shard_counts[split] = n + 1
        rel = Path(split) / f"part-{n:05d}.parquet" if split else Path(f"part-{n:05d}.parquet")
        out = self.tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out, compression="zstd", row_group_size=self.store.cfg.row_group_rows)
        _fsync(out)
        self._shards.append(
            {"path": str(rel), "split": split, "rows": table.num_rows, "bytes": out.stat().st_size, "sha256": file_sha256(out)}
        )

    # -- model files ----------------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """The temporary folder; model assets write their files here before publish()."""
        return self.tmp

    # -- publish --------------------------------------------------------------------------------------------
    def _seal(self) -> tuple[str, dict[str, Any]]:
        """Flush, hash every file, and write the manifest (last) into the temp folder: (version id, manifest)."""
        for split in list(self._buffers):
            self._flush(split)
        shard_paths = {s["path"] for s in self._shards}
        files = []
        for p in sorted(self.tmp.rglob("*")):
            rel = str(p.relative_to(self.tmp))
            if p.is_file() and rel not in shard_paths and rel != MANIFEST:
                _fsync(p)
                entry = {"path": rel, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
                if rel in self.annex:
                    entry["annex"] = True
                files.append(entry)
        if not self._shards and not any(not f.get("annex") for f in files):
            raise ValueError(
                f"{self.asset}: nothing to publish — the stage produced no rows and no files "
                f"(counters: {dict(self.stats) or 'none'})"
            )
        schemas = {k: v.to_string(show_schema_metadata=False) for k, v in sorted(self._schema.items())}
        h = hashlib.sha256()
        h.update(json.dumps(schemas, sort_keys=True).encode())
        for entry in sorted(self._shards + files, key=lambda e: e["path"]):
            if not entry.get("annex"):
                h.update(f"{entry['path']}:{entry['sha256']}\n".encode())
        version = h.hexdigest()[:20]
        manifest = {
            "asset": self.asset,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "schema": schemas,
            "rows": sum(s["rows"] for s in self._shards),
            "bytes": sum(s["bytes"] for s in self._shards) + sum(f["bytes"] for f in files),
            "shards": self._shards,
            "files": files,
            "inputs": dict(sorted(self.inputs.items())),
            "stats": dict(sorted(self.stats.items())),
            "metadata": self.metadata,
        }
        mf = self.tmp / MANIFEST
        mf.write_text(json.dumps(manifest, indent=1, default=str))
        _fsync(mf)
        return version, manifest

    def publish(self, extra_files: Iterable[str] | None = None) -> Version:
        from plasma_pipeline.retention import retain

        version, manifest = self._seal()
        versions = self.base / "versions"
        with self.store.lock(self.asset):
            versions.mkdir(exist_ok=True)
            final = versions / version
            if (final / MANIFEST).exists():
                # Identical content is already published: this publish is a no-op that returns that version.
                # Files of it that rotted on disk are put back from the fresh copy (same bytes, same manifest).
                manifest = json.loads((final / MANIFEST).read_text())
                self.repaired = _repair_from(final, self.tmp, manifest)
                shutil.rmtree(self.tmp)
                self.reused = True
            else:
                if final.exists():  # a folder without a manifest cannot come from a rename: clear it
                    shutil.rmtree(final)
                os.rename(self.tmp, final)
                dfd = os.open(versions, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            self._point_current(version)
            retain(self.store, self.asset)
        self._held.release()
        return Version(self.asset, final, manifest)

    def _point_current(self, version: str) -> None:
        # History first, as on object storage: a kill between the two leaves the version listed (and kept by
        # retention as the newest) with CURRENT still on the last one; the other order left CURRENT naming a
        # version that versions() did not list. Rerunning the step publishes the same id and moves CURRENT.
        append_history(self.base, {"event": "publish", "version": version})
        atomic_write_text(self.base / "CURRENT", version + "\n")

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._held.release()

    def __enter__(self) -> "VersionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.tmp.exists():
            self.abort()


# -- parallel per-shard work ----------------------------------------------------------------------------------


def _run_on_shard(fn: Callable, path: str, args: tuple) -> tuple[pa.Table, Counter]:
    stats: Counter = Counter()
    table = read_shard(Path(path))
    out = fn(table, *args, stats)
    return out, stats


def map_shards(
    fn: Callable[..., pa.Table],
    paths: Iterable[Path],
    args: tuple = (),
    processes: int = 1,
) -> Iterator[tuple[Path, pa.Table, Counter]]:
    """Apply `fn(table, *args, stats)` to each shard in a process pool, yielding results in input order.

    At most 2 × processes shards are in flight, so memory stays bounded by shard size, not corpus size. Stages
    that should resume after a kill use `plasma_pipeline.shard_work.resumable_map` instead."""
    from plasma_pipeline.shard_work import ordered_pool

    for (_, path, _), (out, stats) in ordered_pool(_run_on_shard, [(fn, str(p), args) for p in paths], processes):
        yield Path(path), out, stats
