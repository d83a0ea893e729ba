"""Stage 5: exact dedup, then MinHash LSH with confirmed pairs and union-find clusters (no Dagster here)."""

from plasma_pipeline.dedup.config import DedupConfig
from plasma_pipeline.dedup.core import (
    DedupResult,
    ShardSignatures,
    UnionFind,
    dedup_tables,
    signature_shard,
)
from plasma_pipeline.dedup.files import dedup_files

__all__ = [
    "DedupConfig",
    "DedupResult",
    "ShardSignatures",
    "UnionFind",
    "dedup_files",
    "dedup_tables",
    "signature_shard",
]
