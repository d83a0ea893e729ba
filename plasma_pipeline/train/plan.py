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
# Throughput model for "expected step time" (H200/H100-class card, PCIe 5): leads, not promises.
MATMUL_FLOPS = 600e12
PCIE_BYTES_S = 45e9
HOST_ADAM_PARAMS_S = 4.5e9


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
    def recompute_layers(self) -> int:
        return self.detail["n_layers"] - self.n_keep

    def summary(self) -> str:
        d = self.detail
        return (f"streaming plan: micro_batch {self.micro_batch}, {self.n_keep}/{d['n_layers']} blocks keep activations"
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


def kept_bytes_per_token(cfg: ModelConfig, elt: int) -> int:
    """What autograd saves for one block, per token, without the weights (they are re-streamed, not saved).

    Inputs of every matmul (x, normed x twice, attention output, SwiGLU product), q/k/v, attention output and
    its log-sum-exp, gate and up projections, the fp32 RMSNorm statistics; +25 % for what the compiled graph
    and the allocator add."""
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    base = elt * (6 * d + 2 * kv + 4 * f) + 4 * (2 + cfg.n_heads)
    return int(base * 1.25)


def working_bytes(cfg: ModelConfig, tokens: int, elt: int) -> int:
    """Transient GPU memory of one chunk's block backward (its graph plus the gradients flowing through it)
    and of the head (fp32 logits, their gradient and the bf16 copy)."""
    block = 2 * kept_bytes_per_token(cfg, elt) * tokens
    head = tokens * cfg.vocab_size * (4 + 4 + elt)
    return max(block, head)


def make_plan(cfg: ModelConfig, batch: int, seq: int, elt: int, gpu_budget: int | None, *, micro_batch: int = 0,
              activations: str = "auto", ring_slots: int = 3, cuda: bool = True) -> Plan:
    """The fastest plan whose GPU bytes fit gpu_budget (None: unbounded); PlanError naming the smallest need if none.

    elt: bytes per element of the compute dtype (2 for bf16)."""
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
    tokens = batch * seq
    bound_bytes = tokens * d * elt  # one block's input, whole batch
    best, smallest = None, None
    for micro in micros:
        mt = micro * seq
        work = working_bytes(cfg, mt, elt)
        for stash in ("gpu", "host"):
            stash_gpu = total * elt if stash == "gpu" else 0
            for n_keep in keeps:
                for where in (bounds if n_keep < L else ["gpu"]):
                    n_rc = L - n_keep
                    kept = n_keep * kept_bytes_per_token(cfg, elt) * tokens
                    bgpu = (n_rc if where == "gpu" else 2) * bound_bytes  # host: two in flight on the GPU
                    gpu = fixed + stash_gpu + kept + bgpu + work + 2 * bound_bytes  # + the stream's x and dy
                    host = (12 * n_params + ring_slots * ring_slot_numel(cfg) * elt + (RUNTIME_HOST_BYTES if cuda else 0)
                            + (total * elt if stash == "host" else 0)
                            + (n_rc * bound_bytes if where == "host" else 0))
                    step = _step_time(cfg, n_params, total, tokens, micro * seq, n_rc, where, elt)
                    cand = Plan(micro, n_keep, where, stash, ring_slots, int(gpu), int(host), step, {})
                    if smallest is None or gpu < smallest.gpu_bytes:
                        smallest = cand
                    if gpu_budget is not None and gpu > gpu_budget:
                        continue
                    if best is None or (step, host) < (best.step_s, best.host_bytes):
                        best = cand
    detail = {"n_params": n_params, "n_layers": L, "tokens": tokens,
              "gpu_budget_gb": (gpu_budget or 0) / GiB, "kept_bytes_per_token_layer": kept_bytes_per_token(cfg, elt)}
    if best is None:
        raise PlanError(
            f"gpu_memory_gb: {cfg.name} (batch {batch}x{seq}) cannot fit {_size(gpu_budget)} of GPU memory; "
            f"the smallest plan (micro_batch {smallest.micro_batch}, activations "
            f"{'offloaded' if smallest.boundaries == 'host' else 'recomputed'}, gradients on the {smallest.grad_stash})"
            f" needs {_size(smallest.gpu_bytes)}: raise gpu_memory_gb or lower batch_size")
    best.detail = detail
    return best


def _step_time(cfg: ModelConfig, n_params: int, total: int, tokens: int, chunk_tokens: int, n_rc: int, where: str,
               elt: int) -> float:
    """Modelled step seconds: compute, host<->device copies and the host AdamW overlap, so the longest wins."""
    eff = min(1.0, (chunk_tokens / 8192) ** 0.15)  # small chunks run the matmuls below their peak
    flops = 6 * n_params * tokens + 2 * n_rc * cfg.layer_params() * tokens
    compute = flops / (MATMUL_FLOPS * eff)
    bound = tokens * cfg.dim * elt * n_rc if where == "host" else 0
    h2d = (2 * total * 4 + bound) / PCIE_BYTES_S  # fp32 master streamed in forward and backward, boundaries back
    d2h = (total * elt + bound) / PCIE_BYTES_S
    adam = total / HOST_ADAM_PARAMS_S
    return max(compute, h2d, d2h, adam) * 1.05


def device_budget(device, gpu_memory_gb: float) -> int | None:
    """Bytes the plan may use on `device`: gpu_memory_gb, else ~94 % of the card; None on the CPU."""
    if device.type != "cuda":
        return int(gpu_memory_gb * GiB) if gpu_memory_gb > 0 else None
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    if gpu_memory_gb > 0:
        if gpu_memory_gb * GiB > total:
            raise PlanError(f"gpu_memory_gb: {gpu_memory_gb} GiB is more than {torch.cuda.get_device_name(device)} "
                            f"has ({total / GiB:.1f} GiB)")
        return int(gpu_memory_gb * GiB)
    return int(total * 0.94)
