"""Data-parallel scaling: the trainer on 1 rank, then on N ranks of this host, same global batch (issue 13's run).

    python benchmarks/data_parallel_bench.py --gpus 2 --out $OUT/dp.json     # on a machine with 2 GPUs
    python benchmarks/data_parallel_bench.py --quick                          # CPU smoke run: toy model, gloo

Each row runs `python -m plasma_pipeline.train` (1 rank) and `python -m plasma_pipeline.train.ranks N` (torchrun,
N ranks: the launch the training assets use for `gpus: N`) on the same random-token shards with the same
TrainConfig, then reads rank 0's metrics.jsonl: global tokens/s per step (the global batch over rank 0's step
wall time, the all-reduce included), median after the warm-up steps. Scaling = N-rank / 1-rank tokens/s; the
target is >= 1.8x on 2 GPUs. The losses of the two runs are printed beside it: the same global batch gives the
same curve (bf16 on the GPU: close, not equal).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, engine, model, global batch, micro, compile, extra TrainConfig fields)
PLAN = [
    ("resident-1.2b", "resident", "1.2b", 64, 8, False, {}),
    # The largest shape the host holds: one host master per node (12.4 B/param) on the 2-GPU box's 256 GiB.
    ("streaming-9.3b", "streaming", "9.3b", 96, 0, True, {}),
]
QUICK_PLAN = [
    ("resident-toy", "resident", "toy", 8, 2, False, {}),
    ("streaming-toy", "streaming", "toy", 8, 2, False, {}),
]


def write_random_shards(root: Path, rows: int, seq: int, vocab: int, seed: int = 0) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    for split, n in (("train", rows), ("val", max(8, rows // 16))):
        (root / split).mkdir(parents=True, exist_ok=True)
        ids = rng.integers(1, vocab, size=(n, seq + 1), dtype=np.int32)
        table = pa.table({"input_ids": pa.array(list(ids), type=pa.list_(pa.int32())),
                          "domain": pa.array(["random"] * n)})
        pq.write_table(table, root / split / "part-00000.parquet")
    return root


def run(cfg: dict, ranks: int, work: Path, timeout: int, warmup: int) -> dict:
    out = work / f"out-{cfg['model']}-{cfg['engine']}-{ranks}"
    c = {**cfg, "out_dir": str(out)}
    path = work / f"run-{cfg['engine']}-{ranks}.json"
    path.write_text(json.dumps(c))
    mod = ["-m", "plasma_pipeline.train"] if ranks == 1 else ["-m", "plasma_pipeline.train.ranks", str(ranks)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    t0 = time.time()
    p = subprocess.run([sys.executable, *mod, "--config", str(path)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=ROOT)
    if p.returncode != 0:
        return {"ranks": ranks, "error": f"exit {p.returncode}", "stderr_tail": p.stderr[-2500:]}
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in recs if "tokens_per_s" in r]
    timed = steps[warmup:] or steps
    final = next((r for r in reversed(recs) if r.get("event") == "final"), {})
    return {"ranks": ranks, "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "step_s": statistics.median(r["step_s"] for r in timed), "losses": [round(r["loss"], 4) for r in steps],
            "model_tflops": statistics.median(r["model_tflops"] for r in timed),
            "host_rss_gb": max(r["host_rss_gb"] for r in steps), "gpu_peak_gb": final.get("gpu_peak_gb"),
            "data_parallel": final.get("data_parallel"), "host_master": final.get("host_master"),
            "wall_s": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="CPU: toy model, gloo, 2 ranks")
    ap.add_argument("--only", default="", help="comma list of row names")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--out", default="data_parallel_bench.json")
    args = ap.parse_args()
    plan = QUICK_PLAN if args.quick else PLAN
    seq = 32 if args.quick else 1024
    results = []
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        work = Path(tmp)
        for name, engine, model, batch, micro, comp, extra in plan:
            if args.only and name not in args.only.split(","):
                continue
            vocab = 512 if model == "toy" else 32000
            data = write_random_shards(work / f"data-{name}", batch * (args.steps + 1), seq, vocab)
            cfg = {"model": model, "model_overrides": {"max_seq_len": max(seq, 64)}, "data_dir": str(data),
                   "steps": args.steps, "batch_size": batch, "micro_batch": micro, "lr": 3e-4, "warmup": 0,
                   "engine": engine, "compile": comp, "log_every": 1, "val_batches": 1, "save_every": 0,
                   "device": "cpu" if args.quick else "cuda", "dtype": "fp32" if args.quick else "auto", **extra}
            one = run(cfg, 1, work, args.timeout, args.warmup)
            many = run(cfg, args.gpus, work, args.timeout, args.warmup)
            row = {"name": name, "engine": engine, "model": model, "batch": batch, "micro": micro,
                   "one": one, "many": many, "date": time.strftime("%Y-%m-%d")}
            if "tokens_per_s" in one and "tokens_per_s" in many:
                row["scaling"] = round(many["tokens_per_s"] / one["tokens_per_s"], 3)
            results.append(row)
            Path(args.out).write_text(json.dumps(results, indent=1))
            print(f"{name:>16}  1 rank {one.get('tokens_per_s', one.get('error'))} tok/s  "
                  f"{args.gpus} ranks {many.get('tokens_per_s', many.get('error'))} tok/s  "
                  f"scaling {row.get('scaling')}  ({many.get('data_parallel')})", flush=True)
            for r in (one, many):
                if "error" in r:
                    print(r["stderr_tail"], file=sys.stderr)
    return 0 if all("scaling" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
