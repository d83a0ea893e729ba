"""Reading dedup inputs: Parquet or jsonl files, in-memory tables, or callables that return a table."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from plasma_pipeline.dedup.config import DedupConfig

Shard = str | os.PathLike | pa.Table | Callable[[], pa.Table]
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files named by paths, globs or directories (Parquet and jsonl files inside), sorted, without repeats."""
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = [str(p) for p in sorted(Path(item).rglob("*")) if p.is_file() and _is_data_file(str(p))]
        elif any(ch in item for ch in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
        else:
            if not os.path.isfile(item):
                raise FileNotFoundError(f"dedup input not found: {item}")
            found = [item]
        if not found:
            raise FileNotFoundError(f"dedup input matched no Parquet or jsonl files: {item}")
        for f in found:
            if not _is_data_file(f):
                raise ValueError(f"dedup input is neither Parquet nor jsonl: {f}")
            if f not in files:
                files.append(f)
    return files


def _is_data_file(path: str) -> bool:
    return path.endswith(PARQUET_SUFFIXES) or path.endswith(JSONL_SUFFIXES)


def file_stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in PARQUET_SUFFIXES + JSONL_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_file(path: str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet or jsonl file as a table (only `columns` that exist, when given)."""
    if path.endswith(PARQUET_SUFFIXES):
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in present]
        return pq.read_table(path, columns=columns)
    table = pajson.read_json(path)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def load_shard(shard: Shard, cfg: DedupConfig, shard_index: int, columns: list[str] | None = None) -> pa.Table:
    """The shard as a table with string columns `id`, `source`, `text` filled in (other columns kept)."""
    if isinstance(shard, pa.Table):
        table, stem = shard, f"shard{shard_index:05d}"
    elif callable(shard):
        table, stem = shard(), f"shard{shard_index:05d}"
    else:
        path = os.fspath(shard)
        table, stem = read_file(path, columns), file_stem(path)
    return normalise_columns(table, cfg, stem)


def normalise_columns(table: pa.Table, cfg: DedupConfig, stem: str) -> pa.Table:
    """Make `cfg.text_field` a string column and add ids (`<stem>:<row>`) and source (`<stem>`) when absent."""
    if cfg.text_field not in table.column_names:
        raise KeyError(f"dedup input {stem!r} has no text column {cfg.text_field!r} (columns: {table.column_names})")
    n = table.num_rows
    if cfg.id_field not in table.column_names:
        ids = pa.array([f"{stem}:{i}" for i in range(n)], pa.string())
        table = table.append_column(cfg.id_field, ids)
    elif table.schema.field(cfg.id_field).type != pa.string():
        table = table.set_column(
            table.column_names.index(cfg.id_field), cfg.id_field, pc.cast(table[cfg.id_field], pa.string())
        )
    if cfg.source_field not in table.column_names:
        table = table.append_column(cfg.source_field, pa.array([stem] * n, pa.string()))
    return table
