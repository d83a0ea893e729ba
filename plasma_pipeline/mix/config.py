"""Configuration of stage 7 (pretrain_shards): mixing weights, token budget, packing and val hold-out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class MixConfig:
    weights: dict[str, float] = field(default_factory=dict)  # domain (source) -> weight; share = weight / sum
    total_tokens: int = 10_000_000  # train token budget over all domains, BOS/EOS separators included
    seq_len: int = 1024  # model context; every row holds exactly seq_len + 1 tokens
    val_fraction: float = 0.01  # share of each domain's documents (chosen by id hash) held out for val
    val_max_tokens_per_domain: int = 1_000_000  # cap on val tokens per domain; 0 = no cap
    max_epochs: float = 4.0  # upsampling cap: a domain's documents are repeated at most this many times
    seed: int = 0  # seed of the val split, the per-epoch document orders and the row shuffle
    rows_per_shard: int = 8192  # rows per table handed to a writer; also the train row shuffle buffer
    num_threads: int = 2  # SentencePiece threads for new parts when build_token_shards runs in one process (workers: 1)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, dict) or not self.weights:
            raise ValueError("mix.weights: a non-empty mapping of domain -> weight is required")
        for d, w in self.weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"mix.weights.{d}: weight must be a finite number, got {w!r}")
            if w < 0:
                raise ValueError(f"mix.weights.{d}: weight must be >= 0, got {w}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("mix.weights: all weights are zero; at least one domain needs a positive weight")
        for name in ("total_tokens", "seq_len", "rows_per_shard", "val_max_tokens_per_domain"):
            v = getattr(self, name)
            if isinstance(v, float) and v.is_integer():  # YAML 1e9 / 2.0 style
                setattr(self, name, int(v))
        if not isinstance(self.total_tokens, int) or self.total_tokens <= 0:
            raise ValueError(f"mix.total_tokens: must be an int > 0, got {self.total_tokens!r}")
        if not isinstance(self.seq_len, int) or self.seq_len < 1:
            raise ValueError(f"mix.seq_len: must be an int >= 1, got {self.seq_len!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"mix.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.val_max_tokens_per_domain < 0:
            raise ValueError(f"mix.val_max_tokens_per_domain: must be >= 0, got {self.val_max_tokens_per_domain}")
        if not math.isfinite(self.max_epochs) or self.max_epochs <= 0:
            raise ValueError(f"mix.max_epochs: must be > 0, got {self.max_epochs}")
        if self.rows_per_shard < 1:
            raise ValueError(f"mix.rows_per_shard: must be >= 1, got {self.rows_per_shard}")
        if self.num_threads < 1:
            raise ValueError(f"mix.num_threads: must be >= 1, got {self.num_threads}")

    @property
    def row_len(self) -> int:
        return self.seq_len + 1
