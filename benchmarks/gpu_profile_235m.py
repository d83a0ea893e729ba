"""Where the resident engine's time goes at 235M (torch.profiler), and whether compiling the whole loss
(instead of each block and the head separately) moves MFU. Prints a kernel table and one JSON line per variant.

    python benchmarks/gpu_profile_235m.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from plasma_pipeline.train.config import TrainConfig  # noqa: E402
from plasma_pipeline.train.resident import ResidentEngine  # noqa: E402
from benchmarks.trainer import _random_batch  # noqa: E402


def time_engine(name, engine, mcfg, batch, seq, steps=4, warmup=3, profile=False):
    gen = torch.Generator().manual_seed(0)
    walls = []
    for i in range(warmup + steps):
        b = _random_batch(batch, seq, mcfg.vocab_size, gen)
        if profile and i == warmup:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                engine.train_step(b, 3e-4)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
            continue
        walls.append(engine.train_step(b, 3e-4).wall_s)
    step = statistics.median(walls[warmup:] if len(walls) > warmup else walls[-steps:])
    tflops = 6 * mcfg.num_params() * batch * seq / step / 1e12
    print(json.dumps({"variant": name, "step_s": round(step, 4), "model_tflops": round(tflops, 1),
                      "mfu": round(tflops / 989, 4), "gpu_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}),
          flush=True)


def main():
    seq, batch = 1024, 32
    dev, dt = torch.device("cuda"), torch.bfloat16
    cfg = TrainConfig(model="plasma-1.0-235m", batch_size=batch, micro_batch=0, compile=True, warmup=0, device="cuda")
    mcfg = cfg.model_config()
    e = ResidentEngine(mcfg, cfg, dev, dt)
    time_engine("resident block+head compile (profiled)", e, mcfg, batch, seq, profile=True)
    del e
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg.compile = False
    e = ResidentEngine(mcfg, cfg, dev, dt)
    e.model.loss = torch.compile(e.model.loss)
    time_engine("resident whole-loss compile", e, mcfg, batch, seq)


if __name__ == "__main__":
    main()
