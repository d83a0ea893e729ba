"""Per-shard dedup work: exact keys, LSH band hashes and shingle sets of a shard's documents.

`spill_signatures` and `spill_shingles` run in the shard workers (`shard_work.ordered_pool`) and write their
arrays to the spill directory (`spill.Spill`); only a few numbers per shard come back to the parent.
`signature_shard` computes the same arrays in memory for a small table (the reference index of
`reference.ReferenceIndex`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plasma_pipeline.dedup import minhash
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.io import Shard, load_shard
from plasma_pipeline.dedup.spill import Spill

SET_BITS = 40  # shingle hash bits kept for the exact Jaccard (collisions ~ k^2 / 2^40 per pair: negligible)
TAG_SHIFT = np.uint64(SET_BITS)
SET_MASK = np.uint64((1 << SET_BITS) - 1)
SIG_BATCH = 4096  # docs per slice when computing signatures (bounds working memory per worker)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by one sort (numpy 2's hash-based unique is several times slower on large uint64 arrays)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    return a[np.r_[True, a[1:] != a[:-1]]]


def slice_signatures(texts: pa.ChunkedArray | pa.Array, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact key, docs x bands band hashes, has-a-word) of a slice of texts."""
    word_h, n_words = minhash.word_hashes(texts, cfg.seed)
    sh, n_sh = minhash.shingle_hashes(word_h, n_words, cfg.ngram)
    sig = minhash.signatures(sh, n_sh, cfg.num_perm, cfg.seed, cfg.backend)
    ex = minhash.sequence_hashes(word_h, n_words)
    wordless = np.flatnonzero(n_words == 0)
    if len(wordless):  # no words (empty, punctuation only): exact key from the stripped text itself
        import polars as pl

        raw = pl.from_arrow(texts.take(pa.array(wordless))).cast(pl.String).fill_null("").str.strip_chars()
        ex[wordless] = raw.hash(seed=cfg.seed).to_numpy().astype(np.uint64)
    return ex, minhash.band_hashes(sig, cfg.bands, cfg.rows), n_sh > 0


def text_lengths(texts) -> np.ndarray:
    return pc.fill_null(pc.utf8_length(texts), 0).to_numpy().astype(np.int64)


def source_codes(sources) -> tuple[list[str], np.ndarray]:
    """The distinct source names in order of first appearance, and each doc's index into them."""
    enc = pc.fill_null(pc.cast(sources, pa.string()), "").combine_chunks().dictionary_encode()
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int32)


@dataclass
class ShardSignatures:
    """Signatures of one small table, in memory (the reference index of `ReferenceIndex`)."""

    ids: pa.Array  # document ids (string)
    sources: pa.Array  # source names (string)
    lengths: np.ndarray  # text length in characters (int64)
    exact: np.ndarray  # hash of the normalised text: its lower-cased word sequence (uint64)
    bands: np.ndarray  # docs x bands band hashes (uint64)
    has_shingles: np.ndarray  # False for docs without a single word (kept out of LSH)
    seconds: float = 0.0  # time spent on this shard


def signature_shard(table: pa.Table, cfg: DedupConfig) -> ShardSignatures:
    """Exact hashes and LSH band hashes of one table (`table` has id, source and text columns), in memory.

    Texts are processed in slices of `SIG_BATCH` docs, so working memory does not grow with the table.
    """
    t0 = time.perf_counter()
    texts = table[cfg.text_field]
    exact, bands, has_sh = [], [], []
    for lo in range(0, max(len(texts), 1), SIG_BATCH):
        ex, bd, hs = slice_signatures(texts.slice(lo, SIG_BATCH), cfg)
        exact.append(ex)
        bands.append(bd)
        has_sh.append(hs)
    return ShardSignatures(
        ids=table[cfg.id_field].combine_chunks(),
        sources=pc.cast(table[cfg.source_field], pa.string()).combine_chunks(),
        lengths=text_lengths(texts),
        exact=np.concatenate(exact),
        bands=np.concatenate(bands),
        has_shingles=np.concatenate(has_sh),
        seconds=time.perf_counter() - t0,
    )


@dataclass
class ShardInfo:
    """What a signature worker returns for one shard (everything else is in the spill directory)."""

    docs: int
    source_names: list[str]
    no_words: int  # docs without a single word (kept out of LSH)
    seconds: float
    table_bytes: int  # size of the shard's table in the worker (for the memory plan of later passes)


def _write_npy_header(f, dtype, shape) -> int:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    return f.tell()


def spill_signatures(shard: Shard, shard_index: int, cfg: DedupConfig, spill_root: str) -> ShardInfo:
    """Worker: the shard's band hashes (bands x docs, written slice by slice), exact keys, lengths, source codes,
    has-a-word flags and ids, into the spill directory."""
    t0 = time.perf_counter()
    sp = Spill(spill_root)
    table = load_shard(shard, cfg, shard_index, columns=[cfg.id_field, cfg.source_field, cfg.text_field])
    n = table.num_rows
    texts = table[cfg.text_field]
    exact = np.zeros(n, np.uint64)
    words = np.zeros(n, bool)
    with open(sp.shard(shard_index, "bands"), "wb") as f:
        data = _write_npy_header(f, np.uint64, (cfg.bands, n))
        f.truncate(data + n * cfg.bands * 8)
        for lo in range(0, n, SIG_BATCH):
            ex, bd, hs = slice_signatures(texts.slice(lo, SIG_BATCH), cfg)
            exact[lo : lo + len(ex)] = ex
            words[lo : lo + len(ex)] = hs
            for b in range(cfg.bands):  # band-major: band b of this slice goes after band b of earlier slices
                f.seek(data + (b * n + lo) * 8)
                np.ascontiguousarray(bd[:, b]).tofile(f)
    names, codes = source_codes(table[cfg.source_field])
    np.save(sp.shard(shard_index, "exact"), exact)
    np.save(sp.shard(shard_index, "length"), text_lengths(texts))
    np.save(sp.shard(shard_index, "source"), codes)
    np.save(sp.shard(shard_index, "words"), words)
    pq.write_table(pa.table({"id": pc.cast(table[cfg.id_field], pa.string())}), sp.shard(shard_index, "ids"),
                   compression="none")
    return ShardInfo(n, names, int(n - words.sum()), time.perf_counter() - t0, int(table.nbytes))


def shingle_sets(texts, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """The shingle set of each text as the confirm step compares them: (flat sorted unique 40-bit shingle
    hashes, count per text)."""
    sh, n_sh = minhash.text_shingles(texts, cfg.ngram, cfg.seed)
    # one sort of (row << 40 | top 40 bits of the hash) gives each row's set, sorted and unique
    key = sorted_unique((np.repeat(np.arange(len(n_sh), dtype=np.uint64), n_sh) << TAG_SHIFT) | (sh >> np.uint64(24)))
    counts = np.bincount((key >> TAG_SHIFT).astype(np.int64), minlength=len(n_sh)).astype(np.int64)
    return key & SET_MASK, counts


def spill_shingles(shard: Shard, shard_index: int, rows: np.ndarray, cfg: DedupConfig, spill_root: str) -> int:
    """Worker: the shingle sets of the given rows of one shard (those in a candidate pair), into the spill
    directory: flat hashes (`sh`) and the count per row (`shn`). Returns the number of hashes."""
    sp = Spill(spill_root)
    table = load_shard(shard, cfg, shard_index, columns=[cfg.id_field, cfg.source_field, cfg.text_field])
    texts = table[cfg.text_field].take(pa.array(rows))
    del table
    counts = []
    with open(sp.shard(shard_index, "sh"), "wb") as f:
        for lo in range(0, len(rows), SIG_BATCH):
            flat, c = shingle_sets(texts.slice(lo, SIG_BATCH), cfg)
            flat.tofile(f)
            counts.append(c)
    counts_all = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    np.save(sp.shard(shard_index, "shn"), counts_all)
    return int(counts_all.sum())
