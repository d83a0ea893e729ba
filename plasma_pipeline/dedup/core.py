"""Stage 5: exact dedup, then MinHash LSH across the whole corpus, confirmed pairs, connected-component clusters.

`dedup_tables` runs the passes below over a spill directory (`spill.py`); the parent never holds the corpus's
signatures, band hashes, candidate pairs or ids, and sizes every pass to `dedup.memory_gb` (`budget.py`):

1. signatures (`signatures.spill_signatures`, per shard, in the shard workers of `shard_work.ordered_pool`): exact
   key of the normalised text, LSH band hashes (bands x docs), length, source and id of every document, written
   by the worker; a few numbers per shard come back. With a `resume.SignatureCache` they are kept per input shard
   and a rerun after a kill signs only the shards it had not finished;
2. exact groups (`clusters.exact_groups`): runs of equal exact keys, per hash-range partition; one keeper each by
   the keep rule (`clusters.KeepRule`), the others hang off it;
3. LSH candidates (`lsh.spill_candidates`): per band, per hash-range partition, the band hashes of the exact
   keepers that have a word are sorted and runs of equal hashes give candidate pairs, appended to disk;
4. candidate pairs are split by doc range, each range sorted and made unique (`lsh.partition_pairs`); the shard
   workers write the shingle sets of the docs in a pair (`signatures.spill_shingles`), and each range is
   confirmed by the true shingle Jaccard in bounded batches (`lsh.confirm_pairs`);
5. clusters: connected components of the exact and confirmed edges (`clusters.components`, scipy), one keeper
   each by the keep rule;
6. counters and metadata (`report.py`); the second pass (`survivors.py`, in the shard workers) writes each
   shard's survivors (`DedupResult.keep_mask`).

Documents are (shard, row) pairs flattened to global indices (shard offset + row) throughout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from plasma_pipeline.dedup import report
from plasma_pipeline.dedup.budget import DOC_BYTES, SLICE_BYTES, MemoryPlan, shard_bytes_estimate
from plasma_pipeline.dedup.clusters import KeepRule, components, exact_groups, shard_of
from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.io import Shard, load_shard
from plasma_pipeline.dedup.lsh import confirm_pairs, partition_pairs, spill_candidates, split_pairs
from plasma_pipeline.dedup.reference import ReferenceIndex, ReferenceMatch
from plasma_pipeline.dedup.result import DedupResult
from plasma_pipeline.dedup.signatures import (
    ShardInfo,
    ShardSignatures,
    shingle_sets,
    signature_shard,
    spill_shingles,
)
from plasma_pipeline.dedup.resume import SignatureCache, signatures_job
from plasma_pipeline.dedup.spill import Spill, release_memory
from plasma_pipeline.shard_work import ordered_pool

__all__ = [
    "DedupResult",
    "ReferenceIndex",
    "ReferenceMatch",
    "ShardSignatures",
    "dedup_tables",
    "shingle_sets",
    "signature_shard",
]

# A spawned worker costs ~0.5 s to start (it imports numpy, polars and pyarrow), about what signing 30 MB of
# text takes; so each worker started must get at least this much work, and below it the work runs in this
# process (measured on 2 cores: 20k docs, 36 MB, run in 0.7 s in this process and 1.3 s on two spawned workers).
MIN_BYTES_PER_WORKER = 32 << 20  # estimated in-memory shard size (a callable's is unknown: it gets workers)
MIN_DOCS_PER_WORKER = 20_000  # docs in candidate pairs whose shingle sets a worker computes


def _thread_caps(workers: int) -> dict[str, str]:
    """Each worker's Rust thread pools (polars, rensa) capped to its share of the cores."""
    per = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {"POLARS_MAX_THREADS": per, "RAYON_NUM_THREADS": per}


def _run(func, items: list[tuple], workers: int):
    """(item, result) in order, through the executor every stage's shard work uses."""
    return ordered_pool(func, items, workers, env=_thread_caps(workers) if workers > 1 else None)


def shard_workers(plan: MemoryPlan, processes: int, sizes: list[int], resident: int = 0) -> int:
    """Workers for one pass over shards of these estimated sizes: what `memory_gb` holds beside the parent's
    `resident` bytes, and none that would get less than MIN_BYTES_PER_WORKER of them."""
    workers = plan.workers(processes, len(sizes), max(sizes, default=0), resident)
    if all(sizes):
        workers = min(workers, max(1, sum(sizes) // MIN_BYTES_PER_WORKER))
    return workers


def _prewarm_imports() -> None:
    """Import scipy's graph routines (~0.2 s) in a thread while the parent waits for the signature workers."""
    def load():
        with contextlib.suppress(Exception):
            import scipy.sparse.csgraph  # noqa: F401

    threading.Thread(target=load, daemon=True).start()


def _id_loader(shards: list[Shard], cfg: DedupConfig):
    def load(i: int) -> pa.Array:
        table = load_shard(shards[i], cfg, i, columns=[cfg.id_field, cfg.source_field, cfg.text_field])
        return table[cfg.id_field].combine_chunks().cast(pa.string())

    return load


def dedup_tables(shards: Sequence[Shard], cfg: DedupConfig, stats: Counter, cache: SignatureCache | None = None,
                 log: Callable[[str], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> DedupResult:
    """Deduplicate a corpus given as shards (Parquet/jsonl paths, tables, or picklable callables returning tables).

    With `cache` (a key per shard, from its content hash), each shard's signatures are kept in the cache and a
    rerun after a kill signs only the shards without a complete entry; `log` says how many were reused.
    `progress(shard index, docs)` is called as each shard's signatures are done.

    Counts `kept`, `dropped/exact_duplicate`, `dropped/near_duplicate`, `candidates/pairs`,
    `candidates/confirmed`, `candidates/rejected_by_confirm`, `skipped/no_words` into `stats`. Filter each shard
    afterwards with `result.filter_table(i, table)`.
    """
    shards = list(shards)
    plan = MemoryPlan(cfg.memory_gb)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if cfg.spill_dir:
        os.makedirs(cfg.spill_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plasma-dedup-", dir=cfg.spill_dir or None) as root:
        result = _dedup(shards, cfg, stats, plan, Spill(root), timings, cache, log, progress)
    timings["total_s"] = time.perf_counter() - t0
    result.metadata["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return result


def _dedup(shards: list[Shard], cfg: DedupConfig, stats: Counter, plan: MemoryPlan, sp: Spill, timings,
           cache: SignatureCache | None = None, log: Callable[[str], None] | None = None,
           progress: Callable[[int, int], None] | None = None) -> DedupResult:
    mem: dict = {"memory_gb": cfg.memory_gb, "budget_bytes": plan.budget}

    # 1. signatures, written by the shard workers (or linked from the cache entries of an earlier, killed run)
    t = time.perf_counter()
    keys = cache.keys if cache is not None else [None] * len(shards)
    reused = {i for i in range(len(shards)) if cache is not None and cache.done(i)}
    if log is not None:
        log(f"signatures: reused {len(reused)} of {len(shards)} shards from an earlier run" if reused
            else f"signatures: {len(shards)} shards")
    todo = [i for i in range(len(shards)) if i not in reused]
    sizes = [shard_bytes_estimate(shards[i]) for i in todo]
    workers = shard_workers(plan, cfg.processes, sizes)
    mem["signature_workers"] = workers
    if workers > 1:  # the parent only waits: import scipy meanwhile (in-process signing would compete with it)
        _prewarm_imports()
    cache_dir = cache.dir if cache is not None else None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    infos: list[ShardInfo] = [None] * len(shards)  # type: ignore[list-item]
    for i in sorted(reused):  # small files and hard links: in this process
        infos[i] = signatures_job(shards[i], i, cfg, str(sp.root), cache_dir, keys[i])[0]
        if progress is not None:
            progress(i, infos[i].docs)
    jobs = [(shards[i], i, cfg, str(sp.root), cache_dir, keys[i]) for i in todo]
    for (_, i, *_), (info, _) in _run(signatures_job, jobs, workers):
        infos[i] = info
        if progress is not None:
            progress(i, info.docs)
    mem["signature_shards_reused"] = len(reused)
    timings["signatures_s"] = time.perf_counter() - t
    return dedup_spilled(infos, shards, cfg, stats, plan, sp, timings, mem)


def dedup_spilled(infos: list[ShardInfo], shards: list[Shard], cfg: DedupConfig, stats: Counter, plan: MemoryPlan,
                  sp: Spill, timings: dict, mem: dict) -> DedupResult:
    """Passes 2-8 over signatures already in the spill directory (`infos`: what each shard's worker returned).
    `shards` are read again only for the shingle sets of candidate docs (not at all when confirm_threshold is 0)
    and by `DedupResult.ids`."""
    root = str(sp.root)
    offsets = np.zeros(len(infos) + 1, np.int64)
    np.cumsum([info.docs for info in infos], out=offsets[1:])
    n = int(offsets[-1])
    if n >= 2**32:
        raise ValueError(f"dedup supports fewer than 2^32 documents per run, got {n}")
    source_names = [info.source_names for info in infos]
    rule = KeepRule(cfg, sp, offsets, source_names)

    # 2. exact groups; every non-keeper hangs off its group's keeper
    t = time.perf_counter()
    resident = n * DOC_BYTES
    members, groups, info = exact_groups(sp, offsets, plan, resident)
    mem.update(info)
    release_memory()
    keeper = rule.keepers(groups, members)
    dup = members != keeper
    ex_u, ex_v = members[dup], keeper[dup]
    del members, groups, keeper, dup
    exact_dropped = len(ex_u)
    release_memory()
    timings["exact_s"] = time.perf_counter() - t

    # 3. LSH candidates over the exact keepers that have a word, band by band, to disk
    t = time.perf_counter()
    resident += ex_u.nbytes + ex_v.nbytes
    lsh = np.ones(n, bool)
    lsh[ex_u] = False
    for i in range(len(infos)):
        lsh[offsets[i] : offsets[i + 1]] &= sp.read(sp.shard(i, "words"))
    mem.update(spill_candidates(sp, offsets, lsh, cfg.bands, cfg.full_pairs_max, plan, resident))
    del lsh
    release_memory()
    timings["lsh_s"] = time.perf_counter() - t

    # 4. distinct candidate pairs per doc range; the docs that need shingle sets
    t = time.perf_counter()
    confirm = cfg.confirm_threshold > 0
    needed = np.zeros(n if confirm else 0, bool)

    def mark(pairs: np.ndarray) -> None:
        if confirm:
            a, b = split_pairs(pairs)
            needed[a] = True
            needed[b] = True

    parts, info = partition_pairs(sp, n, plan, resident, mark)
    mem.update(info)
    need = np.flatnonzero(needed)
    del needed
    release_memory()
    timings["pairs_s"] = time.perf_counter() - t

    # 5. shingle sets of the docs in a pair, written per shard by the workers, concatenated in doc order
    t = time.perf_counter()
    shingle_file, counts = None, np.zeros(0, np.int64)
    if confirm and len(need):
        owner = shard_of(offsets, need)
        jobs = [(shards[i], int(i), need[owner == i] - offsets[i], cfg, root) for i in np.unique(owner).tolist()]
        table_bytes = max(info.table_bytes for info in infos)
        w = plan.workers(cfg.processes, len(jobs), table_bytes, resident + need.nbytes)
        if 2 * table_bytes + SLICE_BYTES <= plan.work_bytes(resident):  # a shard fits next to the parent's arrays
            w = min(w, max(1, len(need) // MIN_DOCS_PER_WORKER))
        mem["shingle_workers"] = w
        shingle_file = str(sp.file("shingles.u64"))
        parts_counts = []
        with open(shingle_file, "wb") as out:
            for (_, i, *_), _total in _run(spill_shingles, jobs, w):
                with open(sp.shard(i, "sh"), "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
                os.remove(sp.shard(i, "sh"))
                parts_counts.append(sp.read(sp.shard(i, "shn")))
        counts = np.concatenate(parts_counts)
    release_memory()
    timings["shingles_s"] = time.perf_counter() - t

    # 6. confirmation, one pair range at a time, in bounded batches
    t = time.perf_counter()
    resident += need.nbytes + 2 * counts.nbytes
    lsh_u, lsh_v, info = confirm_pairs(parts, need, shingle_file, counts, cfg.confirm_threshold, plan, resident)
    mem["jaccard_batch"] = info["jaccard_batch"]
    n_pairs, n_confirmed = info["pairs"], info["confirmed"]
    del need, counts
    release_memory()
    timings["confirm_s"] = time.perf_counter() - t

    # 7. clusters: components of exact and confirmed edges; one keeper each
    t = time.perf_counter()
    nodes, labels = components(np.concatenate([ex_u, lsh_u]), np.concatenate([ex_v, lsh_v]))
    del ex_u, ex_v, lsh_u, lsh_v
    keepers = rule.keepers(labels, nodes)
    keep = np.ones(n, bool)
    keep[nodes[nodes != keepers]] = False
    component_sizes = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    timings["cluster_s"] = time.perf_counter() - t

    # 8. counters and metadata
    n_kept = int(keep.sum())
    no_words = sum(info.no_words for info in infos)
    report.count(stats, docs=n, kept=n_kept, exact_dropped=exact_dropped, pairs=n_pairs, confirmed=n_confirmed,
                 no_words=no_words)
    spill_bytes = {"bands": n * cfg.bands * 8, "pairs": mem.get("pairs_spilled", 0) * 8,
                   "shingles": os.path.getsize(shingle_file) if shingle_file else 0}
    meta = report.metadata(
        cfg, docs=n, kept=n_kept, exact_dropped=exact_dropped, pairs=n_pairs, confirmed=n_confirmed,
        per_source_rates=report.per_source(sp, offsets, source_names, keep),
        component_sizes=component_sizes, singletons=n - len(nodes), spill_bytes=spill_bytes, memory_plan=mem,
        signature_seconds=[info.seconds for info in infos],
    )
    mem["over_budget"] = bool(plan.report.get("over_budget", False))
    return DedupResult(shard_offsets=offsets, keep=keep, members=nodes, keepers=keepers, metadata=meta,
                       id_loader=_id_loader(shards, cfg))
