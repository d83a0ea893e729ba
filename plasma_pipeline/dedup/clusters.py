"""Exact-duplicate groups, clusters (connected components of exact and confirmed near-duplicate edges) and the
keeper of each, by the keep rule. Documents are global indices (shard offset + row), never id strings; an id is
read (from the spill directory) only for the documents whose keeper the id decides."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plasma_pipeline.dedup.budget import EXACT_ENTRY_BYTES, MemoryPlan
from plasma_pipeline.dedup.lsh import take_sorted
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.spill import Spill, release_memory


def shard_of(offsets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    return np.searchsorted(offsets, docs, side="right") - 1


def exact_groups(sp: Spill, offsets: np.ndarray, plan: MemoryPlan, resident: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Docs sharing an exact key with another doc: (members ascending within each group, group label 0..G-1),
    found per hash-range partition of the exact keys (one partition's (key, doc) entries in memory at once)."""
    n = int(offsets[-1])
    parts = plan.partitions(n, EXACT_ENTRY_BYTES, resident)
    shift = np.uint64(64 - (parts.bit_length() - 1)) if parts > 1 else None
    members, groups = [], []
    n_groups = 0
    for p in range(parts):
        keys_l, docs_l = [], []
        for i in range(len(offsets) - 1):
            base = int(offsets[i])
            for lo, k in sp.chunks(sp.shard(i, "exact")):
                if shift is None:
                    keys_l.append(k)
                    docs_l.append(np.arange(base + lo, base + lo + len(k), dtype=np.int64))
                else:
                    sel = np.flatnonzero((k >> shift) == np.uint64(p))
                    keys_l.append(k[sel])
                    docs_l.append(sel + (base + lo))
        k, d = take_sorted(keys_l, docs_l)  # docs ascending within a key
        eq = k[1:] == k[:-1]
        if not eq.any():
            continue
        sel = np.flatnonzero(np.r_[eq, False] | np.r_[False, eq])  # entries whose key another entry shares
        del eq
        k, d = k[sel], d[sel]
        label = np.cumsum(np.r_[True, k[1:] != k[:-1]]) - 1
        members.append(d)
        groups.append(label + n_groups)
        n_groups += int(label[-1]) + 1
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
    return cat(members), cat(groups), {"exact_partitions": parts}


class KeepRule:
    """The keep rule over global doc indices: source priority, then longest / shortest / smallest id / first,
    then the id, then the input order. Per-doc attributes are read from the spill directory for the docs asked."""

    def __init__(self, cfg: DedupConfig, sp: Spill, offsets: np.ndarray, source_names: list[list[str]]):
        self.cfg, self.sp, self.offsets = cfg, sp, offsets
        prio_of = {s: i for i, s in enumerate(cfg.source_priority)}
        self.prio_tables = [np.array([prio_of.get(s, len(prio_of)) for s in names] or [0], np.int64)
                            for names in source_names]

    def _gather(self, docs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """[(positions in `docs`, shard index, rows)] per shard, reading nothing yet."""
        order = np.argsort(docs, kind="stable")
        sd = docs[order]
        shard = shard_of(self.offsets, sd)
        out = []
        bounds = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]]) if len(sd) else np.zeros(0, np.int64)
        for lo, hi in zip(bounds, np.r_[bounds[1:], len(sd)]):
            i = int(shard[lo])
            out.append((order[lo:hi], i, sd[lo:hi] - self.offsets[i]))
        return out

    def prio_rule(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prio = np.zeros(len(docs), np.int64)
        rule = np.zeros(len(docs), np.int64)
        keep = self.cfg.keep
        for pos, i, rows in self._gather(docs):
            codes = self.sp.read(self.sp.shard(i, "source"))[rows]
            prio[pos] = self.prio_tables[i][codes]
            if keep in ("longest", "shortest"):
                lengths = self.sp.read(self.sp.shard(i, "length"))[rows]
                rule[pos] = -lengths if keep == "longest" else lengths
        if keep == "first":
            rule = docs.astype(np.int64)
        return prio, rule

    def ids(self, docs: np.ndarray) -> pa.Array:
        """The ids of `docs` (in that order)."""
        chunks, positions = [], []
        for pos, i, rows in self._gather(docs):
            col = pq.read_table(self.sp.shard(i, "ids")).column(0)
            chunks.append(col.take(pa.array(rows)).combine_chunks())
            positions.append(pos)
        if not chunks:
            return pa.array([], pa.string())
        flat = pa.concat_arrays([c.cast(pa.string()) for c in chunks])
        pos = np.concatenate(positions)
        inverse = np.empty(len(pos), np.int64)
        inverse[pos] = np.arange(len(pos))
        return flat.take(pa.array(inverse))

    def keepers(self, groups: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """For each element (doc `docs[j]` in group `groups[j]`), the doc its group keeps: the smallest by
        (priority, rule, id, doc index). Ids are read only for groups where priority and rule tie."""
        if not len(docs):
            return np.zeros(0, np.int64)
        prio, rule = self.prio_rule(docs)
        order = np.lexsort((docs, rule, prio, groups))
        g, p, r = groups[order], prio[order], rule[order]
        head = np.r_[True, g[1:] != g[:-1]]
        head_at = np.flatnonzero(head)[np.cumsum(head) - 1]  # position of each element's group head
        tied = (p == p[head_at]) & (r == r[head_at])  # ties with its group's best by priority and rule
        n_tied = np.bincount(np.cumsum(head) - 1, weights=tied)
        best = docs[order][head]  # per group (in group order), without the id
        group_ids = g[head]
        need = tied & (n_tied[np.cumsum(head) - 1] >= 2)
        if need.any() and self.cfg.keep != "first":
            cand = order[need]
            ids = self.ids(docs[cand])
            id_rank = np.empty(len(cand), np.int64)
            id_rank[pc.sort_indices(ids).to_numpy()] = np.arange(len(cand))
            del ids
            release_memory()
            o2 = np.lexsort((docs[cand], id_rank, groups[cand]))
            cg = groups[cand][o2]
            first = np.r_[True, cg[1:] != cg[:-1]]
            best[np.searchsorted(group_ids, cg[first])] = docs[cand][o2][first]
        return best[np.searchsorted(group_ids, groups)]


def components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the undirected graph with edges (u[j], v[j]) over doc indices: (nodes sorted, a
    component label per node), by scipy.sparse.csgraph on the nodes that have an edge."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(u):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes = np.unique(np.concatenate([u, v]))
    idx = np.int32 if len(nodes) < 2**31 - 1 else np.int64
    iu = np.searchsorted(nodes, u).astype(idx)
    iv = np.searchsorted(nodes, v).astype(idx)
    graph = coo_matrix((np.ones(len(iu), bool), (iu, iv)), shape=(len(nodes), len(nodes))).tocsr()
    del iu, iv
    _, labels = connected_components(graph, directed=False)
    return nodes, labels.astype(np.int64)
