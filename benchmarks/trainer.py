"""Trainer benchmark: GPU twins first, then resident vs streaming (and peers) on one GPU.

    python benchmarks/trainer.py --only twins,235m,1.2b --out $OUT/r.json    # groups: see PLAN
    python benchmarks/trainer.py --quick                                     # CPU smoke run with tiny shapes

The twins (resident vs streaming in bf16, 50 steps, max relative loss difference < 1e-3) cover every streaming
path: kept graphs (no recompute, eager and compiled), recompute, boundaries offloaded to pinned host memory,
a one-slot gradient ring, the host gradient stash and a partial keep under a GPU budget, and speculative
host-AdamW steps undone and redone. Each variant runs in its own subprocess (clean GPU/host peak memory, a crash
or OOM costs one row) under a timeout; results are appended to the JSON file as they come, and a markdown table
is written beside it. Throughput is measured on random tokens after warm-up steps (torch.compile happens
there); model TFLOP/s = 6 * N * tokens/s, N = parameters (tied counted once); MFU against 989 TFLOP/s (dense
bf16, H100/H200). gpu_memory_gb rows run with the budget enforced (set_per_process_memory_fraction).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQ = 1024

# (group, model, variant, batch, micro (0: planner), compile, timeout_s, extra TrainConfig fields)
PLAN = [
    ("235m", "plasma-1.0-235m", "resident", 32, 0, True, 150, {}),
    ("235m", "plasma-1.0-235m", "streaming", 32, 0, True, 150, {}),
    ("235m-fp8", "plasma-1.0-235m", "resident", 32, 0, True, 180, {"fp8": True}),
    ("1.2b", "1.2b", "resident", 64, 8, False, 150, {}),
    ("1.2b", "1.2b", "streaming", 64, 8, False, 150, {}),
    ("1.2b-ckpt", "1.2b", "streaming", 64, 8, False, 240, {"checkpoint": 2}),
    # the copies' pages touched 3 steps ahead of each save (prepare_snapshot), as the trainer does before save_every
    ("1.2b-ckpt", "1.2b", "streaming", 64, 8, False, 240, {"checkpoint": 2, "save_prepare_steps": 3}),
    # the host AdamW's thread count: the default (at most half the cores) against 16, all cores of the lent H200 box
    ("1.2b-threads", "1.2b", "streaming", 64, 8, False, 200, {}),
    ("1.2b-threads", "1.2b", "streaming", 64, 8, False, 200, {"cpu_adam_threads": 16}),
    # grad_clip 0: no step is clipped, as in a run past its first steps, so host AdamW steps overlap backward
    ("235m-noclip", "plasma-1.0-235m", "resident", 32, 0, True, 150, {"grad_clip": 0.0}),
    ("235m-noclip", "plasma-1.0-235m", "streaming", 32, 0, True, 150, {"grad_clip": 0.0}),
    ("1.2b-noclip", "1.2b", "resident", 64, 8, False, 150, {"grad_clip": 0.0}),
    ("1.2b-noclip", "1.2b", "streaming", 64, 8, False, 150, {"grad_clip": 0.0}),
    # Run 7: with the host AdamW running during backward (clip off) the 1.2b compute stream took 1.74 s, not
    # 1.49: if that is the host's memory bandwidth shared by AdamW and the gradient/weight DMA, fewer threads help.
    ("1.2b-noclip-t8", "1.2b", "streaming", 64, 8, False, 150, {"grad_clip": 0.0, "cpu_adam_threads": 8}),
    ("1.2b-t8", "1.2b", "streaming", 64, 8, False, 150, {"cpu_adam_threads": 8}),
    ("2.4b@8", "2.4b", "streaming", 32, 0, False, 200, {"gpu_memory_gb": 8.0}),
    # At 8 GiB every block is recomputed at micro-batch 8, so compute alone (1.72 s eager, run 8) is over the
    # 280 TFLOP/s step (1.66 s at batch 32): compiled blocks (fused norms and SwiGLU, 1.35x fewer saved bytes),
    # and batch 64, over which the step's weight streaming and host AdamW are spread, are the two levers.
    ("2.4b@8-compiled", "2.4b", "streaming", 32, 0, True, 240, {"gpu_memory_gb": 8.0}),
    ("2.4b@8-compiled", "2.4b", "streaming", 64, 0, True, 300, {"gpu_memory_gb": 8.0}),
    ("5.9b@24", "5.9b", "streaming", 64, 0, True, 300, {"gpu_memory_gb": 24.0}),
    ("5.9b@16", "5.9b", "streaming", 32, 0, True, 300, {"gpu_memory_gb": 16.0}),
    ("9.3b", "9.3b", "streaming", 96, 0, True, 420, {}),
    ("llama3-8b", "llama3-8b", "streaming", 96, 0, True, 420, {}),
    ("fsdp", "1.2b", "fsdp2_offload", 64, 0, False, 180, {}),
    # DeepSpeed's micro-batch: ZeRO-3 gathers every parameter from the host once per micro-batch, so fewer,
    # larger micro-batches cost less traffic; 8 ran first (2026-12-01 run 5), then 32 (activation checkpointing
    # keeps 32 x 1024 tokens far inside the GPU), and the better one at 2.4b.
    ("ds-1.2b", "1.2b", "deepspeed_zero3", 64, 32, False, 300, {}),
    ("ds-1.2b-m8", "1.2b", "deepspeed_zero3", 64, 8, False, 300, {}),
    ("ds-2.4b", "2.4b", "deepspeed_zero3", 64, 32, False, 360, {}),
    # DeepSpeed's largest size on the 128 GiB box (~28 B/param on the host): 2.4b widths, 48 layers, 3.5B; and
    # streaming at the same shape, for the ratio at the largest common size.
    ("ds-3.5b", "2.4b", "deepspeed_zero3", 64, 32, False, 420, {"model_overrides": {"n_layers": 48}}),
    ("ds-3.5b", "2.4b", "streaming", 64, 0, True, 300, {"model_overrides": {"n_layers": 48}}),
    ("2.4b", "2.4b", "streaming", 64, 0, True, 200, {}),
    ("1.2b-ac", "1.2b", "resident_recompute", 64, 8, False, 150, {}),
    ("1.2b-rc", "1.2b", "streaming", 64, 8, False, 150, {"activations": "recompute"}),
]
DEFAULT_GROUPS = {"235m", "1.2b", "2.4b@8", "5.9b@24", "5.9b@16", "9.3b"}
QUICK_PLAN = [
    ("235m", "toy", "resident", 4, 2, False, 120, {}),
    ("235m", "toy", "streaming", 4, 2, False, 120, {}),
    ("235m", "toy", "streaming", 4, 2, False, 120, {"activations": "offload"}),
    ("235m", "toy", "fsdp2_offload", 4, 0, False, 120, {}),  # needs cuda (CPUOffloadPolicy pins memory)
]


# ----------------------------------------------------------------------------- worker side


def _random_batch(batch: int, seq: int, vocab: int, gen):
    import torch

    from plasma_pipeline.train.data import Batch

    t = torch.randint(0, vocab, (batch, seq + 1), generator=gen)
    return Batch(inputs=t[:, :-1].contiguous(), targets=t[:, 1:].contiguous(), mask=None)


def _summarise(spec: dict, stats: list, n_params: int, tokens: int, device, dtype, setup_s: float) -> dict:
    import torch

    from plasma_pipeline.train.metrics import host_memory_bytes, peak_flops

    timed = stats[spec["warmup"]:]
    step_s = statistics.median(s.wall_s for s in timed)
    tps = tokens / step_s
    tflops = 6 * n_params * tps / 1e12
    peak = peak_flops(device, dtype)

    def mean(attr):
        return round(statistics.mean(getattr(s, attr) for s in timed), 4)

    _, rss_peak = host_memory_bytes()
    return {
        **spec, "n_params": n_params, "tokens_per_step": tokens, "step_s": round(step_s, 4),
        "tokens_per_s": round(tps, 1), "model_tflops": round(tflops, 1),
        "mfu": None if peak is None else round(tflops * 1e12 / peak, 4),
        "compute_s": mean("compute_s"), "h2d_s": mean("h2d_s"), "d2h_s": mean("d2h_s"),
        "cpu_adam_s": mean("cpu_adam_s"), "adam_wait_s": mean("adam_wait_s"), "idle_s": mean("idle_s"),
        "overlap": None if timed[0].overlap is None else round(statistics.mean(s.overlap or 0 for s in timed), 4),
        "streamed_gb_per_step": round(statistics.mean(s.streamed_bytes for s in timed) / 1e9, 2),
        "clipped_steps": sum(bool(s.extra.get("clipped")) for s in stats),
        "speculated_steps": sum(bool(s.extra.get("speculated")) for s in stats),
        "losses": [round(s.loss, 4) for s in stats],
        "gpu_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "gpu_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2) if device.type == "cuda" else None,
        "host_peak_rss_gb": round(rss_peak / 2**30, 2), "host_bytes_per_param": round(rss_peak / n_params, 2),
        "setup_s": round(setup_s, 1),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }


def _loss_module_cls():
    import torch.nn as nn

    class LossModule(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def forward(self, ids, tgt, n_targets, dtype):
            return self.inner.loss(ids, tgt, None, n_targets, dtype)

    return LossModule


def _LossModule(model):
    return _loss_module_cls()(model)


class _FSDPEngine:
    """PyTorch FSDP2 (fully_shard per block + root) with CPUOffloadPolicy on a one-rank group: the baseline."""

    def __init__(self, mcfg, tcfg, device, dtype):
        import torch
        import torch.distributed as dist
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        from plasma_pipeline.train.model import build_model

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
        self.model = build_model(mcfg, device=device, seed=tcfg.seed, recompute=True)
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        for layer in self.model.model.layers:
            fully_shard(layer, mp_policy=mp, offload_policy=CPUOffloadPolicy())
        # FSDP2 hooks run on forward(): the root must be called, so wrap loss() in a module's forward.
        self.root = _LossModule(self.model)
        fully_shard(self.root, mp_policy=mp, offload_policy=CPUOffloadPolicy())
        torch.cuda.empty_cache() if device.type == "cuda" else None
        params = list(self.model.parameters())
        self.params = params
        self.opt = torch.optim.AdamW(
            [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps)
        self.device, self.dtype, self.tcfg = device, dtype, tcfg
        self.step = 0

    def train_step(self, batch, lr):
        import torch

        from plasma_pipeline.train.engine import StepStats

        t0 = time.perf_counter()
        for g in self.opt.param_groups:
            g["lr"] = lr
        ids = batch.inputs.to(self.device, non_blocking=True)
        tgt = batch.targets.to(self.device, non_blocking=True)
        loss = self.root(ids, tgt, batch.n_targets, self.dtype)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.tcfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        lv, nv = float(loss.item()), float(norm.full_tensor().item() if hasattr(norm, "full_tensor") else norm)
        wall = time.perf_counter() - t0
        return StepStats(loss=lv, grad_norm=nv, wall_s=wall, compute_s=wall, extra={"clipped": nv > self.tcfg.grad_clip})

    def close(self):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class _DeepSpeedEngine:
    """DeepSpeed ZeRO-3 with parameters and optimizer state offloaded to pinned CPU memory (DeepSpeedCPUAdam, which
    DeepSpeed JIT-builds on the device), bf16, activation checkpointing: the MegaTrain paper's peer. It runs
    transformers' LlamaForCausalLM of the same shape, not our model: ZeRO-3 gathers a module's parameters in that
    module's forward hooks, and our blocks are functions of their weights (the children's forwards never run).
    AdamW's weight decay goes to every parameter (DeepSpeed's optimizer block has no parameter groups)."""

    def __init__(self, mcfg, tcfg, device, dtype):
        import deepspeed
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from plasma_pipeline.infer.export_hf import hf_config

        for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": "29519"}.items():
            os.environ.setdefault(k, v)
        deepspeed.init_distributed(dist_backend="nccl")
        micro = tcfg.micro_batch or tcfg.batch_size
        self.config = {
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": tcfg.batch_size // micro,
            "gradient_clipping": tcfg.grad_clip,
            "bf16": {"enabled": True},
            "optimizer": {"type": "AdamW", "params": {"lr": tcfg.lr, "betas": [tcfg.beta1, tcfg.beta2],
                                                      "eps": tcfg.eps, "weight_decay": tcfg.weight_decay}},
            "zero_optimization": {
                "stage": 3,
                "offload_param": {"device": "cpu", "pin_memory": True},
                "offload_optimizer": {"device": "cpu", "pin_memory": True},
                "overlap_comm": True, "contiguous_gradients": True,
                "reduce_bucket_size": 5e8, "stage3_prefetch_bucket_size": 5e8,
                "stage3_param_persistence_threshold": 1e6, "stage3_max_live_parameters": 2e9,
                "stage3_max_reuse_distance": 2e9,
            },
            "wall_clock_breakdown": False, "steps_per_print": 1 << 30,
        }
        # Built whole in host memory, then partitioned by deepspeed.initialize: transformers' init indexes the
        # embedding's padding row, which a zero.Init-partitioned (empty) weight does not have.
        hf = {**hf_config(mcfg, "float32"), "use_cache": False}
        model = LlamaForCausalLM(LlamaConfig(**hf))
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=self.config)
        self.micro, self.device, self.dtype, self.tcfg = micro, device, dtype, tcfg
        self.step = 0

    def train_step(self, batch, lr):
        import torch
        import torch.nn.functional as F

        from plasma_pipeline.train.engine import StepStats

        t0 = time.perf_counter()
        for g in self.engine.optimizer.param_groups:
            g["lr"] = lr
        total = 0.0
        for i in range(0, batch.inputs.shape[0], self.micro):
            ids = batch.inputs[i:i + self.micro].to(self.device, non_blocking=True)
            tgt = batch.targets[i:i + self.micro].to(self.device, non_blocking=True)
            logits = self.engine(input_ids=ids).logits
            # DeepSpeed divides by gradient_accumulation_steps itself: a per-micro mean gives the batch mean.
            loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten())
            self.engine.backward(loss)
            self.engine.step()
            total += float(loss.item()) / (batch.inputs.shape[0] // self.micro)
        self.step += 1
        norm = self.engine.get_global_grad_norm()
        wall = time.perf_counter() - t0
        return StepStats(loss=total, grad_norm=float(norm or 0.0), wall_s=wall, compute_s=wall, extra={})

    def close(self):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def worker_bench(spec: dict) -> dict:
    import torch

    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.trainer import build_engine

    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    seq = spec["seq"]
    extra = {k: v for k, v in spec.get("extra", {}).items() if k not in ("checkpoint", "save_prepare_steps")}
    overrides = {"max_seq_len": max(seq, 64), **extra.pop("model_overrides", {})}
    if device.type != "cuda":
        extra.pop("gpu_memory_gb", None)
    if spec["variant"] == "streaming":
        extra.setdefault("host_memory_gb", float(os.environ.get("BENCH_HOST_GB", "120")))
    cfg = TrainConfig(**{**dict(model=spec["model"], model_overrides=overrides, steps=1000,
                      batch_size=spec["batch"], micro_batch=spec["micro"], lr=3e-4, warmup=0, grad_clip=1.0,
                      engine="streaming" if spec["variant"] == "streaming" else "resident",
                      recompute=spec["variant"] == "resident_recompute",
                      compile=spec["compile"], device=device.type), **extra})
    mcfg = cfg.model_config()
    if spec["variant"] == "fsdp2_offload" and device.type != "cuda":
        return {**spec, "error": "skipped: CPUOffloadPolicy needs cuda"}
    if spec["variant"] == "deepspeed_zero3" and device.type != "cuda":
        return {**spec, "error": "skipped: DeepSpeed ZeRO-3 offload needs cuda"}
    if spec["variant"] == "fsdp2_offload":
        engine = _FSDPEngine(mcfg, cfg, device, dtype)
    elif spec["variant"] == "deepspeed_zero3":
        engine = _DeepSpeedEngine(mcfg, cfg, device, dtype)
    else:
        engine = build_engine(cfg, mcfg, device, dtype, seq_len=seq)
    plan = getattr(engine, "plan", None)
    if plan is not None:
        print(plan.summary(), file=sys.stderr, flush=True)
    setup_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    stats = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # checkpoint: N background saves, the first after warm-up, each next one as soon as the last has finished
    # (the first save of a process copies into fresh memory; later ones may not), then one step more.
    # save_prepare_steps: k: prepare_snapshot() k steps before each save (as the trainer does ahead of save_every).
    n_saves, saves, save_steps = int(spec.get("extra", {}).get("checkpoint") or 0), [], []
    lead, prep_at = int(spec.get("extra", {}).get("save_prepare_steps") or 0), None
    i, planned = 0, spec["warmup"] + spec["steps"]

    def saves_pending() -> bool:  # a save still to start or to finish, or its two steps not yet run
        return bool(n_saves) and (len(saves) < n_saves or not saves[-1].done() or i <= save_steps[-1] + 2)

    while i < planned or (i < planned + 200 and saves_pending()):
        batch = _random_batch(spec["batch"], seq, mcfg.vocab_size, gen)
        if len(saves) < n_saves and i >= spec["warmup"] + 1 and (not saves or saves[-1].done()):
            if lead and prep_at is None:
                engine.prepare_snapshot()
                prep_at = i
            if not lead or i >= prep_at + lead:
                saves.append(_start_checkpoint(engine, mcfg))
                save_steps.append(i)
                prep_at = None
        stats.append(engine.train_step(batch, cfg.lr))
        print(f"  step {i}: {stats[-1].wall_s:.3f}s loss {stats[-1].loss:.4f}", file=sys.stderr, flush=True)
        i += 1
    out = _summarise(spec, stats, mcfg.num_params(), spec["batch"] * seq, device, dtype, setup_s)
    if plan is not None:
        out["plan"] = plan.summary()
        out["plan_gpu_gb"] = round(plan.gpu_bytes / 2**30, 2)
        out["plan_host_gb"] = round(plan.host_bytes / 2**30, 2)
        out["plan_step_s"] = round(plan.step_s, 3)
        out["n_keep"] = plan.n_keep
        out["kept_gb"] = stats[-1].extra.get("kept_gb")
        out["kept_bytes_per_token_layer"] = (round(stats[-1].extra["kept_gb"] * 2**30 / max(1, plan.n_keep)
                                                   / (spec["batch"] * seq)) if plan.n_keep else None)
        out["planned_kept_bytes_per_token_layer"] = plan.detail["kept_bytes_per_token_layer"]
        out["host_model_gb"] = round(engine.host_model_bytes() / 2**30, 2)
        out["ring_max_in_use"] = stats[-1].extra.get("ring_max_in_use")
        out["ring_wait_s"] = stats[-1].extra.get("ring_wait_s")
        out["micro_used"] = plan.micro_batch
        out["compiled_host_adam"] = engine.compiled_adam
        out["adam_threads"] = __import__("torch").get_num_threads()
    if saves:
        out["checkpoints"] = [h.result() for h in saves]
        out["checkpoint"] = out["checkpoints"][0]
        step_times = [s.wall_s for s in stats]
        out["step_s_all"] = [round(x, 3) for x in step_times]
        # A save's cost lands on the step it starts before and the next one (that step's host AdamW copies or
        # waits, and the next forward waits for it): the extra time of those two over the median of the steps
        # that no save touched.
        touched = {j + k for j in save_steps for k in (0, 1)}
        calm = [t for j, t in enumerate(step_times) if j >= spec["warmup"] and j not in touched]
        base = statistics.median(calm) if calm else out["step_s"]
        out["save_steps"] = save_steps
        out["save_extra_s"] = [round(sum(max(0.0, step_times[j + k] - base) for k in (0, 1)
                                         if j + k < len(step_times)), 3) for j in save_steps]
        out["save_extra_of_step"] = [round(x / base, 3) for x in out["save_extra_s"]]
    out["budget_gb"] = spec.get("extra", {}).get("gpu_memory_gb")
    engine.close()
    return out


def _start_checkpoint(engine, mcfg):
    """A background checkpoint of the engine's state to a temp dir; returns a handle whose result() is a dict."""
    import tempfile

    from plasma_pipeline.train import checkpoint as ckpt

    root = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=os.environ.get("BENCH_CKPT_DIR") or None))
    t0 = time.perf_counter()
    handle = ckpt.save_checkpoint_async(root, engine.step, engine, {"step": engine.step}, mcfg.to_dict(), 1)

    class _R:
        def done(self) -> bool:
            return handle.done()

        def result(self):
            path = handle.result()
            size = sum(f.stat().st_size for f in path.iterdir())
            problem = ckpt.verify_checkpoint(path)
            return {"save_s": round(time.perf_counter() - t0, 2), "bytes": size, "gb": round(size / 1e9, 2),
                    "verify": problem or "ok", **handle.stats}

    return _R()


def worker_twins(spec: dict) -> dict:
    """Resident vs streaming on the GPU in bf16: losses over 50 steps within 1e-3 (relative), every streaming path."""
    import tempfile

    import torch

    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.data import TokenLoader
    from plasma_pipeline.train.optim import lr_at
    from plasma_pipeline.train.plan import GiB, PlanError, make_plan
    from plasma_pipeline.train.trainer import build_engine
    from plasma_pipeline_tests.train.shards import write_shards

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    seq = 256
    data = write_shards(Path(tempfile.mkdtemp()), seq_len=seq, vocab=4096, train_files=2, rows_per_file=256)
    overrides = {"dim": 256, "n_layers": 4, "n_heads": 8, "n_kv_heads": 2, "ffn_dim": 704, "vocab_size": 4096,
                 "max_seq_len": 256}
    steps = spec.get("steps", 50)
    base = dict(model="toy", model_overrides=overrides, data_dir=str(data), steps=steps, batch_size=16,
                micro_batch=4, lr=1e-3, warmup=5, device=device.type)
    # A budget under which the plan keeps some blocks, recomputes others and stashes gradients on the host.
    mcfg = TrainConfig(**base).model_config()
    budget = None
    for mib in range(1024, 4096):
        try:
            p = make_plan(mcfg, 16, seq, 2, mib * 2**20, micro_batch=4, cuda=device.type == "cuda", compiled=False)
        except PlanError:
            continue
        if p.grad_stash == "host":
            budget = mib / 1024
            break
    variants = [  # (name, engine, clip, extra fields); budgeted runs last (the memory fraction stays set)
        ("resident", "resident", 1.0, {}),
        ("resident", "resident", 0.05, {}),
        ("resident_compiled", "resident", 1.0, {"compile": True}),
        ("keep", "streaming", 1.0, {"activations": "keep"}),
        ("keep_compiled", "streaming", 1.0, {"activations": "keep", "compile": True}),
        ("keep_spec_undo", "streaming", 0.05, {"activations": "keep", "speculative_adam": "always"}),
        ("recompute", "streaming", 1.0, {"activations": "recompute"}),
        ("offload_ring1", "streaming", 1.0, {"activations": "offload", "grad_ring_slots": 1}),
        ("budget_host_stash", "streaming", 0.05, {"gpu_memory_gb": budget, "speculative_adam": "always"}),
    ]
    if spec.get("subset"):
        variants = [v for v in variants if f"{v[0]}_clip{v[2]}" in spec["subset"]]
    result = {"kind": "twins", "steps": steps, "dtype": str(dtype), "model": overrides, "budget_gb": budget}
    losses, weights = {}, {}
    for name, eng, clip, extra in variants:
        if extra.get("gpu_memory_gb", 0) is None or (device.type != "cuda" and "gpu_memory_gb" in extra):
            result[f"{name}_clip{clip}"] = {"error": "no budget found" if device.type == "cuda" else "cpu"}
            continue
        cfg = TrainConfig(**base, grad_clip=clip, engine=eng, **extra)
        e = build_engine(cfg, cfg.model_config(), device, dtype, seq_len=seq)
        ld = TokenLoader(data, cfg.batch_size, cfg.seed)
        t0 = time.perf_counter()
        ls = [e.train_step(ld.next_batch(), lr_at(s + 1, cfg.lr, cfg.warmup, steps, 0.1)).loss for s in range(steps)]
        key = f"{name}_clip{clip}"
        losses[key], weights[key] = ls, {k: v.float().clone() for k, v in e.state_dict().items()}
        info = {"seconds": round(time.perf_counter() - t0, 1)}
        if getattr(e, "plan", None) is not None:
            info.update(plan=e.plan.summary(), ring_max_in_use=e.ring.max_in_use,
                        host_stash=e.hstash is not None, offloaded=e.act_host is not None)
        e.close()
        ref = "resident_compiled_clip1.0" if extra.get("compile") else f"resident_clip{clip}"
        if eng == "streaming" and ref in losses:
            a, b = losses[ref], ls
            rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
            wdiff = max(float((weights[ref][k] - weights[key][k]).abs().max()) for k in weights[ref])
            info.update(max_rel_loss_diff=rel, max_abs_weight_diff=wdiff, passed=rel < 1e-3, loss_first=a[0],
                        loss_last_resident=a[-1], loss_last_streaming=b[-1], vs=ref)
        result[key] = info
    result["device_name"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    checked = [v for v in result.values() if isinstance(v, dict) and "passed" in v]
    result["pass"] = bool(checked) and all(v["passed"] for v in checked)
    return result


def _host_info() -> dict:
    """What the host AdamW runs on: usable cores, NUMA nodes, the cgroup's CPU quota."""
    def read(path):
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    return {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "numa_nodes": read("/sys/devices/system/node/online"), "cgroup_cpu_max": read("/sys/fs/cgroup/cpu.max"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def adam_microbench() -> dict:
    """Host AdamW throughput (params/s) of the flat-buffer kernels the streaming engine uses, and what slows them.

    The engine's host AdamW ran at 3.7 Gparam/s in one run and 0.5-0.8 in later ones (BENCHMARKS.md). This probe
    separates the suspects on one box: memory bandwidth, the thread count (all cores, or all but four as the
    engine defaults), the calling thread (main, or a background thread as in the engine), a busy main thread
    launching CUDA work beside it, host-to-device DMA reading host memory beside it, and page-locked memory."""
    import threading

    import torch

    from plasma_pipeline.train import optim
    from plasma_pipeline.train.host_rings import register_pinned
    from plasma_pipeline.train.optim import adamw_flat_, adamw_flat_compiled_, compiled_adamw_available

    n = 1 << 27
    p, m, v = torch.randn(n), torch.zeros(n), torch.zeros(n)
    g = torch.randn(n).to(torch.bfloat16)
    kw = dict(lr=1e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, n_decay=n)
    cores = os.cpu_count() or 1
    out = {**_host_info(), "default_threads": torch.get_num_threads(), "numel": n}
    cuda = torch.cuda.is_available()

    def rate(fn, reps=3) -> float:
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return round(n / best / 1e9, 3)

    def in_thread(fn, busy=None):
        """fn's rate when called from a background thread, while busy() (if given) runs on this thread."""
        res, stop = {}, threading.Event()
        th = threading.Thread(target=lambda: (res.setdefault("r", rate(fn)), stop.set()))
        th.start()
        while busy is not None and not stop.is_set():
            busy()
        th.join()
        return res["r"]

    def launches():  # the engine's main thread: small CUDA launches from Python, a CPU batch now and then
        x = torch.ones(1024, device="cuda")
        for _ in range(200):
            x = x * 1.0001
        torch.randint(0, 32000, (64, 1025))

    h2d = fn = None
    if cuda:
        src = torch.empty(1 << 28, dtype=torch.float32, pin_memory=True)
        dst = torch.empty_like(src, device="cuda")
        side = torch.cuda.Stream()

        def h2d():  # master weights streaming in (1 GiB per call, ~55 GB/s)
            with torch.cuda.stream(side):
                dst.copy_(src, non_blocking=True)
            side.synchronize()

    for th in (cores, max(1, cores - 4)):
        torch.set_num_threads(th)
        a, b = torch.empty(n), torch.randn(n)
        out[f"copy_gb_s_t{th}"] = round(rate(lambda: a.copy_(b)) * 8, 1)
        out[f"eager_t{th}"] = rate(lambda: adamw_flat_(p, g, m, v, step=2, chunk=1 << 20, **kw), reps=2)
        optim._compiled.clear()
        torch._dynamo.reset()
        t = time.perf_counter()
        if not compiled_adamw_available(work_out=False):
            out[f"compiled_t{th}"] = None
            continue
        out[f"compile_s_t{th}"] = round(time.perf_counter() - t, 1)
        fn = lambda: adamw_flat_compiled_(p, g, m, v, None, step=3, **kw)  # noqa: E731
        rate(fn, reps=1)
        out[f"compiled_t{th}_main"] = rate(fn)
        out[f"compiled_t{th}_thread"] = in_thread(fn)
        if cuda:
            out[f"compiled_t{th}_thread_busy_main"] = in_thread(fn, launches)
            out[f"compiled_t{th}_thread_h2d"] = in_thread(fn, h2d)
    if cuda and fn is not None and register_pinned(p):
        out[f"compiled_t{torch.get_num_threads()}_main_pinned_master"] = rate(fn)
    return out


# ----------------------------------------------------------------------------- orchestrator


def run_variant(spec: dict, timeout: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **spec.get("env", {}))
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-1500:]
        return {**spec, "error": f"timeout after {timeout}s", "stderr_tail": tail.decode() if isinstance(tail, bytes) else tail}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["wall_s"] = round(time.time() - t0, 1)
            # what the worker printed besides its result (e.g. a host AdamW compile falling back to eager)
            r["stdout_tail"] = "\n".join(x for x in p.stdout.splitlines() if not x.startswith("RESULT "))[-1500:]
            return r
    return {**spec, "error": f"exit {p.returncode}", "stderr_tail": p.stderr[-3000:]}


def fmt_row(r: dict) -> str:
    if "error" in r:
        return f"{r.get('model', r.get('kind')):>16} {r.get('variant', ''):>14}  ERROR {r['error']}"
    if r.get("kind") == "twins":
        return f"{'twins':>16} {'':>14}  pass={r['pass']} " + " ".join(
            f"{k}: rel={v['max_rel_loss_diff']:.2e}" for k, v in r.items() if isinstance(v, dict) and "passed" in v)
    if r.get("kind") == "adam":
        return f"{'host adamw':>16} {'':>14}  " + json.dumps(r)
    return (f"{r['model']:>16} {r['variant']:>14} {str(r.get('budget_gb') or ''):>4}  tok/s {r['tokens_per_s']:>8.0f}  "
            f"TFLOP/s {r['model_tflops']:>6.1f}  MFU {r['mfu']}  step {r['step_s']:.3f}s (plan {r.get('plan_step_s')})"
            f"  comp {r['compute_s']:.3f} h2d {r['h2d_s']:.3f} d2h {r['d2h_s']:.3f} adam {r['cpu_adam_s']:.3f}"
            f" wait {r['adam_wait_s']:.3f} idle {r['idle_s']:.3f}  gpu {r['gpu_peak_gb']}G/{r['gpu_reserved_gb']}G"
            f" (plan {r.get('plan_gpu_gb')}) host {r['host_peak_rss_gb']}G ({r['host_bytes_per_param']} B/param)"
            f" keep {r.get('n_keep')} kept/tok/layer {r.get('kept_bytes_per_token_layer')}"
            f" (plan {r.get('planned_kept_bytes_per_token_layer')})"
            + (f" ckpt {r['checkpoint']} save extra s {r.get('save_extra_s')}" if r.get("checkpoint") else ""))


def write_markdown(results: list, path: Path) -> None:
    rows = ["| model | engine | budget GiB | batch (micro) | step s | plan step s | tok/s | TFLOP/s | MFU | GPU peak GiB"
            " (plan) | host peak GiB (B/param) | kept blocks |", "|" + "---|" * 12]
    for r in results:
        if "tokens_per_s" not in r:
            continue
        rows.append(f"| {r['model']} | {r['variant']}{' ' + json.dumps(r.get('extra')) if r.get('extra') else ''} | "
                    f"{r.get('budget_gb') or ''} | {r['batch']} ({r.get('micro_used', r['micro'])}) | {r['step_s']} | "
                    f"{r.get('plan_step_s', '')} | {r['tokens_per_s']:,.0f} | {r['model_tflops']} | {r['mfu']} | "
                    f"{r['gpu_peak_gb']} ({r.get('plan_gpu_gb', '')}) | {r['host_peak_rss_gb']} "
                    f"({r['host_bytes_per_param']}) | {r.get('n_keep', '')} |")
    path.write_text("\n".join(rows) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--out", default="trainer_bench.json")
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of group:variant to leave out, e.g. 1.2b:resident")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--twins", default="", help="comma list of twin variants to run (name_clipX), default all")
    ap.add_argument("--budget-s", type=int, default=3600, help="skip variants that would start after this")
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        fn = {"twins": worker_twins, "adam": lambda s: {"kind": "adam", **adam_microbench()}}.get(spec.get("kind"), worker_bench)
        print("RESULT " + json.dumps(fn(spec)), flush=True)
        return 0

    only = [g for g in args.only.split(",") if g]
    results, out = [], Path(args.out)
    t_start = time.time()

    def record(r):
        r["date"] = time.strftime("%Y-%m-%d")
        results.append(r)
        out.write_text(json.dumps(results, indent=1))
        write_markdown(results, out.with_suffix(".md"))
        print(fmt_row(r), flush=True)

    if not only or "adam" in only:
        if not args.quick:
            record(run_variant({"kind": "adam"}, 300))
    if "adam-passive" in only:  # OpenMP threads sleep at once instead of spinning after each parallel region
        record(run_variant({"kind": "adam", "env": {"OMP_WAIT_POLICY": "PASSIVE"}}, 300))
    if not only or "twins" in only:
        record(run_variant({"kind": "twins", "steps": 8 if args.quick else 50,
                            "subset": [s for s in args.twins.split(",") if s]}, 400))
    plan = QUICK_PLAN if args.quick else PLAN
    groups = only or [g for g in dict.fromkeys(p[0] for p in plan) if g in DEFAULT_GROUPS]
    for want in groups:
        for group, model, variant, batch, micro, comp, timeout, extra in plan:
            if group != want or f"{group}:{variant}" in args.skip.split(","):
                continue
            if time.time() - t_start > args.budget_s:
                record({"model": model, "variant": variant, "error": "skipped: out of time budget"})
                continue
            if want == "llama3-8b" and any(r.get("model") == "9.3b" and "tokens_per_s" in r for r in results):
                continue  # the larger shape trained: the 8B row is only the fallback
            spec = {"model": model, "variant": variant, "batch": batch, "micro": micro, "compile": comp,
                    "seq": 64 if args.quick else SEQ, "steps": args.steps, "warmup": args.warmup, "extra": extra}
            record(run_variant(spec, timeout))
    print("\n".join(fmt_row(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
