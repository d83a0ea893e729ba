"""Checks on a trained base model's own token shards (the real run of recipes/gpu.yaml), on the GPU.

    python benchmarks/real_run_checks.py hf  --recipe recipes/gpu.yaml --out $OUT/hf.json
    python benchmarks/real_run_checks.py fp8 --recipe recipes/gpu.yaml --steps 200 --out $OUT/fp8.json
    python benchmarks/real_run_checks.py hf  --recipe recipes/default.yaml --steps 20     # CPU smoke run

hf: transformers' LlamaForCausalLM of the same shape, trained with the base_model version's own run settings
(its run.json: steps, batch, micro-batch, LR schedule, AdamW betas/eps/decay groups, clipping, seed and so the
batch order) on the same shards, against the losses that version logged (metrics.jsonl) at the same steps and
its val loss on the same fixed val sample. Same batches, so the per-step losses compare directly. --init ours
(default) starts HF's model from the base_model's own step-0 weights (our init for the run's seed; the names
are HF's already), so a gap is the implementation's, not the init's; --init hf keeps HF's normal(0,
initializer_range) init, as the 2026-12-01 third-session run did.
fp8: our resident engine for --steps steps in bf16, then with fp8: true, same shards, order and settings: the
final loss (mean of the last 10% of steps) and tokens/s of each.
precision: where a bf16 train-loss gap to transformers comes from. Ours and HF from the same init, each in fp32
and in bf16, and ours with residual_fp32 (HF's autocast keeps the residual stream and RoPE in fp32, ours kept
them in bf16); final train loss of each. --model / --model-overrides pick the shape (a small one on CPU).

    python benchmarks/real_run_checks.py precision --recipe recipes/default.yaml --steps 1000 \
        --model toy --model-overrides '{"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 352}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plasma_pipeline.train.config import TrainConfig  # noqa: E402
from plasma_pipeline.train.data import TokenLoader, val_batches  # noqa: E402
from plasma_pipeline.train.engine import split_batch, to_device  # noqa: E402
from plasma_pipeline.train.optim import lr_at, torch_adamw  # noqa: E402


def base_model_run(recipe_path: str, run_dir: str = "") -> tuple[TrainConfig, list[dict], Path]:
    """The base_model's TrainConfig, metrics records and directory: the store's current version, or run_dir
    (its run.json and metrics.jsonl, copied from another machine; data_dir is then found under this store)."""
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe

    store = store_for(load_recipe(recipe_path))
    path = Path(run_dir) if run_dir else store.current("base_model").path
    run = json.loads((path / "run.json").read_text())
    data = Path(run["data_dir"])
    if not data.exists():  # trained elsewhere: the same version of the shards, under this machine's store root
        root = Path(store.root)
        data = root / Path(*data.parts[data.parts.index(root.name) + 1:])
    cfg = TrainConfig.from_dict({**run, "data_dir": str(data)})
    metrics = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return cfg, metrics, path


def _device_dtype(cfg: TrainConfig):
    from plasma_pipeline.train.trainer import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    return device, resolve_dtype(cfg.dtype, device)  # auto: bf16 on cuda, fp32 on cpu


class _HFLoss:
    """A transformers causal LM scored the way our engines score a batch: summed target cross entropy over the
    batch's target count, micro-batch by micro-batch (engine.split_batch), so trainer.evaluate() can run on it."""

    def __init__(self, model, micro: int, device, dtype):
        self.model, self.micro, self.device, self.dtype = model, micro, device, dtype

    def batch_loss(self, batch, fwd, backward: bool) -> float:
        n_targets = max(1, batch.n_targets)
        total = 0.0
        for ids, tgt, mask in to_device(split_batch(batch, self.micro), self.device):
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                logits = fwd(input_ids=ids).logits
            ce = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), reduction="none")
            loss = (ce.sum() if mask is None else (ce * mask.flatten()).sum()) / n_targets
            if backward:
                loss.backward()
            total += float(loss.detach())
        return total

    @torch.no_grad()
    def eval_loss(self, batch) -> float:
        return self.batch_loss(batch, self.model, backward=False)


def train_hf(cfg: TrainConfig, steps: int, log_steps: set[int], compile_model: bool, init: str = "ours") -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from plasma_pipeline.infer.export_hf import hf_config
    from plasma_pipeline.train.trainer import evaluate

    device, dtype = _device_dtype(cfg)
    mcfg = cfg.model_config()
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(LlamaConfig(**{**hf_config(mcfg), "use_cache": False}))
    if init == "ours":
        from plasma_pipeline.train.model import init_state_dict

        missing, unexpected = model.load_state_dict(init_state_dict(mcfg, cfg.seed, "cpu"), strict=False)
        missing = [k for k in missing if not (mcfg.tie_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"our init does not map onto LlamaForCausalLM: missing {missing}, extra {unexpected}")
        model.tie_weights()
    model = model.to(device)
    params = list(model.parameters())
    opt = torch_adamw([p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2], lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay,
                      fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_model and device.type == "cuda" else model
    hf = _HFLoss(model, cfg.micro_batch, device, dtype)
    loader = TokenLoader(cfg.data_dir, cfg.batch_size, cfg.seed)
    losses, norms, times = {}, {}, []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        batch = loader.next_batch()
        lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)  # the run's schedule, also for a prefix
        for g in opt.param_groups:
            g["lr"] = lr
        loss = hf.batch_loss(batch, fwd, backward=True)
        # max_norm inf: no clipping, but the norm, for the per-step comparison with ours
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step in log_steps or step == steps:
            losses[step] = loss
            norms[step] = float(norm)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    model.eval()
    val = evaluate(hf, val_batches(cfg.data_dir, cfg.batch_size, cfg.val_batches)) or {}
    tokens = batch.inputs.numel()
    timed = times[min(len(times) - 1, 20):]
    return {"losses": losses, "grad_norms": norms, **val, "tokens_per_s": round(tokens / statistics.median(timed), 1),
            "wall_s": round(sum(times), 1), "n_params": sum(p.numel() for p in params)}


def cmd_hf(args) -> dict:
    cfg, metrics, path = base_model_run(args.recipe, args.run_dir)
    ours = {int(r["step"]): float(r["loss"]) for r in metrics if "loss" in r and r.get("step") is not None}
    ours_norm = {int(r["step"]): float(r["grad_norm"]) for r in metrics
                 if r.get("grad_norm") is not None and r.get("step") is not None}
    steps = args.steps or cfg.steps
    ours = {k: v for k, v in ours.items() if k <= steps}
    hf = train_hf(cfg, steps, set(ours), compile_model=not args.no_compile, init=args.init)
    common = sorted(set(ours) & set(hf["losses"]))
    tail = common[-max(1, len(common) // 10):]
    ours_tail = statistics.mean(ours[s] for s in tail)
    hf_tail = statistics.mean(hf["losses"][s] for s in tail)
    final = [r for r in metrics if r.get("event") == "final"]
    ours_val = {k: v for k, v in (final[-1] if final else {}).items() if k.startswith("val_loss")}
    out = {"kind": "hf_compare", "model_version": path.name, "init": args.init, "steps": steps,
           "batch_size": cfg.batch_size,
           "lr": cfg.lr, "compared_steps": common, "ours_loss": {s: ours[s] for s in common},
           "hf_loss": {s: hf["losses"][s] for s in common}, "ours_tail_loss": round(ours_tail, 4),
           # where the two part: the pre-clip gradient norm of each at the same steps
           "ours_grad_norm": {s: round(ours_norm[s], 4) for s in common if s in ours_norm},
           "hf_grad_norm": {s: round(hf["grad_norms"][s], 4) for s in common if s in hf["grad_norms"]},
           "hf_tail_loss": round(hf_tail, 4), "tail_steps": tail,
           "ours_val": ours_val if steps == cfg.steps else None,
           "hf_val": {k: round(v, 4) for k, v in hf.items() if k.startswith("val_loss")},
           "hf_tokens_per_s": hf["tokens_per_s"], "hf_wall_s": hf["wall_s"], "hf_n_params": hf["n_params"],
           "ours_no_worse": ours_tail <= hf_tail * 1.0 + 1e-9}
    if ours_val.get("val_loss") is not None and steps == cfg.steps:
        out["ours_val_no_worse"] = ours_val["val_loss"] <= out["hf_val"]["val_loss"]
    return out


def train_ours(cfg: TrainConfig, steps: int) -> dict:
    from plasma_pipeline.train.trainer import build_engine

    device, dtype = _device_dtype(cfg)
    mcfg = cfg.model_config()
    engine = build_engine(cfg, mcfg, device, dtype)
    loader = TokenLoader(cfg.data_dir, cfg.batch_size, cfg.seed)
    losses, times = [], []
    for step in range(1, steps + 1):
        batch = loader.next_batch()
        st = engine.train_step(batch, lr_at(step, cfg.lr, cfg.warmup, steps, cfg.min_lr_ratio))
        losses.append(st.loss)
        times.append(st.wall_s)
    engine.close()
    tokens = batch.inputs.numel()
    timed = times[min(len(times) - 1, 20):]
    return {"losses": [round(x, 4) for x in losses], "tokens_per_s": round(tokens / statistics.median(timed), 1),
            "final_loss": round(statistics.mean(losses[-max(1, steps // 10):]), 4)}


def cmd_fp8(args) -> dict:
    cfg, _, path = base_model_run(args.recipe, args.run_dir)
    steps = args.steps
    runs = {}
    for name, fp8 in (("bf16", False), ("fp8", True)):
        c = TrainConfig.from_dict({**cfg.to_dict(), "engine": "resident", "fp8": fp8, "steps": steps,
                                   "gpus": 1})
        runs[name] = train_ours(c, steps)
    rel = (runs["fp8"]["final_loss"] - runs["bf16"]["final_loss"]) / runs["bf16"]["final_loss"]
    return {"kind": "fp8_check", "data_of": path.name, "steps": steps, **{f"{k}_{m}": v[m] for k, v in runs.items()
            for m in ("final_loss", "tokens_per_s")}, "fp8_speedup": round(runs["fp8"]["tokens_per_s"]
            / runs["bf16"]["tokens_per_s"], 3), "final_loss_rel_diff": round(rel, 5),
            "within_1pct": abs(rel) <= 0.01, "losses": {k: v["losses"] for k, v in runs.items()}}


def cmd_precision(args) -> dict:
    cfg, _, path = base_model_run(args.recipe, args.run_dir)
    steps = args.steps or 1000
    shape = {"model": args.model or cfg.model,
             "model_overrides": {**cfg.model_overrides, **json.loads(args.model_overrides or "{}")}}
    runs = {}
    for name, impl, dtype, extra in (("ours fp32", "ours", "fp32", {}), ("hf fp32", "hf", "fp32", {}),
                                     ("ours bf16", "ours", "bf16", {}), ("hf bf16", "hf", "bf16", {}),
                                     ("ours bf16, residual_fp32", "ours", "bf16", {"residual_fp32": True})):
        c = TrainConfig.from_dict({**cfg.to_dict(), **shape, "engine": "resident", "dtype": dtype, "steps": steps,
                                   "gpus": 1, "fp8": False, **extra})
        t0 = time.perf_counter()
        if impl == "ours":
            losses = train_ours(c, steps)["losses"]
        else:
            hf = train_hf(c, steps, set(range(1, steps + 1)), compile_model=False, init="ours")
            losses = [hf["losses"][s] for s in range(1, steps + 1)]
        final = statistics.mean(losses[-max(1, steps // 10):])
        runs[name] = {"final_loss": round(final, 4), "wall_s": round(time.perf_counter() - t0, 1),
                      "losses": [round(x, 4) for x in losses]}
        print(f"{name:28s} final train loss {final:.4f}  ({runs[name]['wall_s']} s)", flush=True)
    ref = runs["ours fp32"]["final_loss"]
    print("\n| run | final train loss (mean of the last 10 % of steps) | vs ours fp32 |\n|---|---:|---:|")
    for name, r in runs.items():
        r["vs_ours_fp32"] = round(r["final_loss"] / ref - 1, 5)
        print(f"| {name} | {r['final_loss']:.4f} | {100 * r['vs_ours_fp32']:+.2f} % |")
    return {"kind": "precision_check", "data_of": path.name, "steps": steps, **shape, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["hf", "fp8", "precision"])
    ap.add_argument("--recipe", default="recipes/gpu.yaml")
    ap.add_argument("--steps", type=int, default=0, help="hf: the run's own steps (0); fp8: default 200")
    ap.add_argument("--no-compile", action="store_true", help="hf: eager LlamaForCausalLM")
    ap.add_argument("--init", choices=["ours", "hf"], default="ours",
                    help="hf: start from the base_model's step-0 weights (ours) or HF's own init")
    ap.add_argument("--run-dir", default="", help="run.json + metrics.jsonl of a base_model trained elsewhere")
    ap.add_argument("--model", default="", help="precision: model shape (default: the base_model's)")
    ap.add_argument("--model-overrides", default="", help="precision: JSON of ModelConfig fields over it")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.what == "fp8" and not args.steps:
        args.steps = 200
    out = {"hf": cmd_hf, "fp8": cmd_fp8, "precision": cmd_precision}[args.what](args)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    short = {k: v for k, v in out.items() if k not in ("losses", "ours_loss", "hf_loss", "compared_steps", "runs",
                                                        "ours_grad_norm", "hf_grad_norm")}
    print(json.dumps(short, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
