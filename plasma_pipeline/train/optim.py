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


def _adamw_pass(p, g, m, v, decay_mul, scale, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps):
    """The update of one flat slice, in place: read p, g, m, v; write p, m, v; return the new p."""
    gf = g.float() * scale
    m_new = m + one_minus_b1 * (gf - m)
    v_new = v * b2 + one_minus_b2 * gf * gf
    p_new = p * decay_mul - step_size * m_new / (torch.sqrt(v_new) / bc2_sqrt + eps)
    m.copy_(m_new)
    v.copy_(v_new)
    p.copy_(p_new)
    return p_new


def _fused_adamw_kernel(p, g, m, v, work, *scalars):
    """One pass that also writes the low-precision working copy (inlined into one compiled kernel)."""
    work.copy_(_adamw_pass(p, g, m, v, *scalars))


def _fused_adamw_kernel_master(p, g, m, v, *scalars):
    """The same pass without a low-precision copy (the streaming engine casts on the GPU)."""
    _adamw_pass(p, g, m, v, *scalars)


_compiled: dict[bool, object] = {}  # with a low-precision copy out -> compiled kernel, or False if unavailable

# Inductor decides at code generation whether a CPU loop gets an OpenMP parallel region, from the size hint of the
# first call: it needs cpp.min_chunk_size (512) elements per thread. The kernels used to be warmed up on 4,096
# elements, so on 16 threads they compiled serial, one core for the whole model (0.75 Gparam/s on the H200 box
# against 3.9 parallel; 2 cores, as in CI, passed the test). min_chunk_size 1 makes every size parallel, and as
# a config change it is part of the compile cache's key, so a serial kernel cached before cannot come back.
_KERNEL_OPTIONS = {"cpp.min_chunk_size": 1}
_WARMUP_NUMEL = 1 << 20


def compile_kernel(fn, n: int = _WARMUP_NUMEL):
    """fn compiled for any slice length (dynamic shapes), warmed up on n and n - 7 elements."""
    p, m, v = torch.randn(n), torch.zeros(n), torch.zeros(n)
    g, w = torch.randn(n).bfloat16(), torch.empty(n, dtype=torch.bfloat16)
    sc = [torch.tensor(x) for x in (1.0, 1.0, 0.1, 0.95, 0.05, 1e-3, 0.2, 1e-8)]
    with_copy = fn is _fused_adamw_kernel
    k = torch.compile(fn, dynamic=True, options=_KERNEL_OPTIONS)
    for r in (n, n - 7):
        k(p[:r], g[:r], m[:r], v[:r], *([w[:r]] if with_copy else []), *sc)
    return k


def compiled_adamw_available(work_out: bool = True) -> bool:
    """Compile the one-pass host AdamW kernel (inductor C++/OpenMP, on torch.get_num_threads() threads), with or
    without the low-precision copy out, once per process; False if this box cannot."""
    if work_out not in _compiled:
        try:
            _compiled[work_out] = compile_kernel(_fused_adamw_kernel if work_out else _fused_adamw_kernel_master)
        except Exception as e:  # no compiler, unsupported platform: the eager path is always there
            print(f"host AdamW: compiled kernel unavailable ({type(e).__name__}: {e}); using eager", flush=True)
            _compiled[work_out] = False
    return _compiled[work_out] is not False


@torch.no_grad()
def adamw_flat_compiled_(param, grad, exp_avg, exp_avg_sq, work_out, *, step: int, lr: float, beta1: float,
                         beta2: float, eps: float, weight_decay: float, n_decay: int, grad_scale: float = 1.0) -> None:
    """Same update as adamw_flat_ in one fused pass (needs compiled_adamw_available(work_out is not None))."""
    step_size, bc2_sqrt = _bias_terms(step, lr, beta1, beta2)
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731  (0-d tensors: no recompiles)
    common = [t(grad_scale), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(step_size), t(bc2_sqrt), t(eps)]
    n = param.numel()
    for s, e, mul in ((0, n_decay, 1.0 - lr * weight_decay), (n_decay, n, 1.0)):
        if e <= s:
            continue
        if work_out is None:
            _compiled[False](param[s:e], grad[s:e], exp_avg[s:e], exp_avg_sq[s:e], t(mul), *common)
        else:
            _compiled[True](param[s:e], grad[s:e], exp_avg[s:e], exp_avg_sq[s:e], work_out[s:e], t(mul), *common)


def _bias_terms(step: int, lr: float, beta1: float, beta2: float) -> tuple[float, float]:
    """(step_size, sqrt of the second-moment bias correction), as torch.optim.AdamW computes them."""
    return lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step)


def _flat_chunks(param, grad, exp_avg, exp_avg_sq, chunk: int, grad_scale: float):
    """(start, end, p, m, v, g) over cache-sized slices; g is a fresh fp32 copy of the scaled gradient."""
    n = param.numel()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        g = grad[s:e].float() if grad.dtype != torch.float32 else grad[s:e].clone()
        if grad_scale != 1.0:
            g.mul_(grad_scale)
        yield s, e, param[s:e], exp_avg[s:e], exp_avg_sq[s:e], g


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
    step_size, bc2_sqrt = _bias_terms(step, lr, beta1, beta2)
    for s, e, p, m, v, g in _flat_chunks(param, grad, exp_avg, exp_avg_sq, chunk, grad_scale):
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
    step_size, bc2_sqrt = _bias_terms(step, lr, beta1, beta2)
    for s, e, p, m, v, g in _flat_chunks(param, grad, exp_avg, exp_avg_sq, chunk, grad_scale):
        denom = torch.sqrt(v).div_(bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=step_size)
        if weight_decay != 0.0 and s < n_decay:
            p[: min(e, n_decay) - s].div_(1.0 - lr * weight_decay)
        v.addcmul_(g, g, value=-(1.0 - beta2)).div_(beta2).clamp_min_(0.0)
        m.add_(g, alpha=-(1.0 - beta1)).div_(beta1)
