"""Stage 5: exact dedup, then MinHash LSH with confirmed pairs and connected-component clusters (no Dagster here).

Modules: `core` (the passes of `dedup_tables`), `signatures` (per-shard worker functions), `lsh` (candidates and
confirmation), `clusters` (exact groups, components, keepers), `report`, `result`, `reference`
(`ReferenceIndex`), `spill` (the spill directory), `budget` (`dedup.memory_gb`), `minhash` (the kernels).

The names below are imported on first use, so a shard worker that unpickles `signatures.spill_signatures`
imports only what it runs."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DedupConfig": "plasma_pipeline.dedup.config",
    "DedupResult": "plasma_pipeline.dedup.result",
    "ShardSignatures": "plasma_pipeline.dedup.signatures",
    "signature_shard": "plasma_pipeline.dedup.signatures",
    "dedup_tables": "plasma_pipeline.dedup.core",
    "dedup_files": "plasma_pipeline.dedup.files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
