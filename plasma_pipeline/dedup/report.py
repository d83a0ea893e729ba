"""Counters and metadata of a dedup run: drops by kind, candidate pairs, rates per source, cluster sizes."""

from __future__ import annotations

from collections import Counter

import numpy as np

from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.spill import Spill

_EDGES = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 100), (101, 1000), (1001, None)]


def size_histogram(sizes: np.ndarray, singletons: int = 0) -> dict[str, int]:
    """Clusters per size bin; `singletons` more clusters of size 1 than `sizes` lists."""
    hist = {}
    for lo, hi in _EDGES:
        label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi else f">{lo - 1}")
        n = int(((sizes >= lo) & (sizes <= (hi if hi else sizes.max(initial=0)))).sum())
        if lo == 1:
            n += singletons
        if n:
            hist[label] = n
    return hist


def per_source(sp: Spill, offsets: np.ndarray, source_names: list[list[str]], keep: np.ndarray) -> dict:
    """{source: docs, dropped, dup_rate}, sources in order of first appearance in the corpus."""
    totals: dict[str, list[int]] = {}
    for i, names in enumerate(source_names):
        if not names:
            continue
        codes = sp.read(sp.shard(i, "source"))
        k = keep[offsets[i] : offsets[i + 1]]
        docs = np.bincount(codes, minlength=len(names))
        dropped = np.bincount(codes[~k], minlength=len(names))
        for name, d, x in zip(names, docs.tolist(), dropped.tolist()):
            t = totals.setdefault(name, [0, 0])
            t[0] += d
            t[1] += x
    return {name: {"docs": d, "dropped": x, "dup_rate": round(x / d, 6) if d else 0.0}
            for name, (d, x) in totals.items()}


def count(stats: Counter, *, docs: int, kept: int, exact_dropped: int, pairs: int, confirmed: int,
          no_words: int) -> None:
    stats["kept"] += kept
    stats["dropped/exact_duplicate"] += exact_dropped
    stats["dropped/near_duplicate"] += docs - kept - exact_dropped
    stats["candidates/pairs"] += pairs
    stats["candidates/confirmed"] += confirmed
    stats["candidates/rejected_by_confirm"] += pairs - confirmed
    stats["skipped/no_words"] += no_words


def metadata(cfg: DedupConfig, *, docs: int, kept: int, exact_dropped: int, pairs: int, confirmed: int,
             per_source_rates: dict, component_sizes: np.ndarray, singletons: int, spill_bytes: dict,
             memory_plan: dict, signature_seconds: list[float]) -> dict:
    return {
        "docs": docs,
        "kept": kept,
        "dup_rate": round(1 - kept / docs, 6) if docs else 0.0,
        "dup_rate_per_source": per_source_rates,
        "cluster_size_histogram": size_histogram(component_sizes, singletons),
        "largest_cluster": int(max(component_sizes.max(initial=0), 1 if singletons else 0)),
        "exact_duplicates": exact_dropped,
        "candidate_pairs": pairs,
        "confirmed_pairs": confirmed,
        "rejected_by_confirm": pairs - confirmed,
        "index_bytes": int(docs * cfg.bands * 8),  # band hashes, all on disk (spill directory)
        "index_on_disk": True,
        "index_peak_band_bytes": int(memory_plan.get("band_peak_bytes", 0)),
        "confirm_shingle_bytes": int(spill_bytes.get("shingles", 0)),
        "spill_bytes": spill_bytes,
        "memory_plan": memory_plan,
        "lsh_threshold": round(cfg.lsh_threshold, 4),
        "config": {
            "ngram": cfg.ngram,
            "num_perm": cfg.num_perm,
            "bands": cfg.bands,
            "rows": cfg.rows,
            "confirm_threshold": cfg.confirm_threshold,
            "keep": cfg.keep,
            "backend": cfg.backend,
            "memory_gb": cfg.memory_gb,
        },
        "signature_seconds_per_shard": [round(s, 4) for s in signature_seconds],
    }
