"""Reading dedup inputs: files (jsonl, Parquet, txt, html) through the shared streaming reader
(plasma_pipeline.collect.reader), split into parts so that `processes` workers share even one big file;
in-memory tables; or callables that return a table."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plasma_pipeline.collect import reader
from plasma_pipeline.collect.reader import Part, ReadOptions
from plasma_pipeline.dedup.config import DedupConfig


@dataclass(frozen=True)
class FileShard:
    """One part of an input file (a whole file, a byte range of lines or a row-group range) with the options
    to read it; picklable, read again by each pass of the dedup."""

    part: Part
    opts: ReadOptions

    def read(self, columns: list[str] | None = None, stats: Counter | None = None) -> pa.Table:
        return reader.read_table(self.part, self.opts, Counter() if stats is None else stats, columns)


Shard = str | os.PathLike | pa.Table | Callable[[], pa.Table] | FileShard


def read_options(cfg: DedupConfig, on_error: str = "error", txt_unit: str = "file") -> ReadOptions:
    """How the dedup reads files: the config's column names; a malformed line or non-UTF-8 bytes are an error
    naming file:line, or with on_error="skip" counted drops (dropped/malformed_line, dropped/non_utf8)."""
    return reader.cli_read_options(on_error=on_error, txt_unit=txt_unit, text_field=cfg.text_field,
                                   id_field=cfg.id_field, source_field=cfg.source_field)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files named by paths, globs or directories (the jsonl / Parquet / txt / html files inside), sorted,
    without repeats."""
    return reader.expand_inputs(inputs, "dedup input")


def file_shards(files: Sequence[str], opts: ReadOptions, processes: int = 1) -> list[FileShard]:
    """The parts of every file, in order; a big file gives several (see reader.plan_parts)."""
    return [
        FileShard(part, opts)
        for f in files
        for part in reader.plan_parts(f, reader.file_format(f), processes, opts.txt_unit)
    ]


def file_stem(path: str) -> str:
    return reader.file_stem(path)


def read_file(path: str, columns: list[str] | None = None, opts: ReadOptions | None = None) -> pa.Table:
    """One whole file as a table (only `columns` that exist, when given)."""
    path = os.fspath(path)
    fmt = reader.file_format(path)
    if fmt == "parquet":  # the pipeline's own shards: one read, columns as stored
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in present]
        return pq.read_table(path, columns=columns)
    part = Part(path, fmt)
    return reader.read_table(part, opts or ReadOptions(on_non_utf8="error"), Counter(), columns)


def load_shard(shard: Shard, cfg: DedupConfig, shard_index: int, columns: list[str] | None = None,
               stats: Counter | None = None) -> pa.Table:
    """The shard as a table with string columns `id`, `source`, `text` filled in (other columns kept)."""
    offset = 0
    if isinstance(shard, FileShard):
        table, stem, offset = shard.read(columns, stats), file_stem(shard.part.path), shard.part.row
    elif isinstance(shard, pa.Table):
        table, stem = shard, f"shard{shard_index:05d}"
    elif callable(shard):
        table, stem = shard(), f"shard{shard_index:05d}"
    else:
        path = os.fspath(shard)
        table, stem = read_file(path, columns, read_options(cfg)), file_stem(path)
    return normalise_columns(table, cfg, stem, offset)


def normalise_columns(table: pa.Table, cfg: DedupConfig, stem: str, row_offset: int = 0) -> pa.Table:
    """Make `cfg.text_field` a string column and add ids (`<stem>:<row>`, rows counted from `row_offset`) and
    source (`<stem>`) when absent."""
    if cfg.text_field not in table.column_names:
        raise KeyError(f"dedup input {stem!r} has no text column {cfg.text_field!r} (columns: {table.column_names})")
    n = table.num_rows
    if cfg.id_field not in table.column_names:
        ids = pa.array([f"{stem}:{i}" for i in range(row_offset, row_offset + n)], pa.string())
        table = table.append_column(cfg.id_field, ids)
    elif table.schema.field(cfg.id_field).type != pa.string():
        table = table.set_column(
            table.column_names.index(cfg.id_field), cfg.id_field, pc.cast(table[cfg.id_field], pa.string())
        )
    if cfg.source_field not in table.column_names:
        table = table.append_column(cfg.source_field, pa.array([stem] * n, pa.string()))
    return table
