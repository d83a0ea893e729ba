"""Vectorised shingling, MinHash signatures and LSH band hashes.

Text -> lower-cased `\\w+` words (polars, in Rust) -> 64-bit word hashes -> word n-gram hashes combined in numpy
-> MinHash signature (num_perm uint32 per doc) -> one uint64 hash per band. Only the band hashes outlive a shard.

Two kernels compute the same kind of signature from the same shingle hashes:
- numpy: h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32 on the low 32 bits of the shingle hash (multiply-add-shift,
  2-universal), minimum per document with `np.minimum.reduceat`;
- rensa: `RMinHash.digest_matrix_from_flat_token_hashes` (Rust, its own permutation family).
Both estimate the Jaccard of the same shingle sets, so LSH behaves the same up to sampling noise.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pyarrow as pa

_U64 = np.uint64
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_POLY = _U64(0x9E3779B97F4A7C15)
_LOW32 = _U64(0xFFFFFFFF)
EMPTY = np.uint32(0xFFFFFFFF)  # signature value of a document with no shingles
_BLOCK = 1024  # shingles per numpy block (block x num_perm uint64 stays in L2 cache; tuned on 2 cores)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> _U64(30)
    x *= _MIX1
    x ^= x >> _U64(27)
    x *= _MIX2
    x ^= x >> _U64(31)
    return x


def _as_text_series(texts) -> "pl.Series":
    import polars as pl  # imported on use: the Dagster definitions load without polars (GPU-only hosts)

    if isinstance(texts, pa.ChunkedArray | pa.Array):
        s = pl.from_arrow(texts)
    else:
        s = pl.Series(values=list(texts), dtype=pl.String)
    return s.cast(pl.String).fill_null("")


def word_hashes(texts, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of the lower-cased `\\w+` words of every text, and the word count per text."""
    words = _as_text_series(texts).str.to_lowercase().str.extract_all(r"\w+")
    lens = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls()  # empty lists explode to one null each
    hashes = flat.hash(seed=seed).to_numpy().astype(np.uint64, copy=False) if len(flat) else np.zeros(0, np.uint64)
    return hashes, lens


def shingle_hashes(word_h: np.ndarray, lens: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word n-grams of each doc (flat) and the count per doc.

    A doc shorter than `ngram` words yields one shingle of all its words; an empty doc yields none.
    """
    m = len(lens)
    n_sh = np.where(lens == 0, 0, np.maximum(lens - ngram + 1, 1)).astype(np.int64)
    if n_sh.sum() == 0:
        return np.zeros(0, np.uint64), n_sh
    padded_lens = lens + (ngram - 1)
    po = np.zeros(m + 1, np.int64)
    np.cumsum(padded_lens, out=po[1:])
    total = int(po[-1])
    padded = np.zeros(total, np.uint64)
    word_start = np.zeros(m + 1, np.int64)
    np.cumsum(lens, out=word_start[1:])
    pos_in_doc = np.arange(len(word_h), dtype=np.int64) - np.repeat(word_start[:-1], lens)
    padded[np.repeat(po[:-1], lens) + pos_in_doc] = word_h
    span = total - ngram + 1
    h = padded[:span].copy()
    for k in range(1, ngram):
        h *= _POLY
        h += padded[k : k + span]
    _splitmix(h)
    sh_start = np.zeros(m + 1, np.int64)
    np.cumsum(n_sh, out=sh_start[1:])
    starts = np.repeat(po[:-1], n_sh) + (np.arange(int(sh_start[-1]), dtype=np.int64) - np.repeat(sh_start[:-1], n_sh))
    return h[starts], n_sh


def sequence_hashes(word_h: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """One uint64 per doc for its exact word sequence: wrapping sum of position-salted word hashes, mixed.

    Two docs get the same value when they have the same lower-cased words in the same order, whatever their
    punctuation, whitespace and case (the exact-dedup key).
    """
    m = len(lens)
    starts = np.zeros(m + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    pos = (np.arange(len(word_h), dtype=np.int64) - np.repeat(starts[:-1], lens)).astype(np.uint64)
    x = word_h ^ (pos * _POLY)
    _splitmix(x)
    out = np.zeros(m, np.uint64)
    nonempty = np.flatnonzero(lens)
    if len(nonempty):
        out[nonempty] = np.add.reduceat(x, starts[nonempty])
    out ^= lens.astype(np.uint64) * _MIX2
    return _splitmix(out)


def text_shingles(texts, ngram: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes (flat) and counts per doc for a batch of texts."""
    wh, lens = word_hashes(texts, seed)
    return shingle_hashes(wh, lens, ngram)


def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)  # odd multipliers
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_numpy(sh: np.ndarray, n_sh: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (docs x num_perm, uint32) by multiply-add-shift hashing, blockwise."""
    m = len(n_sh)
    sig = np.full((m, num_perm), EMPTY, dtype=np.uint32)
    a, b = _perm_params(num_perm, seed)
    x = sh & _LOW32
    starts = np.zeros(m + 1, np.int64)
    np.cumsum(n_sh, out=starts[1:])
    nonempty = np.flatnonzero(n_sh)
    # blocks of whole docs, about _BLOCK shingles each
    i = 0
    while i < len(nonempty):
        lo = int(starts[nonempty[i]])
        j = int(np.searchsorted(starts[nonempty + 1], lo + _BLOCK, side="right"))
        j = max(j, i + 1)
        docs = nonempty[i:j]
        hi = int(starts[docs[-1] + 1])
        blk = x[lo:hi, None] * a[None, :]
        blk += b[None, :]
        blk >>= _U64(32)
        sig[docs] = np.minimum.reduceat(blk, starts[docs] - lo, axis=0)
        i = j
    return sig


def minhash_rensa(sh: np.ndarray, n_sh: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (docs x num_perm, uint32) by rensa's Rust kernel on the same shingle hashes."""
    from rensa import RMinHash

    if not hasattr(RMinHash, "digest_matrix_from_flat_token_hashes"):
        raise RuntimeError(
            "dedup.backend 'rensa' needs rensa >= 0.5 (digest_matrix_from_flat_token_hashes); "
            "upgrade rensa or set dedup.backend: numpy"
        )
    m = len(n_sh)
    sig = np.full((m, num_perm), EMPTY, dtype=np.uint32)
    nonempty = np.flatnonzero(n_sh)
    if len(nonempty):
        offsets = np.zeros(len(nonempty) + 1, np.uint64)
        np.cumsum(n_sh[nonempty], out=offsets[1:])
        mat = RMinHash.digest_matrix_from_flat_token_hashes(np.ascontiguousarray(sh), offsets, num_perm, seed)
        rows = mat.to_rows()
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.uint32, count=len(rows) * num_perm)
        sig[nonempty] = flat.reshape(len(rows), num_perm)
    return sig


def signatures(sh: np.ndarray, n_sh: np.ndarray, num_perm: int, seed: int, backend: str) -> np.ndarray:
    if backend == "rensa":
        return minhash_rensa(sh, n_sh, num_perm, seed)
    return minhash_numpy(sh, n_sh, num_perm, seed)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 per (doc, band): a mix of the band's `rows` signature values (docs x bands)."""
    m = sig.shape[0]
    s = sig.reshape(m, bands, rows).astype(np.uint64)
    h = np.zeros((m, bands), np.uint64)
    for r in range(rows):
        h ^= s[:, :, r]
        h *= _POLY
        h = _splitmix(h)
    return h


def set_worker_threads(processes: int) -> None:
    """Cap Rust thread pools (polars, rensa) so `processes` workers share the machine's cores."""
    per = str(max(1, (os.cpu_count() or 1) // max(1, processes)))
    os.environ.setdefault("POLARS_MAX_THREADS", per)
    os.environ.setdefault("RAYON_NUM_THREADS", per)
