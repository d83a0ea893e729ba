"""LSH candidates and their confirmation, streamed through the spill directory.

1. `spill_candidates`: per band, per hash-range partition of that band, the (band hash, doc) entries of the LSH
   docs are read from every shard's band file, sorted (one argsort), and runs of equal hashes become candidate
   pairs (all pairs of a small bucket; star + chain of a large one), appended to `pairs.u64`. At most one band
   partition is in memory at a time;
2. `partition_pairs`: the appended pairs are split by ranges of the smaller doc index, each range sorted and
   made unique (a pair found in several bands counts once), so the whole set of candidates is never in memory;
3. `confirm_pairs`: per range, the true shingle Jaccard of each pair, in batches of at most a few million
   gathered shingle hashes, read from the memory-mapped shingle file (its pages dropped after each batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from plasma_pipeline.dedup.budget import BAND_ENTRY_BYTES, CONFIRM_SHINGLE_BYTES, PAIR_BYTES, MemoryPlan
from plasma_pipeline.dedup.signatures import TAG_SHIFT, sorted_unique
from plasma_pipeline.dedup.spill import MappedArray, Spill, append_raw, iter_raw, raw_len, read_raw

LOW32 = np.uint64(0xFFFFFFFF)
JACCARD_BATCH = 4_000_000  # shingle hashes sorted together when confirming a batch of pairs (at most)


def bucket_pairs(keys: np.ndarray, docs: np.ndarray, full_pairs_max: int) -> np.ndarray:
    """Candidate pairs (as lo * 2^32 + hi, uint64) from docs sharing a band hash. `docs` ascending: members of
    a bucket keep that order (stable sort), which fixes the star and chain pairs of a large bucket."""
    k, d = sort_entries(keys, docs)
    return sorted_bucket_pairs(k, d, full_pairs_max)


def sort_entries(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, docs) sorted by key, stably (docs keep their order within a key)."""
    order = np.argsort(keys, kind="stable")
    return keys[order], docs[order]


def sorted_bucket_pairs(k: np.ndarray, d: np.ndarray, full_pairs_max: int) -> np.ndarray:
    """`bucket_pairs` on entries already sorted by key."""
    eq = k[1:] == k[:-1]
    if not eq.any():
        return np.zeros(0, np.uint64)
    # only the entries of buckets with two or more members (a few, for real data) go further
    sel = np.flatnonzero(np.r_[eq, False] | np.r_[False, eq])
    del eq
    k, d = k[sel], d[sel]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
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


def take_sorted(keys_l: list[np.ndarray], docs_l: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the collected chunks and sort them by key, freeing each input as soon as it is copied (peak
    about 32 bytes per entry)."""
    keys = np.concatenate(keys_l) if keys_l else np.zeros(0, np.uint64)
    keys_l.clear()
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    docs = np.concatenate(docs_l) if docs_l else np.zeros(0, np.int64)
    docs_l.clear()
    docs = docs[order]
    return keys, docs


def spill_candidates(sp: Spill, offsets: np.ndarray, lsh_mask: np.ndarray, bands: int, full_pairs_max: int,
                     plan: MemoryPlan, resident: int) -> dict:
    """Candidate pairs of every band, appended to `pairs.u64` (each band partition's pairs sorted, unique).
    `lsh_mask`: the docs that take part (exact representatives with a word)."""
    out = sp.file("pairs.u64")
    n_lsh = int(lsh_mask.sum())
    parts = plan.partitions(n_lsh, BAND_ENTRY_BYTES, resident)
    shift = np.uint64(64 - (parts.bit_length() - 1)) if parts > 1 else None
    peak = 0
    written = 0
    for b in range(bands):
        for p in range(parts):
            keys_l, docs_l = [], []
            for i in range(len(offsets) - 1):
                path = sp.shard(i, "bands")
                base = int(offsets[i])
                for lo, k in sp.chunks(path, row=b):
                    m = lsh_mask[base + lo : base + lo + len(k)]
                    if shift is not None:
                        m = m & ((k >> shift) == np.uint64(p))
                    sel = np.flatnonzero(m)
                    keys_l.append(k[sel])
                    docs_l.append(sel + (base + lo))
            keys, docs = take_sorted(keys_l, docs_l)
            peak = max(peak, len(keys) * BAND_ENTRY_BYTES)
            pairs = sorted_unique(sorted_bucket_pairs(keys, docs, full_pairs_max))
            del keys, docs
            if len(pairs):
                append_raw(out, pairs)
                written += len(pairs)
    return {"band_partitions": parts, "band_entries": n_lsh, "band_peak_bytes": peak, "pairs_spilled": written}


def partition_pairs(sp: Spill, n_docs: int, plan: MemoryPlan, resident: int,
                    mark: Callable[[np.ndarray], None]) -> tuple[list[tuple[str, int]], dict]:
    """Split `pairs.u64` by ranges of the smaller doc index into files that are each sorted and unique; `mark`
    is called with each range's pairs (to note the docs that need shingles). Returns [(file, pairs)] in order:
    their concatenation is the sorted set of distinct candidate pairs."""
    src = sp.file("pairs.u64")
    total = raw_len(src)
    q = plan.partitions(total, PAIR_BYTES, resident, pow2=False)
    names = [str(sp.file(f"pairs.{j:05d}.u64")) for j in range(q)]
    if q == 1:
        if total:
            os.replace(src, names[0])
    else:
        for name in names:
            open(name, "wb").close()
        for chunk in iter_raw(src):
            part = ((chunk >> np.uint64(32)).astype(np.int64) * q) // max(n_docs, 1)
            order = np.argsort(part, kind="stable")
            part, chunk = part[order], chunk[order]
            bounds = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
            for lo, hi in zip(bounds, np.r_[bounds[1:], len(part)]):
                append_raw(names[int(part[lo])], chunk[lo:hi])
        if os.path.exists(src):
            os.remove(src)
    out = []
    for name in names:
        pairs = sorted_unique(read_raw(name))
        if len(pairs):
            pairs.tofile(name)
            mark(pairs)
        elif os.path.exists(name):
            os.remove(name)
        out.append((name, len(pairs)))
    return out, {"pair_partitions": q, "pairs_peak_bytes": max((c for _, c in out), default=0) * PAIR_BYTES}


def split_pairs(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (pairs >> np.uint64(32)).astype(np.int64), (pairs & LOW32).astype(np.int64)


def pair_jaccard(a: np.ndarray, b: np.ndarray, flat: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                 batch: int = JACCARD_BATCH, release: Callable[[], None] | None = None) -> np.ndarray:
    """True Jaccard of shingle sets (40-bit hashes, sorted, unique) for pairs of local doc indices, in batches
    of at most `batch` gathered hashes (a single pair may exceed it); `release` runs after each batch."""
    out = np.zeros(len(a), np.float64)
    if not len(a):
        return out
    cost = np.cumsum(counts[a] + counts[b])
    i = 0
    while i < len(a):
        done = int(cost[i - 1]) if i else 0
        j = i + max(1, min(1 << 23, int(np.searchsorted(cost[i:], done + batch, side="right"))))
        pa_, pb_ = a[i:j], b[i:j]
        parts, tags = [], []
        for side in (pa_, pb_):
            c = counts[side]
            tot = int(c.sum())
            idx = np.repeat(starts[side], c) + (np.arange(tot) - np.repeat(np.cumsum(c) - c, c))
            parts.append(flat[idx])
            tags.append(np.repeat(np.arange(len(side), dtype=np.uint64), c))
        key = np.concatenate(tags) << TAG_SHIFT
        key |= np.concatenate(parts)
        del parts, tags
        key.sort()
        dup = key[1:][key[1:] == key[:-1]]  # a value in both sets of the same pair
        inter = np.bincount((dup >> TAG_SHIFT).astype(np.int64), minlength=len(pa_)).astype(np.float64)
        union = counts[pa_] + counts[pb_] - inter
        out[i:j] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        del key, dup
        if release is not None:
            release()
        i = j
    return out


def confirm_pairs(parts: list[tuple[str, int]], need: np.ndarray, shingle_file: str | None, counts: np.ndarray,
                  threshold: float, plan: MemoryPlan, resident: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The confirmed pairs (lo, hi doc indices) of every pair range: all of them when `threshold` is 0 (or no
    shingle file), else those whose shingle Jaccard >= threshold. `need`: sorted docs with shingle sets in
    `shingle_file`, `counts` their set sizes."""
    edges_a, edges_b = [], []
    n_pairs = n_ok = 0
    mapped = None
    starts = np.zeros(len(counts), np.int64)
    if len(counts):
        np.cumsum(counts[:-1], out=starts[1:])
    batch = max(1, min(JACCARD_BATCH, plan.work_bytes(resident) // CONFIRM_SHINGLE_BYTES))
    try:
        if threshold > 0 and shingle_file is not None:
            mapped = MappedArray(shingle_file)
        for name, count in parts:
            if not count:
                continue
            a, b = split_pairs(read_raw(name))
            n_pairs += len(a)
            if mapped is not None:
                jac = pair_jaccard(np.searchsorted(need, a), np.searchsorted(need, b), mapped.array, starts, counts,
                                   batch, mapped.release)
                ok = jac >= threshold
                a, b = a[ok], b[ok]
            n_ok += len(a)
            edges_a.append(a)
            edges_b.append(b)
    finally:
        if mapped is not None:
            mapped.close()
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
    return cat(edges_a), cat(edges_b), {"pairs": n_pairs, "confirmed": n_ok, "jaccard_batch": int(batch)}
