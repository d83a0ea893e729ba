"""The dedup's second pass, in the shard workers: each reads one input shard again, keeps the rows the dedup kept
(`DedupResult.keep_mask`) that the eval hold-out (`instruct.holdout.Holdout`) does not remove, and writes,
compresses and hashes its own output shard(s). The parent only adopts the files in input order and merges the
counters and the hold-out's drops, so the output does not depend on the number of workers or the executor.

A task carries the shard's path, its keep mask (one bool per row) and the source name; the hold-out (its battery
signatures) is pickled once into the work folder and loaded once per worker process.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plasma_pipeline.dedup.budget import DOC_BYTES, MemoryPlan, shard_bytes_estimate
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.core import _run, shard_workers
from plasma_pipeline.dedup.result import DedupResult, keep_rows

HOLDOUT_FILE = "holdout.pkl"


@dataclass
class SurvivorShard:
    """One input shard's survivors: the files a worker wrote ((path, sha256), in row order; none when every row
    went), their rows, the counters of the hold-out, its drops, and the process that wrote them."""

    source: str
    files: list[tuple[Path, str]]
    rows: int
    stats: Counter
    writer_pid: int


@functools.lru_cache(maxsize=1)
def _load_holdout(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


def survivors_job(in_path: str, keep: np.ndarray, source: str, holdout_path: str, out_base: str,
                  row_group_rows: int, max_rows: int) -> dict[str, Any]:
    """One shard's survivors written as `<out_base>-<k>.parquet` (at most `max_rows` rows each)."""
    from plasma_pipeline.shard_work import write_shard_file
    from plasma_pipeline.shards import read_shard

    holdout = _load_holdout(holdout_path)
    holdout.dropped, holdout.n_dropped = [], 0  # this shard's drops only; the parent merges them in input order
    stats: Counter = Counter()
    table = holdout.filter(keep_rows(read_shard(Path(in_path)), keep, in_path), source, stats)
    files = []
    for k, lo in enumerate(range(0, table.num_rows, max_rows)):
        out = Path(f"{out_base}-{k:03d}.parquet")
        sha, _ = write_shard_file(table.slice(lo, max_rows), out, row_group_rows)
        files.append((str(out), sha))
    return {"files": files, "rows": table.num_rows, "stats": dict(stats), "dropped": holdout.dropped,
            "n_dropped": holdout.n_dropped, "pid": os.getpid()}


def survivor_workers(paths: Sequence[str], result: DedupResult, cfg: DedupConfig) -> int:
    """Workers for the second pass, sized like the signature pass: `dedup.processes`, within `dedup.memory_gb`
    beside the parent's per-document masks, and only where the shards repay a worker's start."""
    sizes = [shard_bytes_estimate(p) for p in paths]
    return shard_workers(MemoryPlan(cfg.memory_gb), cfg.processes, sizes, resident=len(result.keep) * DOC_BYTES)


def write_survivors(owned: Sequence[tuple[str, str]], result: DedupResult, holdout, work: Path, workers: int,
                    max_rows: int, row_group_rows: int) -> Iterator[SurvivorShard]:
    """Per (source, shard path) of the dedup's input, in input order: its survivors, written into `work` (a
    folder on the store's filesystem, so the version takes the files by hard link). `holdout`'s drop count and
    list are merged as each shard's result arrives, so they are those of one pass in input order."""
    work.mkdir(parents=True, exist_ok=True)
    holdout_path = work / HOLDOUT_FILE
    tmp = work / f".{HOLDOUT_FILE}.{os.getpid()}"
    tmp.write_bytes(pickle.dumps(holdout))
    os.replace(tmp, holdout_path)
    jobs = [(path, result.keep_mask(i), source, str(holdout_path), str(work / f"{i:06d}"), row_group_rows,
             max_rows) for i, (source, path) in enumerate(owned)]
    for job, r in _run(survivors_job, jobs, workers):
        holdout.merge(r["dropped"], r["n_dropped"])
        yield SurvivorShard(job[2], [(Path(p), sha) for p, sha in r["files"]], r["rows"], Counter(r["stats"]),
                            r["pid"])


def adopt_survivors(w, parts: Iterator[SurvivorShard]) -> tuple[int, set[int]]:
    """Take each shard's files into the version writer `w` (under its source's split, in order) and its counters
    into `w.stats`: (files adopted, the processes that wrote them)."""
    files, writers = 0, set()
    for part in parts:
        for path, sha in part.files:
            w.add_file(path, part.source, sha)
        w.stats.update(part.stats)
        files, writers = files + len(part.files), writers | {part.writer_pid}
    return files, writers
