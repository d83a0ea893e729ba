"""Stage 1, collect: turn a recipe source into a stream of DOC_SCHEMA tables (id, text, source, url, meta).

    cfg = build_source_config({"kind": "offline", "corpus": "wiki", "langs": ["en-us"], "max_docs": 1000})
    validate_source("wiki", cfg)                     # at recipe load: missing paths → ValueError
    for table in iter_documents("wiki", cfg, stats):  # bounded batches, streamed
        ...
    # kind hf at scale: the same tables, with retries, resumable from a progress folder (see collect/hf.py)
    for table in collect_hf("fineweb", hf_cfg, stats, work_dir=store.work_dir("raw/fineweb", "hf-progress", {})):
        ...

Kinds: `hf` (datasets streaming), `local` (jsonl/parquet/txt/html globs), `offline` (wiki, recipes, code,
dialog, literature under data/sources). No Dagster here.
"""

from plasma_pipeline.collect.config import (
    CodeSourceConfig,
    DialogSourceConfig,
    HFSourceConfig,
    LiteratureSourceConfig,
    LocalSourceConfig,
    OfflineSourceConfig,
    RecipesSourceConfig,
    SourceConfig,
    WikiSourceConfig,
    build_source_config,
    config_class,
)
from plasma_pipeline.collect.documents import doc_id, sources_root
from plasma_pipeline.collect.hf import collect_hf
from plasma_pipeline.collect.sources import describe_source, iter_documents, validate_source

__all__ = [
    "CodeSourceConfig",
    "DialogSourceConfig",
    "HFSourceConfig",
    "LiteratureSourceConfig",
    "LocalSourceConfig",
    "OfflineSourceConfig",
    "RecipesSourceConfig",
    "SourceConfig",
    "WikiSourceConfig",
    "build_source_config",
    "collect_hf",
    "config_class",
    "describe_source",
    "doc_id",
    "iter_documents",
    "sources_root",
    "validate_source",
]
