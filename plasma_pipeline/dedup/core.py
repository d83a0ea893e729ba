"""Stage 5: exact dedup, then MinHash LSH across the whole corpus, confirmed pairs, union-find clusters.

Flow (`dedup_tables`):
1. per shard, in a process pool: exact hash of the normalised text and the LSH band hashes (`signature_shard`);
   only these compact arrays (plus id, source, length) come back, never the texts;
2. exact groups by sorting the exact hashes; one representative each (the keep rule) goes on to LSH;
3. per band, sort the band hashes and turn runs of equal hashes into candidate pairs;
4. candidate pairs are confirmed by the true Jaccard of their shingle sets, recomputed per shard only for the
   documents that appear in a candidate pair;
5. union-find over exact groups and confirmed pairs; one keeper per cluster by a deterministic rule;
6. `DedupResult.filter_table` (second pass) keeps the survivors of each shard.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from plasma_pipeline.dedup import minhash
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.io import Shard, load_shard

_SET_BITS = 40  # shingle hash bits kept for the exact Jaccard (collisions ~ k^2 / 2^40 per pair: negligible)
_TAG_SHIFT = np.uint64(_SET_BITS)
_SET_MASK = np.uint64((1 << _SET_BITS) - 1)
_SIG_BATCH = 4096  # docs per slice when computing signatures (bounds working memory per worker)
_JACCARD_BATCH = 4_000_000  # shingle hashes sorted together when confirming a batch of pairs


@dataclass
class ShardSignatures:
    """What one shard contributes to the corpus-wide index (picklable, compact)."""

    ids: pa.Array  # document ids (string)
    sources: pa.Array  # source names (string)
    lengths: np.ndarray  # text length in characters (int64)
    exact: np.ndarray  # hash of the normalised text: its lower-cased word sequence (uint64)
    bands: np.ndarray  # docs x bands band hashes (uint64)
    has_shingles: np.ndarray  # False for docs without a single word (kept out of LSH)
    seconds: float = 0.0  # time spent on this shard


def signature_shard(table: pa.Table, cfg: DedupConfig) -> ShardSignatures:
    """Exact hashes and LSH band hashes of one shard (`table` has id, source and text columns).

    Texts are processed in slices of `_SIG_BATCH` docs, so working memory does not grow with the shard.
    """
    t0 = time.perf_counter()
    texts = table[cfg.text_field]
    exact, bands, has_sh = [], [], []
    for lo in range(0, max(len(texts), 1), _SIG_BATCH):
        part = texts.slice(lo, _SIG_BATCH)
        word_h, n_words = minhash.word_hashes(part, cfg.seed)
        sh, n_sh = minhash.shingle_hashes(word_h, n_words, cfg.ngram)
        sig = minhash.signatures(sh, n_sh, cfg.num_perm, cfg.seed, cfg.backend)
        ex = minhash.sequence_hashes(word_h, n_words)
        wordless = np.flatnonzero(n_words == 0)
        if len(wordless):  # no words (empty, punctuation only): exact key from the stripped text itself
            raw = pl.from_arrow(part.take(pa.array(wordless))).cast(pl.String).fill_null("").str.strip_chars()
            ex[wordless] = raw.hash(seed=cfg.seed).to_numpy().astype(np.uint64)
        exact.append(ex)
        bands.append(minhash.band_hashes(sig, cfg.bands, cfg.rows))
        has_sh.append(n_sh > 0)
    return ShardSignatures(
        ids=table[cfg.id_field].combine_chunks(),
        sources=pc.cast(table[cfg.source_field], pa.string()).combine_chunks(),
        lengths=pc.fill_null(pc.utf8_length(texts), 0).to_numpy().astype(np.int64),
        exact=np.concatenate(exact),
        bands=np.concatenate(bands),
        has_shingles=np.concatenate(has_sh),
        seconds=time.perf_counter() - t0,
    )


def _signature_job(shard: Shard, shard_index: int, cfg: DedupConfig) -> ShardSignatures:
    cols = [cfg.id_field, cfg.source_field, cfg.text_field]
    return signature_shard(load_shard(shard, cfg, shard_index, columns=cols), cfg)


def shingle_sets(texts, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """The shingle set of each text as the confirm step compares them: (flat sorted unique 40-bit shingle
    hashes, count per text)."""
    sh, n_sh = minhash.text_shingles(texts, cfg.ngram, cfg.seed)
    # one sort of (row << 40 | top 40 bits of the hash) gives each row's set, sorted and unique
    key = _sorted_unique((np.repeat(np.arange(len(n_sh), dtype=np.uint64), n_sh) << _TAG_SHIFT) | (sh >> np.uint64(24)))
    counts = np.bincount((key >> _TAG_SHIFT).astype(np.int64), minlength=len(n_sh)).astype(np.int64)
    return key & _SET_MASK, counts


def _shingle_job(shard: Shard, shard_index: int, rows: np.ndarray, cfg: DedupConfig):
    """Sorted unique shingle hashes of the given rows of one shard: (flat hashes, count per row)."""
    table = load_shard(shard, cfg, shard_index, columns=[cfg.id_field, cfg.source_field, cfg.text_field])
    return shingle_sets(table[cfg.text_field].take(pa.array(rows)), cfg)


def _warm(_: int) -> int:
    return os.getpid()


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by one sort (numpy 2's hash-based unique is several times slower on large uint64 arrays)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    return a[np.r_[True, a[1:] != a[:-1]]]


class _Pool:
    """Worker processes from a forkserver that has imported this module once (or inline when processes == 1).

    Children fork from the single-threaded forkserver, never from the caller (which may run polars/rensa
    thread pools or Dagster), and skip re-importing polars/pyarrow/numpy. Each child caps its Rust thread
    pools to its share of the cores.
    """

    def __init__(self, processes: int, n_tasks: int):
        self.processes = max(1, min(processes, n_tasks))
        self.executor = None
        if self.processes > 1:
            per = str(max(1, (os.cpu_count() or 1) // self.processes))
            saved = {k: os.environ.get(k) for k in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS")}
            os.environ.update({"POLARS_MAX_THREADS": per, "RAYON_NUM_THREADS": per})
            try:
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
                self.executor = ProcessPoolExecutor(self.processes, mp_context=ctx)
                list(self.executor.map(_warm, range(self.processes)))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def map(self, fn, *iterables):
        if self.executor is None:
            return list(map(fn, *iterables))
        return list(self.executor.map(fn, *iterables))

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()


class UnionFind:
    """Union-find over 0..n-1 with path halving; the smaller root index wins a union (deterministic)."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return int(x)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True

    def roots(self) -> np.ndarray:
        """Root of every element (vectorised pointer jumping)."""
        p = self.parent.copy()
        while True:
            pp = p[p]
            if np.array_equal(pp, p):
                return p
            p = pp


@dataclass
class DedupResult:
    """Which documents survive, per shard, and what the dedup found."""

    shard_offsets: np.ndarray  # global index of each shard's first doc (len = shards + 1)
    keep: np.ndarray  # bool per doc (global order)
    cluster: np.ndarray  # per doc: global index of its cluster's keeper
    ids: pa.ChunkedArray  # doc ids (global order)
    metadata: dict = field(default_factory=dict)  # rates per source, cluster sizes, pairs, index bytes, timings

    def keep_mask(self, shard_index: int) -> np.ndarray:
        lo, hi = self.shard_offsets[shard_index], self.shard_offsets[shard_index + 1]
        return self.keep[lo:hi]

    def filter_table(self, shard_index: int, table: pa.Table) -> pa.Table:
        """Second pass: the surviving rows of shard `shard_index` (the same rows, in the same order, as read)."""
        mask = self.keep_mask(shard_index)
        if table.num_rows != len(mask):
            raise ValueError(f"shard {shard_index} has {table.num_rows} rows, the dedup index saw {len(mask)}")
        return table.filter(pa.array(mask))

    def kept_ids(self) -> set[str]:
        return set(self.ids.filter(pa.array(self.keep)).to_pylist())

    def dropped_ids(self) -> set[str]:
        return set(self.ids.filter(pa.array(~self.keep)).to_pylist())

    def clusters(self, min_size: int = 2) -> list[list[str]]:
        """Clusters as lists of ids (keeper first), for inspection and tests."""
        order = np.argsort(self.cluster, kind="stable")
        ids = self.ids.to_pylist()
        out: list[list[str]] = []
        c = self.cluster[order]
        bounds = np.flatnonzero(np.diff(c)) + 1
        for grp in np.split(order, bounds):
            if len(grp) >= min_size:
                keeper = int(self.cluster[grp[0]])
                out.append([ids[keeper]] + [ids[i] for i in grp if i != keeper])
        return out


@dataclass
class ReferenceMatch:
    """Per document of a matched table: the reference it duplicates (-1: none)."""

    exact: np.ndarray  # reference with the same normalised text (the exact-dedup key), else -1
    near: np.ndarray  # most similar reference sharing an LSH band, confirmed by shingle Jaccard, else -1
    jaccard: np.ndarray  # that pair's shingle Jaccard (nan when none, or when confirmation is off)


class ReferenceIndex:
    """A few reference documents (an evaluation battery, a block list) indexed by the dedup signature, to find the
    documents of a corpus that `dedup_tables` would merge with one of them: the same exact key, or a shared LSH
    band confirmed by the true shingle Jaccard >= `confirm_threshold` (any shared band when it is 0). Same
    normalisation, shingles, MinHash kernel, bands and seed as the dedup stage; `match` is called per shard.

    `references` has the config's id, source and text columns."""

    def __init__(self, references: pa.Table, cfg: DedupConfig):
        self.cfg = cfg
        self.ids = references[cfg.id_field].to_pylist()
        # band -> {band hash: reference indices}; references without a single word stay out of LSH
        self.bands: list[dict[int, list[int]]] = [{} for _ in range(cfg.bands)]
        self.exact = np.zeros(0, np.uint64)
        self.flat, self.counts = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        if references.num_rows:
            sig = signature_shard(references, cfg)
            self.exact = sig.exact
            for r in np.flatnonzero(sig.has_shingles).tolist():
                for b in range(cfg.bands):
                    self.bands[b].setdefault(int(sig.bands[r, b]), []).append(r)
            self.flat, self.counts = shingle_sets(references[cfg.text_field], cfg)
        self._band_keys = [np.fromiter(d, np.uint64, len(d)) for d in self.bands]

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, table: pa.Table, sig: ShardSignatures | None = None) -> ReferenceMatch:
        """Exact and confirmed near duplicates of the references among `table`'s rows (`sig`: its signatures,
        when the caller has them already)."""
        cfg, n = self.cfg, table.num_rows
        exact = np.full(n, -1, np.int64)
        near = np.full(n, -1, np.int64)
        jac_out = np.full(n, np.nan)
        if n == 0 or not len(self):
            return ReferenceMatch(exact, near, jac_out)
        sig = sig or signature_shard(table, cfg)
        order = np.argsort(self.exact, kind="stable")
        pos = np.minimum(np.searchsorted(self.exact[order], sig.exact), len(order) - 1)
        hit = self.exact[order][pos] == sig.exact
        exact[hit] = order[pos[hit]]

        docs, refs = [], []
        for b in range(cfg.bands):
            if not len(self._band_keys[b]):
                continue
            col = sig.bands[:, b]
            for d in np.flatnonzero(np.isin(col, self._band_keys[b]) & sig.has_shingles).tolist():
                for r in self.bands[b][int(col[d])]:
                    docs.append(d)
                    refs.append(r)
        if not docs:
            return ReferenceMatch(exact, near, jac_out)
        pairs = np.unique(np.array(docs, np.int64) * len(self) + np.array(refs, np.int64))
        d_idx, r_idx = pairs // len(self), pairs % len(self)
        if cfg.confirm_threshold > 0:
            need = np.unique(d_idx)
            flat_d, counts_d = shingle_sets(table[cfg.text_field].take(pa.array(need)), cfg)
            flat = np.concatenate([self.flat, flat_d])
            counts = np.concatenate([self.counts, counts_d])
            starts = np.zeros(len(counts), np.int64)
            np.cumsum(counts[:-1], out=starts[1:])
            jac = _pair_jaccard(r_idx, len(self) + np.searchsorted(need, d_idx), flat, starts, counts)
            ok = jac >= cfg.confirm_threshold
        else:
            jac = np.full(len(pairs), np.nan)
            ok = np.ones(len(pairs), bool)
        # per document the most similar confirmed reference (ties, and no confirmation: the first reference)
        for d, r, j in zip(d_idx[ok].tolist(), r_idx[ok].tolist(), jac[ok].tolist()):
            if near[d] < 0 or j > jac_out[d]:
                near[d], jac_out[d] = r, j
        return ReferenceMatch(exact, near, jac_out)


def _keeper_rank(
    cfg: DedupConfig, ids: pa.ChunkedArray, sources: np.ndarray, source_names: list[str], lengths: np.ndarray
) -> np.ndarray:
    """Rank of every doc under the keep rule (0 = best): source priority, then the rule, then id, then order."""
    n = len(lengths)
    order_key = np.arange(n)
    id_rank = np.empty(n, np.int64)
    id_rank[pc.sort_indices(ids).to_numpy()] = np.arange(n)
    prio_of_name = {s: i for i, s in enumerate(cfg.source_priority)}
    prio = np.array([prio_of_name.get(s, len(prio_of_name)) for s in source_names], np.int64)[sources]
    if cfg.keep == "longest":
        rule = -lengths
    elif cfg.keep == "shortest":
        rule = lengths
    elif cfg.keep == "smallest_id":
        rule = np.zeros(n, np.int64)
    else:  # first
        rule = order_key
    order = np.lexsort((order_key, id_rank, rule, prio))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return rank


def _group_min(groups: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each element, the index of the element with the smallest rank in its group."""
    order = np.lexsort((rank, groups))
    g = groups[order]
    first = np.ones(len(g), bool)
    first[1:] = g[1:] != g[:-1]
    head = order[first]
    return head[np.cumsum(first) - 1][np.argsort(order)]


def _bucket_pairs(keys: np.ndarray, docs: np.ndarray, full_pairs_max: int) -> np.ndarray:
    """Candidate pairs (as lo * 2^32 + hi, uint64) from docs sharing a band hash."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    d = docs[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
    multi = sizes >= 2
    starts, sizes = starts[multi], sizes[multi]
    out = []
    for size in np.unique(sizes[sizes <= full_pairs_max]):
        s = starts[sizes == size]
        iu, ju = np.triu_indices(int(size), 1)
        out.append(np.stack([d[s[:, None] + iu].ravel(), d[s[:, None] + ju].ravel()], 1))
    big = sizes > full_pairs_max
    if big.any():  # star (first member with every other) + chain (neighbours), in bucket order
        s, z = starts[big], sizes[big]
        member = np.repeat(s, z - 1) + (np.arange(int((z - 1).sum())) - np.repeat(np.cumsum(z - 1) - (z - 1), z - 1))
        out.append(np.stack([d[np.repeat(s, z - 1)], d[member + 1]], 1))
        out.append(np.stack([d[member], d[member + 1]], 1))
    if not out:
        return np.zeros(0, np.uint64)
    pairs = np.concatenate(out).astype(np.uint64)
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return (lo << np.uint64(32)) | hi


def _pair_jaccard(a: np.ndarray, b: np.ndarray, flat: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """True Jaccard of shingle sets (40-bit hashes, sorted, unique) for pairs of local doc indices."""
    out = np.zeros(len(a), np.float64)
    i = 0
    while i < len(a):
        cost = np.cumsum(counts[a[i:]] + counts[b[i:]])
        j = i + max(1, min(1 << 23, int(np.searchsorted(cost, _JACCARD_BATCH, side="right"))))
        pa_, pb_ = a[i:j], b[i:j]
        parts, tags = [], []
        for side in (pa_, pb_):
            c = counts[side]
            tot = int(c.sum())
            idx = np.repeat(starts[side], c) + (np.arange(tot) - np.repeat(np.cumsum(c) - c, c))
            parts.append(flat[idx])
            tags.append(np.repeat(np.arange(len(side), dtype=np.uint64), c))
        key = np.sort((np.concatenate(tags) << _TAG_SHIFT) | np.concatenate(parts))
        dup = key[1:][key[1:] == key[:-1]]  # a value in both sets of the same pair
        inter = np.bincount((dup >> _TAG_SHIFT).astype(np.int64), minlength=len(pa_)).astype(np.float64)
        union = counts[pa_] + counts[pb_] - inter
        out[i:j] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        i = j
    return out


def _size_histogram(sizes: np.ndarray) -> dict[str, int]:
    edges = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 100), (101, 1000), (1001, None)]
    hist = {}
    for lo, hi in edges:
        label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi else f">{lo - 1}")
        n = int(((sizes >= lo) & (sizes <= (hi if hi else sizes.max(initial=0)))).sum())
        if n:
            hist[label] = n
    return hist


def dedup_tables(shards: Sequence[Shard], cfg: DedupConfig, stats: Counter) -> DedupResult:
    """Deduplicate a corpus given as shards (Parquet/jsonl paths, tables, or picklable callables returning tables).

    Counts `kept`, `dropped/exact_duplicate`, `dropped/near_duplicate`, `candidates/pairs`,
    `candidates/confirmed`, `candidates/rejected_by_confirm` into `stats`. Filter each shard afterwards with
    `result.filter_table(i, table)`.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pool = _Pool(cfg.processes, len(shards))
    try:
        timings["pool_start_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        sigs: list[ShardSignatures] = pool.map(_signature_job, shards, range(len(shards)), [cfg] * len(shards))
        timings["signatures_s"] = time.perf_counter() - t
        result = _dedup_from_signatures(sigs, shards, cfg, stats, pool, timings)
    finally:
        pool.close()
    timings["total_s"] = time.perf_counter() - t0
    result.metadata["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return result


def _dedup_from_signatures(sigs, shards, cfg: DedupConfig, stats: Counter, pool: _Pool, timings) -> DedupResult:
    t = time.perf_counter()
    sizes = np.array([len(s.lengths) for s in sigs], np.int64)
    offsets = np.zeros(len(sigs) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    n = int(offsets[-1])
    ids = pa.chunked_array([s.ids for s in sigs], pa.string())
    src_dict = pa.chunked_array([s.sources for s in sigs], pa.string()).combine_chunks().dictionary_encode()
    source_names = src_dict.dictionary.to_pylist()
    sources = src_dict.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.concatenate([s.lengths for s in sigs]) if n else np.zeros(0, np.int64)
    exact = np.concatenate([s.exact for s in sigs]) if n else np.zeros(0, np.uint64)
    has_sh = np.concatenate([s.has_shingles for s in sigs]) if n else np.zeros(0, bool)

    # The LSH index: bands x docs uint64, in RAM or memory-mapped on disk above max_index_mb.
    index_bytes = n * cfg.bands * 8
    index_on_disk = index_bytes > cfg.max_index_mb * 2**20
    tmpdir = None
    if index_on_disk:
        tmpdir = tempfile.TemporaryDirectory(prefix="plasma-dedup-")
        index = np.memmap(os.path.join(tmpdir.name, "bands.u64"), np.uint64, "w+", shape=(cfg.bands, max(n, 1)))
    else:
        index = np.empty((cfg.bands, n), np.uint64)
    for s, lo in zip(sigs, offsets[:-1]):
        index[:, lo : lo + len(s.lengths)] = s.bands.T
        s.bands = None  # free the per-shard copy as we go
    timings["index_s"] = time.perf_counter() - t

    # 1. exact groups, 2. keeper ranks
    t = time.perf_counter()
    rank = _keeper_rank(cfg, ids, sources, source_names, lengths)
    exact_keeper = _group_min(exact, rank) if n else np.zeros(0, np.int64)
    is_rep = exact_keeper == np.arange(n)
    timings["exact_s"] = time.perf_counter() - t

    # 3. LSH buckets over exact representatives that have shingles
    t = time.perf_counter()
    lsh_docs = np.flatnonzero(is_rep & has_sh)
    keys_all = []
    peak_band_bytes = 0
    for b in range(cfg.bands):
        keys = np.asarray(index[b, lsh_docs])
        keys_all.append(_bucket_pairs(keys, lsh_docs, cfg.full_pairs_max))
        peak_band_bytes = max(peak_band_bytes, keys.nbytes * 3)
    pairs = _sorted_unique(np.concatenate(keys_all)) if keys_all else np.zeros(0, np.uint64)
    del keys_all
    if tmpdir is not None:
        del index
        tmpdir.cleanup()
    pa_idx = (pairs >> np.uint64(32)).astype(np.int64)
    pb_idx = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    timings["lsh_s"] = time.perf_counter() - t

    # 4. confirm candidates by the true Jaccard of their shingle sets
    t = time.perf_counter()
    confirm_bytes = 0
    if cfg.confirm_threshold > 0 and len(pairs):
        need = _sorted_unique(np.concatenate([pa_idx, pb_idx]))
        shard_of = np.searchsorted(offsets, need, side="right") - 1
        jobs = [(si, need[shard_of == si] - offsets[si]) for si in np.unique(shard_of)]
        res = pool.map(
            _shingle_job,
            [shards[si] for si, _ in jobs],
            [si for si, _ in jobs],
            [rows for _, rows in jobs],
            [cfg] * len(jobs),
        )
        flat = np.concatenate([r[0] for r in res])
        counts = np.concatenate([r[1] for r in res])
        starts = np.zeros(len(counts), np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        confirm_bytes = flat.nbytes + counts.nbytes * 2
        local = np.searchsorted(need, pa_idx), np.searchsorted(need, pb_idx)
        jac = _pair_jaccard(local[0], local[1], flat, starts, counts)
        ok = jac >= cfg.confirm_threshold
        del flat
    else:
        jac = np.full(len(pairs), np.nan)
        ok = np.ones(len(pairs), bool)
    timings["confirm_s"] = time.perf_counter() - t

    # 5. union-find over confirmed pairs of representatives; exact duplicates hang off their representative
    t = time.perf_counter()
    uf = UnionFind(n)
    for a, b in zip(pa_idx[ok].tolist(), pb_idx[ok].tolist()):
        uf.union(a, b)
    root = uf.roots()[exact_keeper] if n else np.zeros(0, np.int64)
    cluster = _group_min(root, rank) if n else np.zeros(0, np.int64)
    keep = cluster == np.arange(n)
    timings["cluster_s"] = time.perf_counter() - t

    n_exact_dropped = int((~is_rep).sum())
    n_kept = int(keep.sum())
    stats["kept"] += n_kept
    stats["dropped/exact_duplicate"] += n_exact_dropped
    stats["dropped/near_duplicate"] += n - n_kept - n_exact_dropped
    stats["candidates/pairs"] += len(pairs)
    stats["candidates/confirmed"] += int(ok.sum())
    stats["candidates/rejected_by_confirm"] += int((~ok).sum())
    stats["skipped/no_words"] += int((~has_sh).sum())

    per_source = {}
    for code, name in enumerate(source_names):
        m = sources == code
        total = int(m.sum())
        dropped = int((m & ~keep).sum())
        per_source[name] = {"docs": total, "dropped": dropped, "dup_rate": round(dropped / total, 6) if total else 0.0}
    cluster_sizes = np.bincount(cluster, minlength=n)[keep] if n else np.zeros(0, np.int64)
    meta = {
        "docs": n,
        "kept": n_kept,
        "dup_rate": round(1 - n_kept / n, 6) if n else 0.0,
        "dup_rate_per_source": per_source,
        "cluster_size_histogram": _size_histogram(cluster_sizes),
        "largest_cluster": int(cluster_sizes.max(initial=0)),
        "exact_duplicates": n_exact_dropped,
        "candidate_pairs": len(pairs),
        "confirmed_pairs": int(ok.sum()),
        "rejected_by_confirm": int((~ok).sum()),
        "index_bytes": int(index_bytes),
        "index_on_disk": bool(index_on_disk),
        "index_peak_band_bytes": int(peak_band_bytes),
        "confirm_shingle_bytes": int(confirm_bytes),
        "lsh_threshold": round(cfg.lsh_threshold, 4),
        "config": {
            "ngram": cfg.ngram,
            "num_perm": cfg.num_perm,
            "bands": cfg.bands,
            "rows": cfg.rows,
            "confirm_threshold": cfg.confirm_threshold,
            "keep": cfg.keep,
            "backend": cfg.backend,
        },
        "signature_seconds_per_shard": [round(s.seconds, 4) for s in sigs],
    }
    return DedupResult(shard_offsets=offsets, keep=keep, cluster=cluster, ids=ids, metadata=meta)
