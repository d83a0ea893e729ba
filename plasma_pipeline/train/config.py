"""Model shapes and run configuration: a run is a config, not a pile of flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"bad head layout: dim={self.dim} heads={self.n_heads}/{self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for RoPE")

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
    # LLaMA-7B widths with GQA 32/8 (5.93B; GQA removes 0.8B of k/v weights from LLaMA-1's 6.74B).
    "7b": ModelConfig(
        name="7b", vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
        ffn_dim=11008, max_seq_len=2048,
    ),
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """A named shape with field overrides (e.g. vocab_size from the tokenizer)."""
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {sorted(MODEL_CONFIGS)}")
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
    engine: str = "resident"
    """"resident" (all on the accelerator) or "streaming" (layers streamed from host memory)."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    dtype: str = "auto"
    """Compute dtype: "auto" (bf16 on cuda, fp32 on cpu), "bf16" or "fp32"."""
    seed: int = 0
    """Seed for init and data order."""
    init_from: str = ""
    """Directory with model.safetensors (a final/ or checkpoint dir) to start from, e.g. for SFT."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end / on SIGTERM)."""
    keep_last: int = 2
    """Checkpoints kept on disk; older ones are deleted after a successful save."""
    eval_every: int = 0
    """Validation every N steps (0 = only at the end)."""
    val_batches: int = 4
    """Batches of the val split per evaluation (0 = no evaluation)."""
    log_every: int = 1
    """Log metrics every N steps."""
    recompute: bool = False
    """Resident engine: recompute each block in backward (activation checkpointing). Streaming always does."""
    compile: bool = False
    """torch.compile the block function (cuda only)."""
    halt_at_step: int = 0
    """Stop after this step with a checkpoint, as if preempted (tests, preemptible jobs); 0 = off."""
    speculative_adam: str = "auto"
    """Streaming: step each layer on the host during backward assuming no clipping, undo/redo if clipped:
    "auto" (when the previous step was not clipped), "always" or "never"."""
    cpu_adam_compile: bool = True
    """Streaming on cuda: one-pass host AdamW compiled by inductor (falls back to eager if it cannot)."""
    cpu_adam_threads: int = 0
    """Streaming: torch intra-op threads for the host AdamW (0 = torch default)."""

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
        cfg = cls(**d)
        if cfg.engine not in ("resident", "streaming"):
            raise ValueError(f"engine must be resident or streaming, got {cfg.engine!r}")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
