"""LR schedule and the AdamW update used by both engines.

The resident engine uses torch.optim.AdamW (fused on cuda, foreach on cpu); the streaming engine runs
`adamw_flat_` on host buffers. Both follow torch's AdamW arithmetic step for step, so the engines are twins.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """LR for optimizer step `step` (1-based): linear warmup, then cosine to peak * min_ratio."""
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if total <= warmup:
        return peak
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def torch_adamw(params_decay, params_no_decay, lr: float, betas, eps: float, weight_decay: float, fused: bool):
    groups = [
        {"params": list(params_decay), "weight_decay": weight_decay},
        {"params": list(params_no_decay), "weight_decay": 0.0},
    ]
    kw = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kw)


@torch.no_grad()
def adamw_flat_(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    n_decay: int,
    grad_scale: float = 1.0,
    work_out: torch.Tensor | None = None,
    chunk: int = 1 << 20,
) -> None:
    """In-place AdamW on one flat fp32 buffer (torch.optim.AdamW's arithmetic), in cache-sized chunks.

    grad may be low precision; it is upcast per chunk and multiplied by grad_scale (the clip coefficient).
    Weight decay applies to param[:n_decay]. work_out, if given, receives the new weights in its dtype
    (the bf16 copy that is streamed to the GPU).
    """
    bc1 = 1.0 - beta1**step
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    step_size = lr / bc1
    n = param.numel()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        p, m, v = param[s:e], exp_avg[s:e], exp_avg_sq[s:e]
        g = grad[s:e].float() if grad.dtype != torch.float32 else grad[s:e].clone()
        if grad_scale != 1.0:
            g.mul_(grad_scale)
        if weight_decay != 0.0 and s < n_decay:
            p[: min(e, n_decay) - s].mul_(1.0 - lr * weight_decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = torch.sqrt(v, out=g).div_(bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)
        if work_out is not None:
            work_out[s:e].copy_(p)


@torch.no_grad()
def adamw_undo_flat_(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    n_decay: int,
    grad_scale: float = 1.0,
    chunk: int = 1 << 20,
) -> None:
    """Invert `adamw_flat_` with the same arguments (exact in real arithmetic, to rounding in floats).

    The streaming engine steps each layer as soon as its gradient is on the host, assuming the global
    norm will not be clipped; when it is, it undoes that step and redoes it with the clip coefficient.
    """
    bc1 = 1.0 - beta1**step
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    step_size = lr / bc1
    n = param.numel()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        p, m, v = param[s:e], exp_avg[s:e], exp_avg_sq[s:e]
        g = grad[s:e].float() if grad.dtype != torch.float32 else grad[s:e].clone()
        if grad_scale != 1.0:
            g.mul_(grad_scale)
        denom = torch.sqrt(v).div_(bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=step_size)
        if weight_decay != 0.0 and s < n_decay:
            p[: min(e, n_decay) - s].div_(1.0 - lr * weight_decay)
        v.addcmul_(g, g, value=-(1.0 - beta2)).div_(beta2).clamp_min_(0.0)
        m.add_(g, alpha=-(1.0 - beta1)).div_(beta1)
