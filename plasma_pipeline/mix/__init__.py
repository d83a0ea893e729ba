"""Stage 7: domain-weighted mixing with exact token budgets, tokenised and packed into train/val token shards."""

from plasma_pipeline.mix.build import ShardFiles, TokenCache, build_token_shards, is_val_doc
from plasma_pipeline.mix.config import MixConfig
from plasma_pipeline.mix.pack import RowPacker, majority_domain, rows_to_table
from plasma_pipeline.mix.plan import DomainPlan, plan_mix, split_budget

__all__ = [
    "DomainPlan",
    "MixConfig",
    "RowPacker",
    "ShardFiles",
    "TokenCache",
    "build_token_shards",
    "is_val_doc",
    "majority_domain",
    "plan_mix",
    "rows_to_table",
    "split_budget",
]
