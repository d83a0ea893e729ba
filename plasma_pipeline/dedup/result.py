"""What `dedup_tables` returns: which documents survive, per shard, and what the dedup found."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class DedupResult:
    """Survivors per shard (`keep`), the clusters as (member, keeper) global doc indices, and the metadata.

    Doc ids are not held: `ids` (and `kept_ids`, `dropped_ids`, `clusters`, for inspection and tests) read them
    again from the input shards on first use."""

    shard_offsets: np.ndarray  # global index of each shard's first doc (len = shards + 1)
    keep: np.ndarray  # bool per doc (global order)
    members: np.ndarray  # docs in a cluster of two or more, ascending (global indices)
    keepers: np.ndarray  # per member: its cluster's keeper (a global index; the keeper is a member too)
    metadata: dict = field(default_factory=dict)  # rates per source, cluster sizes, pairs, memory plan, timings
    id_loader: Callable[[int], pa.Array] | None = None  # shard index -> that shard's ids, in row order
    _ids: pa.ChunkedArray | None = field(default=None, repr=False)

    @property
    def cluster(self) -> np.ndarray:
        """Per doc: the global index of its cluster's keeper (itself for a singleton)."""
        c = np.arange(len(self.keep), dtype=np.int64)
        c[self.members] = self.keepers
        return c

    @property
    def ids(self) -> pa.ChunkedArray:
        if self._ids is None:
            if self.id_loader is None:
                raise ValueError("this DedupResult has no id loader")
            shards = len(self.shard_offsets) - 1
            self._ids = pa.chunked_array([self.id_loader(i) for i in range(shards)], pa.string())
        return self._ids

    def keep_mask(self, shard_index: int) -> np.ndarray:
        lo, hi = self.shard_offsets[shard_index], self.shard_offsets[shard_index + 1]
        return self.keep[lo:hi]

    def filter_table(self, shard_index: int, table: pa.Table) -> pa.Table:
        """Second pass: the surviving rows of shard `shard_index` (the same rows, in the same order, as read)."""
        return keep_rows(table, self.keep_mask(shard_index), f"shard {shard_index}")

    def kept_ids(self) -> set[str]:
        return set(self.ids.filter(pa.array(self.keep)).to_pylist())

    def dropped_ids(self) -> set[str]:
        return set(self.ids.filter(pa.array(~self.keep)).to_pylist())

    def clusters(self, min_size: int = 2) -> list[list[str]]:
        """Clusters as lists of ids (keeper first, then the others in input order), ordered by keeper."""
        cluster = self.cluster
        order = np.argsort(cluster, kind="stable")
        ids = self.ids.to_pylist()
        out: list[list[str]] = []
        c = cluster[order]
        bounds = np.flatnonzero(np.diff(c)) + 1
        for grp in np.split(order, bounds):
            if len(grp) >= min_size:
                keeper = int(cluster[grp[0]])
                out.append([ids[keeper]] + [ids[i] for i in grp if i != keeper])
        return out


def keep_rows(table: pa.Table, mask: np.ndarray, shard: str) -> pa.Table:
    """The rows of `table` that `mask` (one bool per row, as the dedup index saw the shard) keeps, in order."""
    if table.num_rows != len(mask):
        raise ValueError(f"{shard} has {table.num_rows} rows, the dedup index saw {len(mask)}")
    return table.filter(pa.array(mask))
