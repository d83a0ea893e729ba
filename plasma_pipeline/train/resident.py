"""Resident engine: weights, gradients and AdamW state all live on the device."""

from __future__ import annotations

import contextlib
import time

import torch

from plasma_pipeline.train.config import ModelConfig, TrainConfig
from plasma_pipeline.train.data import Batch
from plasma_pipeline.train.distributed import all_reduce_sum_, world_size
from plasma_pipeline.train.engine import StepStats, autocast_ctx, split_batch, to_device
from plasma_pipeline.train.model import build_model
from plasma_pipeline.train.optim import torch_adamw


class _LossForward(torch.nn.Module):
    """The model with its training loss as forward(): the module DDP wraps."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, ids, tgt, mask, n_targets: int, dtype):
        return self.inner.loss(ids, tgt, mask, n_targets, dtype)


class ResidentEngine:
    def __init__(self, mcfg: ModelConfig, tcfg: TrainConfig, device: torch.device, dtype: torch.dtype,
                 weights: dict[str, torch.Tensor] | None = None):
        self.cfg, self.tcfg, self.device, self.dtype = mcfg, tcfg, device, dtype
        self.residual_dtype = torch.float32 if tcfg.residual_fp32 else dtype  # matmuls still autocast to dtype
        linear = None
        if tcfg.fp8:
            from plasma_pipeline.train.fp8 import check_fp8_device, float8_linear

            check_fp8_device(device)
            linear = float8_linear(emulate=device.type != "cuda")
        self.model = build_model(mcfg, device=device, state_dict=weights, seed=tcfg.seed,
                                 compile_blocks=tcfg.compile and device.type == "cuda", recompute=tcfg.recompute,
                                 linear=linear)
        self.names = {id(p): n for n, p in self.model.named_parameters()}
        params = list(self.model.parameters())  # tied weights appear once
        # Data parallel: DDP (the model fits one GPU: that is this engine), whose bucketed all-reduce overlaps
        # backward. It runs the forward through a module that returns the loss, as DDP's hooks need.
        self.ddp, self.data_parallel = None, None
        if world_size() > 1:
            self.data_parallel = "ddp"
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(_LossForward(self.model), broadcast_buffers=False,
                                               device_ids=[device.index] if device.index is not None else None)
        self.params = params
        self.opt = torch_adamw([p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2],
                               lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps,
                               weight_decay=tcfg.weight_decay, fused=device.type == "cuda")
        self.step = 0

    def train_step(self, batch: Batch, lr: float) -> StepStats:
        t0 = time.perf_counter()
        for g in self.opt.param_groups:
            g["lr"] = lr
        n_targets = max(1, batch.n_targets)
        total = torch.zeros((), device=self.device)
        chunks = list(split_batch(batch, self.tcfg.micro_batch))
        for i, (ids, tgt, mask) in enumerate(to_device(chunks, self.device)):
            if self.ddp is None:
                with autocast_ctx(self.device, self.dtype):
                    loss = self.model.loss(ids, tgt, mask, n_targets, self.residual_dtype)
                loss.backward()
            else:
                # Each rank's loss is over the global target count, so the global gradient is the sum over
                # ranks; DDP averages, hence the factor. Only the last micro-batch's backward all-reduces.
                with self.ddp.no_sync() if i < len(chunks) - 1 else contextlib.nullcontext():
                    with autocast_ctx(self.device, self.dtype):
                        loss = self.ddp(ids, tgt, mask, n_targets, self.residual_dtype)
                    (loss * world_size()).backward()
            total += loss.detach()
        if self.ddp is not None:
            all_reduce_sum_([total])
        if self.tcfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.tcfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params]))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        loss_v, norm_v = float(total.item()), float(norm.item())
        wall = time.perf_counter() - t0
        return StepStats(loss=loss_v, grad_norm=norm_v, wall_s=wall, compute_s=wall)

    @torch.no_grad()
    def eval_loss(self, batch: Batch) -> float:
        n_targets = max(1, batch.n_targets)
        total = 0.0
        for ids, tgt, mask in to_device(split_batch(batch, self.tcfg.micro_batch), self.device):
            with autocast_ctx(self.device, self.dtype):
                total += float(self.model.loss(ids, tgt, mask, n_targets, self.residual_dtype).item())
        return total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu() for k, v in self.model.canonical_state_dict().items()}

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        out = {"step": torch.tensor(self.step, dtype=torch.int64)}
        for p in self.params:
            st = self.opt.state.get(p)
            if not st:
                continue
            name = self.names[id(p)]
            out[f"{name}.exp_avg"] = st["exp_avg"].detach().cpu()
            out[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu()
        return out

    def load(self, weights, optim) -> None:
        with torch.no_grad():
            self.model.load_canonical_state_dict({k: v.to(self.device) for k, v in weights.items()})
        if optim is None:
            return
        self.step = int(optim["step"])
        for p in self.params:
            name = self.names[id(p)]
            if f"{name}.exp_avg" not in optim:
                continue
            self.opt.state[p] = {
                "step": torch.tensor(float(self.step), device=self.device if self.device.type == "cuda" else "cpu",
                                     dtype=torch.float32),
                "exp_avg": optim[f"{name}.exp_avg"].to(self.device).clone(),
                "exp_avg_sq": optim[f"{name}.exp_avg_sq"].to(self.device).clone(),
            }

    def close(self) -> None:
        pass
