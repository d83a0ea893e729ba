"""Memory plan of the streaming engine: what lives where, and whether it fits a GPU budget.

The engine asks `make_plan` before it allocates anything. A plan fixes the micro-batch, how many of the top
blocks keep their autograd graph on the GPU (no recompute in backward), where the boundary activations of the
other blocks live (GPU or pinned host memory; those blocks are recomputed in backward), and where a step's
gradients wait until the global norm is known (GPU, or a full pinned host slab when the GPU cannot hold them).
Among the plans that fit, the one with the smallest modelled step time wins. The byte counts are the engine's
own allocations; activation bytes are a per-token model of what autograd saves for one block (measured on an
H200 for the compiled block, see BENCHMARKS.md) with headroom for the allocator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from plasma_pipeline.train.config import ModelConfig

GiB = 2**30
STAGE_NUMEL = 1 << 26  # fp32 staging buffer for host-to-device weight copies (256 MiB), cast to bf16 on the GPU
RUNTIME_GPU_BYTES = int(1.0 * GiB)  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack
RUNTIME_HOST_BYTES = int(3.0 * GiB)  # CUDA runtime, torch, Python
# Throughput model for "expected step time" (H200 box, PCIe 5; measured there 2026-12-01): leads, not promises.
MATMUL_FLOPS = 500e12
PCIE_BYTES_S = 50e9
HOST_ADAM_PARAMS_S = 3.9e9


def _size(b: float) -> str:
    return f"{b / GiB:.1f} GiB" if b >= 0.1 * GiB else f"{b / 2**20:.1f} MiB"


class PlanError(ValueError):
    """The run cannot fit the budget; raised before any allocation."""


@dataclass
class Plan:
    micro_batch: int
    n_keep: int  # top blocks whose autograd graph stays on the GPU (no recompute)
    boundaries: str  # "gpu" | "host": where the other blocks' inputs wait for backward (then recomputed)
    grad_stash: str  # "gpu" | "host": where a step's gradients wait for the global norm
    ring_slots: int
    gpu_bytes: int
    host_bytes: int
    step_s: float
    detail: dict

    @property
    def passes(self) -> int:
        return self.detail.get("passes", 1)

    @property
    def recompute_layers(self) -> int:
        return self.detail["n_layers"] - self.n_keep

    def summary(self) -> str:
        d = self.detail
        return (f"streaming plan: micro_batch {self.micro_batch} in {self.passes} pass(es), {self.n_keep}/{d['n_layers']} blocks keep activations"
                f" on the GPU, {self.recompute_layers} recompute from boundaries on the {self.boundaries}; gradients"
                f" wait on the {self.grad_stash}; GPU {_size(self.gpu_bytes)} of "
                f"{_size(d['gpu_budget_gb'] * GiB) if d['gpu_budget_gb'] else 'unbounded'},"
                f" host {_size(self.host_bytes)} ({self.host_bytes / d['n_params']:.1f} B/param), expected step"
                f" {self.step_s:.2f} s")

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}


def unit_numels(cfg: ModelConfig) -> tuple[int, int]:
    """(outer unit numel: embedding, head, final norm; one block's numel)."""
    outer = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2) + cfg.dim
    return outer, cfg.layer_params()


def ring_slot_numel(cfg: ModelConfig) -> int:
    """A gradient ring slot holds one block (the outer unit, often larger, goes through in pieces)."""
    outer, layer = unit_numels(cfg)
    return layer if cfg.n_layers else outer


def kept_bytes_per_token(cfg: ModelConfig, elt: int, compiled: bool = True) -> int:
    """What autograd saves for one block, per token, without the weights (they are re-streamed, not saved).

    Compiled (inductor): the block input and the normed inputs, q, k, v (repeated for GQA), the attention output
    and its log-sum-exp, the gate/up projections and their product: about 8 d + 3 ffn elements (seen on the CPU:
    4024 bytes per token at d 64, ffn 160 in fp32). Eager also keeps each RMSNorm's fp32 upcast and the SiLU
    output. Measured on an H200 (2026-12-01): 1.00x the compiled count at 235m, 1.35x the eager count at 1.2b;
    the factors below leave 10 % over that."""
    d, f = cfg.dim, cfg.ffn_dim
    base = elt * (8 * d + 3 * f) if compiled else 1.35 * (elt * (8 * d + 4 * f) + 8 * d)
    return int((base + 4 * cfg.n_heads) * 1.1)


def working_bytes(cfg: ModelConfig, tokens: int, elt: int, compiled: bool = True) -> int:
    """Transient GPU memory of one chunk's block backward (its graph plus the gradients flowing through it)
    and of the head (fp32 logits, their gradient and the bf16 copy)."""
    block = 2 * kept_bytes_per_token(cfg, elt, compiled) * tokens
    head = tokens * cfg.vocab_size * (4 + 4 + 4 + elt)  # fp32 logits, log-softmax, their gradient, bf16 copy
    return max(block, head)


def make_plan(cfg: ModelConfig, batch: int, seq: int, elt: int, gpu_budget: int | None, *, micro_batch: int = 0,
              activations: str = "auto", ring_slots: int = 3, cuda: bool = True, compiled: bool = True,
              host_budget: int | None = None) -> Plan:
    """The fastest plan whose GPU bytes fit gpu_budget and host bytes host_budget (None: unbounded); among plans
    within 3 % of the fastest, the one using the least host memory, then the fewest passes. PlanError naming the smallest need if none.

    A plan may split the batch into passes: each pass streams every layer forward and back (the weights cross
    PCIe once more per pass) and gradients add up in fp32 on the GPU, so the graphs of a whole pass can be kept
    instead of recomputed. elt: bytes per element of the compute dtype (2 for bf16)."""
    n_params = cfg.num_params()
    outer, layer = unit_numels(cfg)
    total = outer + cfg.n_layers * layer
    L, d = cfg.n_layers, cfg.dim
    micros = [micro_batch] if micro_batch > 0 else sorted({m for m in (1, 2, 4, 8, 16, 32, 64) if m <= batch} | {batch})
    micros = [min(m, batch) for m in micros]
    keeps = {"keep": [L], "recompute": [0], "offload": [0]}.get(activations, range(L, -1, -1))
    bounds = {"recompute": ["gpu"], "offload": ["host"], "keep": ["gpu"]}.get(activations, ["gpu", "host"])
    stage = min(STAGE_NUMEL, max(outer, layer)) if cuda and elt != 4 else 0
    # Always on the GPU: the outer unit and two block buffers in the compute dtype, the fp32 staging buffer, the
    # outer gradient (fp32) and one block's gradient in flight (fp32 sum + a chunk's bf16 grads + bf16 send copy).
    fixed = (outer + 2 * layer) * elt + stage * 4 + outer * 4 + layer * (4 + 2 * elt) + (RUNTIME_GPU_BYTES if cuda else 0)
    kpt = kept_bytes_per_token(cfg, elt, compiled)
    cands = []
    for micro in micros:
        n_chunks = -(-batch // micro)
        work = working_bytes(cfg, micro * seq, elt, compiled)
        for passes in [p for p in range(1, n_chunks + 1) if n_chunks % p == 0]:
            rows = batch // passes if passes > 1 else batch
            ptok = rows * seq  # tokens per pass
            bound_bytes = ptok * d * elt  # one block's input, one pass
            for stash in ("gpu", "host"):
                if passes > 1 and stash == "host":
                    continue  # multi-pass sums gradients on the GPU anyway
                stash_gpu = total * 4 if passes > 1 else (total * elt if stash == "gpu" else 0)
                for n_keep in keeps:
                    for where in (bounds if n_keep < L else ["gpu"]):
                        n_rc = L - n_keep
                        kept = n_keep * kpt * ptok
                        bgpu = (n_rc if where == "gpu" else 2) * bound_bytes  # host: two in flight on the GPU
                        gpu = fixed + stash_gpu + kept + bgpu + work + 2 * bound_bytes  # + the stream's x and dy
                        host = (12 * n_params + ring_slots * ring_slot_numel(cfg) * elt
                                + (RUNTIME_HOST_BYTES if cuda else 0)
                                + (total * elt if stash == "host" else 0)
                                + (n_rc * bound_bytes if where == "host" else 0))
                        step = _step_time(cfg, n_params, total, batch * seq, micro * seq, n_rc, where, elt, passes, compiled)
                        cands.append(Plan(micro, n_keep, where, stash, ring_slots, int(gpu), int(host), step,
                                          {"passes": passes}))
    # 4 % of the budget is left to the caching allocator's fragmentation (the budget caps reserved memory).
    fits = [c for c in cands if (gpu_budget is None or c.gpu_bytes * 1.04 <= gpu_budget)
            and (host_budget is None or c.host_bytes <= host_budget)]
    detail = {"n_params": n_params, "n_layers": L, "tokens": batch * seq,
              "gpu_budget_gb": (gpu_budget or 0) / GiB, "host_budget_gb": (host_budget or 0) / GiB,
              "kept_bytes_per_token_layer": kpt}
    if not fits:
        smallest = min(cands, key=lambda c: c.gpu_bytes)
        small_host = min(cands, key=lambda c: c.host_bytes)
        if gpu_budget is not None and smallest.gpu_bytes * 1.04 > gpu_budget:
            raise PlanError(
                f"gpu_memory_gb: {cfg.name} (batch {batch}x{seq}) cannot fit {_size(gpu_budget)} of GPU memory; "
                f"the smallest plan (micro_batch {smallest.micro_batch}, activations "
                f"{'offloaded' if smallest.boundaries == 'host' else 'recomputed'}, gradients on the "
                f"{smallest.grad_stash}) needs {_size(smallest.gpu_bytes)}: raise gpu_memory_gb or lower batch_size")
        raise PlanError(
            f"host_memory_gb: {cfg.name} (batch {batch}x{seq}) needs at least {_size(small_host.host_bytes)} of host "
            f"memory ({small_host.host_bytes / n_params:.1f} B/param) within gpu_memory_gb; {_size(host_budget)} "
            f"allowed")
    fastest = min(c.step_s for c in fits)
    best = min((c for c in fits if c.step_s <= fastest * 1.03), key=lambda c: (c.host_bytes, c.passes, c.step_s, -c.n_keep, c.gpu_bytes))
    best.detail = {**detail, **best.detail}
    return best


def _step_time(cfg: ModelConfig, n_params: int, total: int, tokens: int, chunk_tokens: int, n_rc: int, where: str,
               elt: int, passes: int = 1, compiled: bool = True) -> float:
    """Modelled step seconds: the longest of compute, host->device and device->host copies, plus the time the
    host AdamW of the last step outlasts the first pass's forward (it gets no earlier window when the step is
    clipped: the norm is known only at the end of backward)."""
    eff = min(1.0, (chunk_tokens / 32768) ** 0.1)  # small chunks run the matmuls below their peak
    rate = MATMUL_FLOPS * eff * min(1.0, (cfg.dim / 4096) ** 0.3) * (1.0 if compiled else 0.85)
    rc_flops = 2 * n_rc * cfg.layer_params() * tokens
    compute = (6 * n_params * tokens + rc_flops) / rate
    first_forward = (2 * n_params * tokens / passes) / rate
    bound = tokens * cfg.dim * elt * n_rc if where == "host" else 0
    h2d = (passes * 2 * total * 4 + bound) / PCIE_BYTES_S  # fp32 master in forward and backward of every pass
    d2h = (total * elt + bound) / PCIE_BYTES_S
    adam = total / HOST_ADAM_PARAMS_S
    return max(compute, h2d, d2h) * 1.05 + max(0.0, adam - first_forward)


def meminfo_bytes(field: str) -> int | None:
    """A /proc/meminfo field (MemTotal, MemAvailable, ...) in bytes; None where there is no such file or field."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_memory_budget(host_memory_gb: float) -> int | None:
    """Bytes the plan may use on the host: host_memory_gb, else 92 % of MemTotal; None if unknown."""
    if host_memory_gb > 0:
        return int(host_memory_gb * GiB)
    total = meminfo_bytes("MemTotal")
    return None if total is None else int(total * 0.92)


def device_budget(device, gpu_memory_gb: float) -> int | None:
    """Bytes the plan may use on `device`: gpu_memory_gb, else 90 % of the card; None on the CPU."""
    if device.type != "cuda":
        return int(gpu_memory_gb * GiB) if gpu_memory_gb > 0 else None
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    if gpu_memory_gb > 0:
        if gpu_memory_gb * GiB > total:
            raise PlanError(f"gpu_memory_gb: {gpu_memory_gb} GiB is more than {torch.cuda.get_device_name(device)} "
                            f"has ({total / GiB:.1f} GiB)")
        return int(gpu_memory_gb * GiB)
    return int(total * 0.90)


def plan_for(mcfg: ModelConfig, tcfg, device, dtype, seq_len: int) -> Plan:
    """make_plan for a TrainConfig on a device."""
    import torch

    cuda = device.type == "cuda"
    return make_plan(mcfg, tcfg.batch_size, seq_len, torch.finfo(dtype).bits // 8,
                     device_budget(device, tcfg.gpu_memory_gb), micro_batch=tcfg.micro_batch,
                     activations=tcfg.activations, ring_slots=tcfg.grad_ring_slots, cuda=cuda,
                     compiled=tcfg.compile and cuda, host_budget=host_memory_budget(tcfg.host_memory_gb))
