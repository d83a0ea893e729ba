"""The engine interface both training engines implement, and the step statistics they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from plasma_pipeline.train.data import Batch


@dataclass
class StepStats:
    """What one optimizer step did. Times are seconds; copy/compute times come from CUDA events."""

    loss: float
    grad_norm: float
    wall_s: float = 0.0
    compute_s: float = 0.0
    h2d_s: float = 0.0
    d2h_s: float = 0.0
    cpu_adam_s: float = 0.0
    adam_wait_s: float = 0.0
    streamed_bytes: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def idle_s(self) -> float:
        """Wall time in which the compute stream had no work."""
        return max(0.0, self.wall_s - self.compute_s)

    @property
    def overlap(self) -> float | None:
        """Share of copy + host-optimizer time hidden under compute (1 = fully hidden); None if there was none."""
        side = self.h2d_s + self.d2h_s + self.cpu_adam_s
        if side <= 0:
            return None
        return max(0.0, min(1.0, 1.0 - self.idle_s / side))


class Engine(Protocol):
    """One training engine: owns weights and optimizer state for a model shape."""

    step: int  # optimizer steps taken

    def train_step(self, batch: Batch, lr: float) -> StepStats: ...

    def eval_loss(self, batch: Batch) -> float: ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 weights on the host keyed by HF names (no lm_head.weight when tied)."""
        ...

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        """'{name}.exp_avg', '{name}.exp_avg_sq' for every weight, and 'step'."""
        ...

    def load(self, weights: dict[str, torch.Tensor], optim: dict[str, torch.Tensor] | None) -> None: ...

    def close(self) -> None: ...


def split_batch(batch: Batch, micro: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    b = batch.inputs.shape[0]
    micro = b if micro <= 0 else min(micro, b)
    out = []
    for s in range(0, b, micro):
        m = None if batch.mask is None else batch.mask[s : s + micro]
        out.append((batch.inputs[s : s + micro], batch.targets[s : s + micro], m))
    return out


def to_device(chunks, device: torch.device):
    nb = device.type == "cuda"

    def mv(t):
        if t is None:
            return None
        if nb:
            t = t.pin_memory()
        return t.to(device, non_blocking=nb)

    return [(mv(i), mv(t), mv(m)) for i, t, m in chunks]


def autocast_ctx(device: torch.device, dtype: torch.dtype):
    """bf16 matmuls over fp32 weights; on CPU too (`dtype: bf16` with `device: cpu` failed with a dtype mismatch
    in the first matmul without it)."""
    if dtype != torch.float32:
        return torch.autocast(device.type, dtype=dtype)
    return torch.autocast(device.type, enabled=False)
