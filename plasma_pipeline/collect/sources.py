"""The two calls the orchestration makes per recipe source: validate_source at recipe load, iter_documents
when the `raw/<source>` asset materialises."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pyarrow as pa

from plasma_pipeline.collect.config import HFSourceConfig, LocalSourceConfig, SourceConfig
from plasma_pipeline.collect.documents import batched_documents, sources_root
from plasma_pipeline.collect.hf import check_data_files, iter_hf
from plasma_pipeline.collect.local import expand_paths, iter_local
from plasma_pipeline.collect.offline import check_offline, iter_offline, required_paths


def validate_source(name: str, cfg: SourceConfig) -> None:
    """Check that what the source reads exists (globs match, offline files fetched, local data_files present).
    Raises ValueError whose message starts with the offending field. Reads no document."""
    try:
        if isinstance(cfg, LocalSourceConfig):
            expand_paths(cfg)
        elif isinstance(cfg, HFSourceConfig):
            check_data_files(cfg)
        else:
            check_offline(cfg)
    except ValueError as e:
        raise ValueError(f"source {name!r}: {e}") from e


def describe_source(cfg: SourceConfig) -> str:
    """Where a source reads from, for error messages."""
    if isinstance(cfg, LocalSourceConfig):
        return f"paths {cfg.paths}"
    if isinstance(cfg, HFSourceConfig):
        return f"hf dataset {cfg.path!r} (name={cfg.name}, split={cfg.split}, data_files={cfg.data_files})"
    return f"offline corpus {cfg.corpus!r} ({', '.join(str(p) for p in required_paths(cfg))})"


def iter_documents(source_name: str, cfg: SourceConfig, stats: Counter) -> Iterator[pa.Table]:
    """Stream the source as DOC_SCHEMA tables of at most cfg.batch_docs docs / cfg.batch_bytes text bytes.

    Counts into `stats`: kept, kept_bytes, dropped/<reason>, repaired/non_utf8, stopped/budget_docs|budget_bytes,
    and per-kind extras (files, dialogs, chunks). Raises ValueError naming the source if nothing is collected."""
    if isinstance(cfg, LocalSourceConfig):
        records = iter_local(cfg, stats)
    elif isinstance(cfg, HFSourceConfig):
        records = iter_hf(cfg, stats)
    else:
        records = iter_offline(cfg, stats)
    return batched_documents(source_name, cfg, records, stats, describe_source(cfg))


__all__ = ["describe_source", "iter_documents", "sources_root", "validate_source"]
