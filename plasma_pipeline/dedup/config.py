"""Configuration of stage 5 (dedup): exact dedup, then MinHash LSH with confirmation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

KEEP_RULES = ("longest", "shortest", "smallest_id", "first")
BACKENDS = ("numpy", "rensa")


@dataclass
class DedupConfig:
    """One flat, picklable config; the recipe's `dedup:` slice maps onto these fields."""

    ngram: int = 5  # words per shingle (word n-grams of lower-cased \w+ tokens)
    num_perm: int = 112  # MinHash permutations; must equal bands * rows
    bands: int = 14  # LSH bands; candidate threshold ~ (1/bands)^(1/rows)
    rows: int = 8  # MinHash values per band
    seed: int = 1  # seed of the permutations and of the word hash
    confirm_threshold: float = 0.7  # true shingle Jaccard a candidate pair needs to be merged; 0 = trust LSH
    keep: str = "longest"  # keeper per cluster: longest | shortest | smallest_id | first (input order)
    source_priority: list[str] = field(default_factory=list)  # sources listed first win before the keep rule
    # shard workers for signatures and confirmation shingles (1 = in this process, 0 = all cores); fewer run when
    # memory_gb cannot hold them all, and none that would get too little work to repay its start (core.MIN_*_PER_WORKER)
    processes: int = 1
    backend: str = "rensa"  # MinHash kernel: rensa (Rust, >= 0.5; fastest) or numpy (multiply-add-shift hashing)
    full_pairs_max: int = 16  # buckets up to this size yield all pairs; larger ones yield star + chain pairs
    # RAM the whole dedup may use, parent and shard workers together. Signatures, band hashes and candidate pairs
    # live in `spill_dir`; each external pass (exact keys, each band, candidate pairs) is split into as many
    # hash / doc ranges as it takes to fit, and no more workers run than fit (budget.py says what counts).
    memory_gb: float = 4.0
    spill_dir: str = ""  # where the dedup spills (a temporary directory inside it; "" = the system temp dir)
    text_field: str = "text"  # column holding the document text
    id_field: str = "id"  # column holding the document id (made from file name and row if absent)
    source_field: str = "source"  # column holding the source name (file stem if absent)

    def __post_init__(self) -> None:
        if self.processes == 0 and not isinstance(self.processes, bool):
            self.processes = os.cpu_count() or 1
        for name in ("ngram", "num_perm", "bands", "rows", "processes", "full_pairs_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"dedup.{name} must be a positive integer, got {value!r}")
        if self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"dedup.num_perm ({self.num_perm}) must equal dedup.bands * dedup.rows ({self.bands} * {self.rows})"
            )
        if self.full_pairs_max < 2:
            raise ValueError(f"dedup.full_pairs_max must be >= 2, got {self.full_pairs_max}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"dedup.seed must be a non-negative integer, got {self.seed!r}")
        if not 0.0 <= float(self.confirm_threshold) <= 1.0:
            raise ValueError(f"dedup.confirm_threshold must be in [0, 1], got {self.confirm_threshold!r}")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"dedup.keep must be one of {KEEP_RULES}, got {self.keep!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"dedup.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.source_priority, list) or not all(isinstance(s, str) for s in self.source_priority):
            raise ValueError(f"dedup.source_priority must be a list of source names, got {self.source_priority!r}")
        if isinstance(self.memory_gb, bool) or not isinstance(self.memory_gb, int | float) or not self.memory_gb > 0:
            raise ValueError(f"dedup.memory_gb must be a number > 0, got {self.memory_gb!r}")
        if not isinstance(self.spill_dir, str):
            raise ValueError(f"dedup.spill_dir must be a directory path, got {self.spill_dir!r}")
        for name in ("text_field", "id_field", "source_field"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"dedup.{name} must be a non-empty column name")

    @property
    def lsh_threshold(self) -> float:
        """Jaccard where a pair becomes a candidate with probability ~1/2: (1/bands)^(1/rows)."""
        return (1.0 / self.bands) ** (1.0 / self.rows)
