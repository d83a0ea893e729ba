"""Model shapes and run configuration: a run is a config, not a pile of flags.

Constraints are plain Python (this package depends only on torch, numpy, pyarrow, safetensors, sentencepiece):
`Literal` hints name the allowed strings, and `TrainConfig.validate()` (run by `__post_init__`) checks types and
ranges, raising ValueError whose message starts with the field name. The recipe loader validates the same
dataclasses from YAML with pydantic, which reads these hints and runs `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Engine = Literal["resident", "streaming"]
# "bfloat16" / "float32" are aliases that trainer.resolve_dtype has always accepted.
Dtype = Literal["auto", "bf16", "fp32", "bfloat16", "float32"]
SpeculativeAdam = Literal["auto", "always", "never"]
# Streaming: where block activations live between forward and backward ("auto": the planner decides per layer).
Activations = Literal["auto", "keep", "recompute", "offload"]
# Devices: "auto", "cpu", "cuda" or "cuda:N" (a torch device string).
_DEVICE_RE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


@dataclass
class ModelConfig:
    """Shape of a LLaMA-style decoder (RMSNorm, RoPE, GQA, SwiGLU)."""

    name: str = "toy"
    """Named shape this config came from."""
    vocab_size: int = 512
    """Rows of the embedding / columns of the head."""
    dim: int = 64
    """Residual stream width (HF hidden_size)."""
    n_layers: int = 2
    """Number of decoder blocks."""
    n_heads: int = 4
    """Query heads."""
    n_kv_heads: int = 2
    """Key/value heads (GQA); must divide n_heads."""
    ffn_dim: int = 160
    """SwiGLU hidden width (HF intermediate_size)."""
    max_seq_len: int = 64
    """Longest context the model is meant for (HF max_position_embeddings)."""
    rope_theta: float = 10000.0
    """RoPE base, HF LlamaForCausalLM convention (rotate_half)."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon (HF rms_norm_eps)."""
    tie_embeddings: bool = False
    """Share embed_tokens and lm_head weights (HF tie_word_embeddings)."""
    init_std: float = 0.02
    """Std of the normal init of matrices; output projections are scaled by 1/sqrt(2*n_layers)."""

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        """ValueError (message starting with the field name) if the shape cannot be built."""
        _check_types(self)
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a finite number > 0, got {v}")
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads: bad head layout: dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads: bad head layout: n_heads={self.n_heads} is not divisible by "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"n_heads: head_dim must be even for RoPE, got dim/n_heads = {self.dim}/{self.n_heads} "
                             f"= {self.head_dim}")

    def layer_params(self) -> int:
        d, kv = self.dim, self.n_kv_heads * self.head_dim
        return 2 * d * d + 2 * d * kv + 3 * d * self.ffn_dim + 2 * d

    def num_params(self) -> int:
        emb = self.vocab_size * self.dim
        return self.n_layers * self.layer_params() + self.dim + emb * (1 if self.tie_embeddings else 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Named shapes. Param counts (num_params) are pinned by a test.
MODEL_CONFIGS: dict[str, ModelConfig] = {
    # CPU test toy: trains in milliseconds.
    "toy": ModelConfig(),
    # Plasma 1.0: 235.7M with tied embeddings.
    "plasma-1.0-235m": ModelConfig(
        name="plasma-1.0-235m", vocab_size=32000, dim=1024, n_layers=18, n_heads=16, n_kv_heads=4,
        ffn_dim=2816, max_seq_len=1024, tie_embeddings=True,
    ),
    # ~1.2B (1.21B).
    "1.2b": ModelConfig(
        name="1.2b", vocab_size=32000, dim=2048, n_layers=24, n_heads=16, n_kv_heads=4,
        ffn_dim=5632, max_seq_len=2048,
    ),
    # ~2.4B (2.37B).
    "2.4b": ModelConfig(
        name="2.4b", vocab_size=32000, dim=2560, n_layers=32, n_heads=20, n_kv_heads=4,
        ffn_dim=6912, max_seq_len=2048,
    ),
    # LLaMA-7B widths with GQA 32/8: 5.93B (GQA removes 0.8B of k/v weights from LLaMA-1's 6.74B). Was "7b".
    "5.9b": ModelConfig(
        name="5.9b", vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
        ffn_dim=11008, max_seq_len=2048,
    ),
    # Meta-Llama-3-8B's shape exactly (8.03B): 128256 vocab, GQA 32/8, SwiGLU 14336, rope theta 500000.
    "llama3-8b": ModelConfig(
        name="llama3-8b", vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
        ffn_dim=14336, max_seq_len=8192, rope_theta=500000.0,
    ),
    # LLaMA-3-8B widths, 38 layers instead of 32: 9.34B.
    "9.3b": ModelConfig(
        name="9.3b", vocab_size=128256, dim=4096, n_layers=38, n_heads=32, n_kv_heads=8,
        ffn_dim=14336, max_seq_len=8192, rope_theta=500000.0,
    ),
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """A named shape with field overrides (e.g. vocab_size from the tokenizer)."""
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {sorted(MODEL_CONFIGS)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise ValueError(f"{unknown[0]}: not a ModelConfig field (fields: {', '.join(_field_names(ModelConfig))})")
    cfg = dataclasses.replace(MODEL_CONFIGS[name], **overrides)
    cfg.validate()
    return cfg


@dataclass
class TrainConfig:
    """One training run (pretrain or SFT), loadable from JSON."""

    model: str = "toy"
    """Named model shape (see MODEL_CONFIGS)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Field overrides for the model shape, e.g. {"vocab_size": 32000, "max_seq_len": 2048}."""
    data_dir: str = ""
    """Directory with train/*.parquet and val/*.parquet token shards."""
    out_dir: str = "runs/train"
    """Where checkpoints/, final/ and metrics.jsonl go; a run here resumes from its latest checkpoint."""
    steps: int = 100
    """Optimizer steps in the whole run (the LR schedule spans these)."""
    batch_size: int = 8
    """Sequences per optimizer step."""
    micro_batch: int = 0
    """Sequences per forward chunk inside a step (0 = whole batch); bounds activation memory."""
    lr: float = 3e-4
    """Peak learning rate."""
    warmup: int = 10
    """Linear warmup steps from 0 to lr."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to matrices only (not norms)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient L2 norm to this (0 = off)."""
    engine: Engine = "resident"
    """"resident" (all on the accelerator) or "streaming" (layers streamed from host memory)."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu", "cuda" or "cuda:N"."""
    dtype: Dtype = "auto"
    """Compute dtype: "auto" (bf16 on cuda, fp32 on cpu), "bf16" or "fp32"."""
    seed: int = 0
    """Seed for init and data order."""
    init_from: str = ""
    """Directory with model.safetensors (a final/ or checkpoint dir) to start from, e.g. for SFT."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end / on SIGTERM)."""
    checkpoint_background: bool = False
    """Streaming: write periodic (save_every) checkpoints on a thread straight from host memory while training
    goes on (final, halt and SIGTERM saves wait for it and are written in the foreground)."""
    checkpoint_stage_gb: float = 0.0
    """Streaming, background checkpoints: host memory for copies of the units the optimizer reaches before the
    writer does, so the optimizer does not wait for the disk (0 = half of MemAvailable when the save starts)."""
    keep_last: int = 2
    """Checkpoints kept on disk; older ones are deleted after a successful save."""
    eval_every: int = 0
    """Validation every N steps (0 = only at the end)."""
    val_batches: int = 4
    """Batches of the val split per evaluation (0 = no evaluation)."""
    log_every: int = 1
    """Log metrics every N steps."""
    recompute: bool = False
    """Resident engine: recompute each block in backward (activation checkpointing). Streaming: see activations."""
    activations: Activations = "auto"
    """Streaming: "keep" every block's autograd graph on the GPU (no recompute), "recompute" from block-boundary
    activations kept on the GPU, "offload" those boundaries to pinned host memory, or "auto": the planner keeps as
    many layers as gpu_memory_gb allows and recomputes (or offloads) the rest."""
    gpu_memory_gb: float = 0.0
    """Streaming: GPU memory budget in GiB (0 = the whole device). Enforced (set_per_process_memory_fraction);
    the planner picks micro_batch (when 0) and activation placement to fit, or fails before any work."""
    host_memory_gb: float = 0.0
    """Streaming: host memory the plan may use, in GiB (0 = 92 % of MemTotal)."""
    grad_ring_slots: int = 3
    """Streaming: pinned host slots (one layer of bf16 each) that gradients pass through on the way to the host
    AdamW; bounds host memory beyond master + moments."""
    compile: bool = False
    """torch.compile the block function (cuda only)."""
    fp8: bool = False
    """Resident engine: the blocks' seven matmuls in fp8 through torchao float8 training (dynamic tensorwise
    scaling; an optional dependency; GPUs of compute capability 8.9+, emulated on CPU). The LM head stays bf16."""
    residual_fp32: bool = False
    """Resident engine: keep the residual stream and the RoPE tables in fp32 and use the compute dtype only inside
    the matmuls and attention (autocast), as transformers does; default: the whole stream in the compute dtype.
    Its effect on training is what `benchmarks/real_run_checks.py precision` measures."""
    gpus: int = 1
    """Data-parallel processes (one GPU each; CPU processes on a CPU device) that the training assets start through
    torchrun; 1 = one process. The global batch stays batch_size (a multiple of gpus), and a run resumes on any
    count. A trainer already under torchrun takes its world size from torchrun, not from this."""
    halt_at_step: int = 0
    """Stop after this step with a checkpoint, as if preempted (tests, preemptible jobs); 0 = off."""
    lock_timeout_s: float = 120.0
    """Seconds to wait for another trainer holding out_dir/.trainer.lock (e.g. one writing its SIGTERM checkpoint)."""
    speculative_adam: SpeculativeAdam = "auto"
    """Streaming: step each layer on the host during backward assuming no clipping, undo/redo if clipped:
    "auto" (when the previous step was not clipped), "always" or "never"."""
    cpu_adam_compile: bool = True
    """Streaming on cuda: one-pass host AdamW compiled by inductor (falls back to eager if it cannot)."""
    cpu_adam_threads: int = 0
    """Streaming: torch intra-op threads for the host AdamW (0 = on cuda at most half the cores, leaving cores to
    the main thread and the copies; on cpu torch's default)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError naming the field for a value of the wrong type or out of range."""
        _check_types(self)
        if self.model not in MODEL_CONFIGS:
            raise ValueError(f"model: unknown model config {self.model!r} (known: {', '.join(MODEL_CONFIGS)})")
        unknown = sorted(set(self.model_overrides) - set(_field_names(ModelConfig)))
        if unknown:
            raise ValueError(f"model_overrides: {unknown[0]!r} is not a ModelConfig field "
                             f"(fields: {', '.join(_field_names(ModelConfig))})")
        for name in ("steps", "batch_size", "keep_last", "gpus"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("micro_batch", "warmup", "save_every", "eval_every", "val_batches", "log_every", "halt_at_step",
                     "cpu_adam_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "eps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a finite number > 0, got {v}")
        if self.batch_size % self.gpus:
            raise ValueError(f"batch_size: {self.batch_size} does not split over gpus: {self.gpus}; "
                             f"use a multiple of gpus")
        if self.grad_ring_slots < 1:
            raise ValueError(f"grad_ring_slots: must be >= 1, got {self.grad_ring_slots}")
        for name in ("weight_decay", "grad_clip", "lock_timeout_s", "gpu_memory_gb", "host_memory_gb",
                     "checkpoint_stage_gb"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {v}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.fp8 and self.engine != "resident":
            raise ValueError(f"fp8: only the resident engine has fp8 matmuls; set engine: resident or fp8: false "
                             f"(engine is {self.engine!r})")
        if self.residual_fp32 and self.engine != "resident":
            raise ValueError(f"residual_fp32: only the resident engine keeps an fp32 residual stream; set engine: "
                             f"resident or residual_fp32: false (engine is {self.engine!r})")
        if not _DEVICE_RE.fullmatch(self.device):
            raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")

    def model_config(self) -> ModelConfig:
        return model_config(self.model, **self.model_overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)  # __post_init__ validates

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- plain-Python type checks (no pydantic here) ---------------------------------------------------------------


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}


def _type_ok(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    base = typing.get_origin(hint) or hint
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(base, type):
        return isinstance(value, base)
    return True


def _check_types(cfg: Any) -> None:
    """ValueError naming the first field whose value does not match its hint (int, float, bool, str, Literal, dict)."""
    for name, hint in _hints(type(cfg)).items():
        value = getattr(cfg, name)
        if not _type_ok(value, hint):
            if typing.get_origin(hint) is Literal:
                want = "one of " + ", ".join(map(str, typing.get_args(hint)))
            else:
                want = _TYPE_WORDS.get(typing.get_origin(hint) or hint, str(hint))
            raise ValueError(f"{name}: expected {want}, got {value!r}")
