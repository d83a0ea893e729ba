"""The shard store: every asset version is a folder of files plus a manifest, published atomically.

Layout under the store root:

    <asset key path>/versions/<version id>/   shards (part-00000.parquet, train/part-00000.parquet, ...) or model
                                               files, and manifest.json
    <asset key path>/CURRENT                   the id of the version published last
    <asset key path>/history.jsonl             one line per publish, oldest first (drives retention)

A version is written into `<asset>/.tmp-<uuid>/`, every file fsynced, the manifest written last, then the folder is
renamed to `versions/<id>`. A killed run leaves only a `.tmp-*` folder, which no reader looks at and the next
publish of that asset sweeps away. The version id is a hash of the shard hashes and the schema only — not of
timestamps or counters — so a rerun that yields identical bytes publishes the same id, and Dagster (which uses the
id as the data version) keeps downstream assets fresh.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20


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
    if not parts or any(p in (".", "..") for p in parts):
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
                raise CorruptShardError(f"{self.asset}@{self.id}: {entry['path']} is missing")
            if file_sha256(p) != entry["sha256"]:
                raise CorruptShardError(f"{self.asset}@{self.id}: {entry['path']} does not match its manifest hash")

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

    def __post_init__(self) -> None:
        if self.keep_versions < 1:
            raise ValueError("store.keep_versions must be >= 1")
        if self.max_rows_per_shard < 1 or self.max_bytes_per_shard < 1024:
            raise ValueError("store.max_rows_per_shard must be >= 1 and store.max_bytes_per_shard >= 1024")
        if self.processes < 0:
            raise ValueError("store.processes must be >= 0")

    @property
    def workers(self) -> int:
        return self.processes or os.cpu_count() or 1


class ShardStore:
    def __init__(self, cfg: StoreConfig | None = None, root: str | Path | None = None):
        self.cfg = cfg or StoreConfig()
        self.root = Path(root if root is not None else self.cfg.root).resolve()

    def current(self, asset: str) -> Version:
        d = asset_dir(self.root, asset)
        cur = d / "CURRENT"
        if not cur.exists():
            raise FileNotFoundError(f"asset {asset!r} has no published version under {d}; materialize it first")
        return self.version(asset, cur.read_text().strip())

    def version(self, asset: str, version_id: str) -> Version:
        path = asset_dir(self.root, asset) / "versions" / version_id
        mf = path / MANIFEST
        if not mf.exists():
            raise FileNotFoundError(f"asset {asset!r} has no version {version_id} (looked in {path})")
        return Version(asset, path, json.loads(mf.read_text()))

    def versions(self, asset: str) -> list[str]:
        hist = asset_dir(self.root, asset) / "history.jsonl"
        if not hist.exists():
            return []
        return [json.loads(line)["version"] for line in hist.read_text().splitlines() if line.strip()]

    def writer(self, asset: str) -> "VersionWriter":
        return VersionWriter(self, asset)


class VersionWriter:
    """Collects shards (and/or model files) for one new version; `publish()` makes it visible atomically.

    Use as a context manager: leaving the block by an exception removes the temporary folder.
    """

    def __init__(self, store: ShardStore, asset: str):
        self.store = store
        self.asset = asset
        self.base = asset_dir(store.root, asset)
        self.base.mkdir(parents=True, exist_ok=True)
        self.tmp = self.base / f".tmp-{uuid.uuid4().hex}"
        self.tmp.mkdir()
        self.stats: Counter = Counter()
        self.metadata: dict[str, Any] = {}
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
    def publish(self, extra_files: Iterable[str] | None = None) -> Version:
        for split in list(self._buffers):
            self._flush(split)
        shard_paths = {s["path"] for s in self._shards}
        files = []
        for p in sorted(self.tmp.rglob("*")):
            rel = str(p.relative_to(self.tmp))
            if p.is_file() and rel not in shard_paths and rel != MANIFEST:
                _fsync(p)
                files.append({"path": rel, "bytes": p.stat().st_size, "sha256": file_sha256(p)})
        if not self._shards and not files:
            raise ValueError(
                f"{self.asset}: nothing to publish — the stage produced no rows and no files "
                f"(counters: {dict(self.stats) or 'none'})"
            )
        schemas = {k: v.to_string(show_schema_metadata=False) for k, v in sorted(self._schema.items())}
        h = hashlib.sha256()
        h.update(json.dumps(schemas, sort_keys=True).encode())
        for entry in sorted(self._shards + files, key=lambda e: e["path"]):
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
            "stats": dict(sorted(self.stats.items())),
            "metadata": self.metadata,
        }
        mf = self.tmp / MANIFEST
        mf.write_text(json.dumps(manifest, indent=1, default=str))
        _fsync(mf)
        versions = self.base / "versions"
        versions.mkdir(exist_ok=True)
        final = versions / version
        if final.exists():
            # Identical content already published: keep the old folder (same bytes), refresh its manifest's stats.
            shutil.rmtree(self.tmp)
            (final / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        else:
            os.rename(self.tmp, final)
        dfd = os.open(versions, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._point_current(version)
        self._retain(version)
        return Version(self.asset, final, manifest)

    def _point_current(self, version: str) -> None:
        tmp = self.base / f".CURRENT.{uuid.uuid4().hex}"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.base / "CURRENT")
        with open(self.base / "history.jsonl", "a") as f:
            f.write(json.dumps({"version": version, "at": time.time()}) + "\n")

    def _retain(self, current: str) -> None:
        order: list[str] = []
        for v in reversed(self.store.versions(self.asset)):
            if v not in order:
                order.append(v)
        keep = set(order[: self.store.cfg.keep_versions]) | {current}
        versions = self.base / "versions"
        for d in versions.iterdir():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
        for d in self.base.glob(".tmp-*"):
            # Left behind by a killed run. Only sweep old ones: a concurrent writer's folder is fresh.
            if d != self.tmp and time.time() - d.stat().st_mtime > 3600:
                shutil.rmtree(d, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

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

    At most 2 × processes shards are in flight, so memory stays bounded by shard size, not corpus size.
    """
    paths = list(paths)
    if processes <= 1 or len(paths) <= 1:
        for p in paths:
            out, stats = _run_on_shard(fn, str(p), args)
            yield p, out, stats
        return
    # spawn, not fork: the caller (a Dagster run) has threads, and forking a threaded process can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
        pending: list[tuple[Path, cf.Future]] = []
        it = iter(paths)
        for p in it:
            pending.append((p, pool.submit(_run_on_shard, fn, str(p), args)))
            if len(pending) >= 2 * processes:
                break
        while pending:
            p, fut = pending.pop(0)
            out, stats = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_run_on_shard, fn, str(nxt), args)))
            yield p, out, stats
