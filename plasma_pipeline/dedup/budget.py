"""How the dedup keeps to `dedup.memory_gb`: the size of the parent's sort working set, the number of
partitions of each external pass, and how many shard workers run at once.

What is resident, and where:
- the parent: the interpreter and its libraries (`PROCESS_BYTES`), `DOC_BYTES` per document (the LSH mask, the
  candidate mask and the result's keep mask: one byte each), the members of exact-duplicate groups, the docs in
  candidate pairs and the confirmed edges (8-24 bytes each: proportional to the duplicates, not to the corpus),
  and one working set at a time: the (key, doc) entries of one hash-range partition of the exact keys or of one
  band (~32 bytes per entry measured, `*_ENTRY_BYTES` planned), one doc range of candidate pairs, or one
  confirmation batch of gathered shingle hashes. Each pass is split into as many partitions as it takes to fit
  the working set into what the budget leaves (`work_bytes`); freed memory goes back to the OS between passes
  (`spill.release_memory`);
- each shard worker: its interpreter and libraries (`WORKER_BYTES`), the shard's table (estimated from the file
  size before the first pass, measured after it) and one slice of `SIG_BATCH` documents. Workers run only while
  the parent waits for them (never during its sorts), and no more than fit next to the parent. When the work
  runs in the parent instead (one worker), the parent holds one shard's table the same way.

Not bounded by the budget: one shard's table (choose shard sizes accordingly), and arrays proportional to the
number of duplicates (exact-group members, candidate docs, confirmed edges, clusters).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import pyarrow as pa

PROCESS_BYTES = 256 << 20  # a parent with numpy, polars, pyarrow and scipy imported (RSS ~210 MB), plus slack
WORKER_BYTES = 208 << 20  # a spawned shard worker with numpy, polars, pyarrow imported (RSS ~195 MB)
SLICE_BYTES = 64 << 20  # one slice of SIG_BATCH documents in a worker (words, shingles, signatures)
DOC_BYTES = 3  # per document in the parent (LSH mask, candidate mask, keep mask)
EXACT_ENTRY_BYTES = 64  # per (exact key, doc) entry of one exact partition (read, concatenate, argsort, runs)
BAND_ENTRY_BYTES = 64  # per (band key, doc) entry of one band partition
PAIR_BYTES = 96  # per candidate pair of one pair partition (unique, endpoints, local indices, Jaccard)
CONFIRM_SHINGLE_BYTES = 56  # per shingle hash gathered in one confirmation batch (index, value, tag, sort)
MIN_WORK_BYTES = 16 << 20  # the working set is never planned smaller than this (the budget is then exceeded)


def shard_bytes_estimate(shard) -> int:
    """Rough in-memory size of a shard's table before it is read (0 when unknown)."""
    from plasma_pipeline.dedup.io import FileShard

    try:
        if isinstance(shard, pa.Table):
            return int(shard.nbytes)
        if isinstance(shard, FileShard):
            part = shard.part
            size = (part.stop - part.start) if part.stop is not None and part.fmt != "parquet" else os.path.getsize(part.path)
            return int(size * (4 if part.fmt == "parquet" else 2))
        if isinstance(shard, str | os.PathLike):
            path = os.fspath(shard)
            return int(os.path.getsize(path) * (4 if path.endswith(".parquet") else 2))
    except OSError:
        return 0
    return 0


@dataclass
class MemoryPlan:
    """The budget of one dedup run and the partitions chosen for it (reported under metadata["memory_plan"])."""

    memory_gb: float
    report: dict = field(default_factory=dict)

    @property
    def budget(self) -> int:
        return int(self.memory_gb * 2**30)

    def workers(self, processes: int, jobs: int, table_bytes: int, resident: int = 0) -> int:
        """Shard workers that fit next to the parent: each costs WORKER_BYTES + its table (twice: read, then
        the columns it works on) + one slice."""
        if processes <= 1 or jobs <= 1:
            return 1
        per = WORKER_BYTES + 2 * table_bytes + SLICE_BYTES
        fit = (self.budget - PROCESS_BYTES - resident) // per
        return int(max(1, min(processes, jobs, fit)))

    def work_bytes(self, resident: int) -> int:
        """What one working set may use, given what the parent holds besides it (`resident` bytes)."""
        work = self.budget - PROCESS_BYTES - resident
        if work < MIN_WORK_BYTES:
            if not self.report.get("over_budget"):
                warnings.warn(
                    f"dedup.memory_gb={self.memory_gb} leaves {work / 2**20:.0f} MiB for the dedup's working set "
                    f"after {resident / 2**20:.0f} MiB of per-document arrays and the interpreter; using "
                    f"{MIN_WORK_BYTES >> 20} MiB (raise memory_gb)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self.report["over_budget"] = True
            work = MIN_WORK_BYTES
        return int(work)

    def partitions(self, entries: int, bytes_per_entry: int, resident: int, pow2: bool = True) -> int:
        """Partitions so that entries / partitions * bytes_per_entry fits the working set (a power of two when
        partitions are hash ranges selected by the top bits)."""
        need = entries * bytes_per_entry
        p = max(1, math.ceil(need / self.work_bytes(resident)))
        if pow2:
            p = 1 << (p - 1).bit_length()
        return p
