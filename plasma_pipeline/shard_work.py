"""Per-shard stage work that resumes: each input shard's result is written, compressed and hashed by the worker
that computed it, and kept under the asset's shard cache until the version that uses it is published.

The cache key of one result is (stage code version, function, the input shard's sha256 from its manifest), so a
run killed at 80% and restarted recomputes only the missing shards, and because every result file is written by
the same deterministic code, the published version is byte-identical to an uninterrupted run's. A result is
complete when its `.json` sidecar exists (written last, atomically); a half-written `.parquet` without one is
ignored and overwritten.

Layout: `<asset>/work/shard-cache/<key>.parquet` + `<key>.json` ({rows, bytes, sha256, stats}).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CACHE_DIR = "shard-cache"


def ordered_pool(func: Callable, items: Iterable[tuple], processes: int,
                 env: dict[str, str] | None = None) -> Iterator[tuple[tuple, Any]]:
    """`func(*item)` for each item through the current executor (`plasma_pipeline.executor`: local spawned
    processes by default, 1 = inline), results yielded in input order, at most 2 x processes in flight so memory
    follows shard size, not corpus size."""
    from plasma_pipeline import executor

    return executor.ordered_map(func, items, processes, env=env)


@dataclass
class ShardResult:
    """One input shard's output file (None when every row was dropped) and its counters."""

    input: Path
    file: Path | None
    rows: int
    sha256: str
    stats: Counter
    reused: bool


@contextlib.contextmanager
def environ_set(values: dict[str, str], keep_existing: bool = False) -> Iterator[None]:
    """Set environment variables while a pool spawns its workers (they inherit them), then restore them.
    With `keep_existing`, a variable the user already set is left as it is."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if not (keep_existing and k in os.environ):
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_shard_file(table: pa.Table, out: Path, row_group_rows: int) -> tuple[str, int]:
    """A worker's output shard, zstd-compressed, fsynced and renamed into place: (sha256, bytes)."""
    from plasma_pipeline.shards import file_sha256

    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    pq.write_table(table.combine_chunks(), tmp, compression="zstd", row_group_size=row_group_rows)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return file_sha256(out), out.stat().st_size


def _compute_and_write(fn: Callable, in_path: str, args: tuple, out_base: str, row_group_rows: int) -> dict:
    from plasma_pipeline.shards import read_shard

    stats: Counter = Counter()
    table = fn(read_shard(Path(in_path)), *args, stats)
    out = Path(out_base + ".parquet")
    info: dict[str, Any] = {"rows": table.num_rows, "stats": dict(stats), "sha256": "", "bytes": 0}
    if table.num_rows:
        info["sha256"], info["bytes"] = write_shard_file(table, out, row_group_rows)
    side = Path(out_base + ".json")
    tmp = side.with_name(f".{side.name}.{os.getpid()}")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, side)  # written last: the result is complete
    return info


def cache_key(code_version: str, fn: Callable, input_sha256: str, args_key: str = "") -> str:
    blob = f"{code_version}\n{fn.__module__}.{fn.__qualname__}\n{input_sha256}\n{args_key}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def resumable_map(
    cache: Path,
    fn: Callable[..., pa.Table],
    inputs: list[tuple[Path, str]],
    args: tuple,
    code_version: str,
    processes: int = 1,
    row_group_rows: int = 5_000,
    args_key: str = "",
    log: Callable[[str], None] | None = None,
) -> Iterator[ShardResult]:
    """Apply `fn(table, *args, stats)` to each (shard path, shard sha256), reusing results cached by an earlier
    (killed) run with the same code version, function and arguments; yields results in input order.

    `args_key` must change whenever `args` would change the output without changing `code_version` (e.g. the
    versions of classifier models passed by path)."""
    cache.mkdir(parents=True, exist_ok=True)
    keys = [cache_key(code_version, fn, sha, args_key) for _, sha in inputs]
    done = {k for k in keys if (cache / f"{k}.json").exists()}
    if log:
        log(f"reused {len(done)} of {len(inputs)} shards from an earlier run" if done
            else f"processing {len(inputs)} shards")
    todo = [(fn, str(p), args, str(cache / k), row_group_rows) for (p, _), k in zip(inputs, keys) if k not in done]
    computed = ordered_pool(_compute_and_write, todo, processes)
    for (path, _), key in zip(inputs, keys):
        reused = key in done
        if not reused:
            next(computed)  # in input order: this is the result for `key`
        info = json.loads((cache / f"{key}.json").read_text())
        out = cache / f"{key}.parquet"
        yield ShardResult(path, out if info["rows"] else None, info["rows"], info["sha256"],
                          Counter(info["stats"]), reused)


def clear_cache(cache: Path) -> None:
    shutil.rmtree(cache, ignore_errors=True)
