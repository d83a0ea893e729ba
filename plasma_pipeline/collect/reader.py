"""The one streaming reader of local files: jsonl (.jsonl/.json/.ndjson, optionally .gz), Parquet, txt and html.

It serves collect's `local` source (records, turned into RawDocs by collect/local.py) and the `plasma dedup` /
`plasma clean` commands (bounded Arrow tables). Nothing is read whole: jsonl and txt go line by line (a line
may be of any length), Parquet row group by row group, and tables are cut at `batch_rows` rows / `batch_chars`
characters of text. Only a whole txt/html document is held at once.

    parts = plan_parts(path, "jsonl", processes=4)            # byte ranges at line starts, row-group ranges
    for lineno, rec in iter_json_records(part, opts, stats):  # collect: dicts with their line numbers
        ...
    for table in iter_tables(part, opts, stats, doc=True):    # CLIs: id, text, source, url, meta (JSON)
        ...

Bad input is never lost silently. A line that is not JSON, is nested too deep to parse or is not an object, and
a record whose text is not a string, raise InputError (a ValueError) naming `file:line`; with `on_error="skip"` they are
counted instead (`dropped/malformed_line`, `dropped/malformed_row` for Parquet). Bytes that are not UTF-8
follow `on_non_utf8` (replace / drop / error, naming `file:line`). A file with no content counts `empty_files`.

Parallel reading: `plan_parts` splits a big file into ranges (jsonl / txt lines at newline boundaries, Parquet
at row-group boundaries; gzip and whole-document files stay one part), `PartPool` maps a function over parts in
worker processes, results in input order, and counts the workers that did work; `rebatch` re-cuts a table
stream at row counts that depend only on the rows, so the output is byte-identical whatever the split.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plasma_pipeline.collect.documents import display_path
from plasma_pipeline.schema import DOC_SCHEMA

FORMATS = ("jsonl", "parquet", "txt", "html")
ON_ERROR = ("error", "skip")
EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".txt": "txt", ".text": "txt", ".md": "txt",
    ".html": "html", ".htm": "html",
}
# A file is split into parts of at most this many bytes (memory of one part in a worker) ...
MAX_PART_BYTES = 128 * 1024 * 1024
# ... and, for processes > 1, into up to 4 parts per worker, none smaller than this.
MIN_PART_BYTES = 1024 * 1024
_SCAN_CHUNK = 8 * 1024 * 1024
_MISSING = object()


class InputError(ValueError):
    """Input that cannot be read as asked: the message names the file (and line). The commands print it
    without a traceback; everything else is a bug and keeps its traceback."""


# -- formats and inputs -------------------------------------------------------------------------------------


def is_gzip(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(".gz")


def known_format(path: str | os.PathLike) -> str | None:
    """jsonl / parquet / txt / html from the extension (a trailing .gz is looked through), else None."""
    name = os.path.basename(os.fspath(path)).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return EXTENSIONS.get(os.path.splitext(name)[1])


def file_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """`fmt`, or with "auto" the format the extension names; ValueError when it names none."""
    if fmt != "auto":
        return fmt
    found = known_format(path)
    if found is None:
        name = os.path.basename(os.fspath(path)).lower().removesuffix(".gz")
        ext = os.path.splitext(name)[1]
        raise InputError(f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
                         f"set format: to one of {', '.join(FORMATS)}")
    return found


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its format extension (and .gz): `data/web.jsonl.gz` → `web`."""
    name = os.path.basename(os.fspath(path))
    low = name.lower()
    if low.endswith(".gz"):
        name, low = name[:-3], low[:-3]
    ext = os.path.splitext(low)[1]
    return name[: -len(ext)] if ext in EXTENSIONS and len(name) > len(ext) else name


def expand_inputs(inputs: Sequence[str | os.PathLike], what: str = "input") -> list[str]:
    """Files named by paths, globs or directories (the readable files inside, recursively), each item's matches
    sorted, without repeats. FileNotFoundError for a missing path or an empty match, ValueError for a file whose
    format the extension does not name."""
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = [str(p) for p in sorted(Path(item).rglob("*")) if p.is_file() and known_format(p)]
        elif any(ch in item for ch in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
        else:
            if not os.path.isfile(item):
                raise FileNotFoundError(f"{what} not found: {item}")
            found = [item]
        if not found:
            raise FileNotFoundError(f"{what} matched no jsonl, Parquet, txt or html file: {item}")
        for f in found:
            if known_format(f) is None:
                raise InputError(f"{what} is not jsonl, Parquet, txt or html (by its extension): {f}")
            if f not in files:
                files.append(f)
    return files


# -- options and parts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    """How to read; picklable, so it travels to worker processes with the parts."""

    # Record fields (jsonl) / columns (Parquet) holding the text, the id, the source name and the URL. The
    # tables of `iter_tables` name their columns after the first three; the URL column is always `url`.
    text_field: str = "text"
    id_field: str = "id"
    source_field: str = "source"
    url_field: str = "url"
    # txt files: one document per file, or one per non-empty line.
    txt_unit: str = "file"
    # Bytes that are not UTF-8: replace (U+FFFD, counted repaired/non_utf8), drop (dropped/non_utf8) or error.
    on_non_utf8: str = "replace"
    # A malformed line or record: error (ValueError naming file:line) or skip (counted dropped/malformed_line).
    on_error: str = "error"
    # What the error messages suggest (a recipe field, or a command-line flag).
    non_utf8_hint: str = "set on_non_utf8: replace or drop to accept it"
    error_hint: str = "set on_error: skip to drop and count such lines"
    # Bounds of one table from iter_tables.
    batch_rows: int = 4096
    batch_chars: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error: expected one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        if self.on_non_utf8 not in ("replace", "drop", "error"):
            raise ValueError(f"on_non_utf8: expected one of replace, drop, error, got {self.on_non_utf8!r}")
        if self.txt_unit not in ("file", "line"):
            raise ValueError(f"txt_unit: expected file or line, got {self.txt_unit!r}")


def cli_read_options(on_error: str = "error", txt_unit: str = "file", **fields: Any) -> ReadOptions:
    """Options for the commands: non-UTF-8 input is an error naming file:line, or with --on-error skip a
    counted drop, like a malformed line."""
    return ReadOptions(
        on_error=on_error,
        txt_unit=txt_unit,
        on_non_utf8="error" if on_error == "error" else "drop",
        non_utf8_hint="pass --on-error skip to drop and count such lines",
        error_hint="pass --on-error skip to drop and count such lines",
        **fields,
    )


@dataclass(frozen=True)
class Part:
    """One unit of reading: a whole file, or a range of one (bytes [start, stop) beginning at line `line` for
    jsonl / txt lines; row groups [start, stop) beginning at row `row` for Parquet)."""

    path: str
    fmt: str
    start: int = 0
    stop: int | None = None
    line: int = 1
    row: int = 0

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop is None

    @property
    def disp(self) -> str:
        return display_path(Path(self.path))


def desired_parts(size: int, processes: int, max_part_bytes: int = MAX_PART_BYTES,
                  min_part_bytes: int = MIN_PART_BYTES) -> int:
    n = max(1, math.ceil(size / max_part_bytes))
    if processes > 1:
        n = max(n, min(4 * processes, size // max(1, min_part_bytes)))
    return n


def plan_parts(path: str | os.PathLike, fmt: str, processes: int = 1, txt_unit: str = "file",
               max_part_bytes: int = MAX_PART_BYTES, min_part_bytes: int = MIN_PART_BYTES) -> list[Part]:
    """The parts of one file: several for a big plain jsonl / txt-lines / Parquet file (and, with processes > 1,
    enough to keep that many workers busy), else one. Splitting never changes what is read, only who reads it."""
    path = os.fspath(path)
    splittable = fmt in ("parquet", "jsonl") or (fmt == "txt" and txt_unit == "line")
    if not splittable or is_gzip(path):
        return [Part(path, fmt)]
    if fmt == "parquet":
        return _parquet_parts(path, processes, max_part_bytes, min_part_bytes)
    size = os.path.getsize(path)
    n = desired_parts(size, processes, max_part_bytes, min_part_bytes)
    if n <= 1:
        return [Part(path, fmt)]
    splits = _line_splits(path, [size * i // n for i in range(1, n)], size)
    if not splits:
        return [Part(path, fmt)]
    bounds = [(0, 1), *splits]
    return [Part(path, fmt, start=off, stop=(bounds[i + 1][0] if i + 1 < len(bounds) else None), line=line)
            for i, (off, line) in enumerate(bounds)]


def _line_splits(path: str, targets: list[int], size: int) -> list[tuple[int, int]]:
    """For each target offset, the first line start at or after it, with that line's number; one pass counting
    newlines, stopping at the last target. Duplicates and splits at the end of the file are left out."""
    out: list[tuple[int, int]] = []
    newlines = 0  # newlines before `base`
    base = 0
    ti = 0
    with open(path, "rb") as fh:
        while ti < len(targets):
            chunk = fh.read(_SCAN_CHUNK)
            if not chunk:
                break
            while ti < len(targets):
                # the line start must be >= target: the newline ending the previous line is at >= target - 1
                lo = max(targets[ti] - 1 - base, 0, (out[-1][0] - base) if out else 0)
                if lo >= len(chunk):
                    break
                j = chunk.find(b"\n", lo)
                if j < 0:
                    break
                off = base + j + 1
                if off < size and (not out or off > out[-1][0]):
                    out.append((off, newlines + chunk.count(b"\n", 0, j + 1) + 1))
                ti += 1
            newlines += chunk.count(b"\n")
            base += len(chunk)
    return out


def _parquet_parts(path: str, processes: int, max_part_bytes: int, min_part_bytes: int) -> list[Part]:
    try:
        md = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{display_path(Path(path))}: not a readable Parquet file: {e}") from e
    groups = md.num_row_groups
    sizes = [md.row_group(i).total_byte_size for i in range(groups)]
    rows = [md.row_group(i).num_rows for i in range(groups)]
    n = min(groups, desired_parts(sum(sizes), processes, max_part_bytes, min_part_bytes))
    if n <= 1:
        return [Part(path, "parquet")]
    total = sum(sizes)
    cum = np.cumsum(sizes)
    cuts = sorted({int(np.searchsorted(cum, total * i / n, side="left")) + 1 for i in range(1, n)})
    cuts = [c for c in cuts if 0 < c < groups]
    edges = [0, *cuts, groups]
    first_rows = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()
    return [Part(path, "parquet", start=lo, stop=hi, row=first_rows[lo]) for lo, hi in zip(edges, edges[1:])]


# -- low-level readers --------------------------------------------------------------------------------------


def _open(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def malformed(where: str, message: str, opts: ReadOptions, stats: Counter,
              counter: str = "dropped/malformed_line") -> None:
    """A bad line or record: ValueError naming `where`, or with on_error=skip a counted drop."""
    if opts.on_error == "skip":
        stats[counter] += 1
        return
    raise InputError(f"{where}: {message}; {opts.error_hint}")


def decode(data: bytes, where: str, opts: ReadOptions, stats: Counter, line_of: bool = False) -> str | None:
    """UTF-8 text (a leading BOM removed). Bad bytes follow opts.on_non_utf8: replace → U+FFFD and
    repaired/non_utf8, drop → None and dropped/non_utf8, error → ValueError naming `where` (with the line of the
    first bad byte appended when `line_of`, for whole files)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if opts.on_non_utf8 == "error":
            byte = e.start
            if line_of:
                line_start = data.rfind(b"\n", 0, e.start) + 1
                line = data.count(b"\n", 0, e.start) + 1
                where, byte = f"{where}:{line}", e.start - line_start
            raise InputError(f"{where}: not valid UTF-8 (byte {byte}: {e.reason}); {opts.non_utf8_hint}") from None
        if opts.on_non_utf8 == "drop":
            stats["dropped/non_utf8"] += 1
            return None
        stats["repaired/non_utf8"] += 1
        text = data.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def iter_lines(part: Part, opts: ReadOptions, stats: Counter) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline) for each non-blank line of the part, streamed."""
    disp = part.disp
    lineno = part.line - 1
    pos = part.start
    seen = False
    try:
        with _open(part.path) as fh:
            if part.start:
                fh.seek(part.start)
            for raw in fh:
                lineno += 1
                pos += len(raw)
                if raw.strip():
                    seen = True
                    line = decode(raw, f"{disp}:{lineno}", opts, stats)
                    if line is not None:
                        yield lineno, line
                if part.stop is not None and pos >= part.stop:
                    break
    except (OSError, EOFError) as e:  # truncated gzip, unreadable file
        raise InputError(f"{disp}: cannot read after line {lineno}: {e}") from e
    if not seen and part.whole:
        stats["empty_files"] += 1


def iter_json_records(part: Part, opts: ReadOptions, stats: Counter) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank jsonl line; `json.loads` per line, so a line may be of any length."""
    disp = part.disp
    for lineno, line in iter_lines(part, opts, stats):
        problem = None
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            reason = e.msg.removesuffix(" at")  # "Invalid control character at"
            problem = f"not valid JSON ({reason} at column {e.colno})"
        except RecursionError:
            # json's C scanner recurses per nesting level; a pathological line must not be a bare crash.
            problem = f"JSON nested too deep to parse (beyond Python's recursion limit of {sys.getrecursionlimit()})"
        else:
            if not isinstance(rec, dict):
                problem = f"expected a JSON object per line, got {type(rec).__name__}"
        if problem is not None:
            malformed(f"{disp}:{lineno}", problem, opts, stats)
            continue
        yield lineno, rec


def read_text(part: Part, opts: ReadOptions, stats: Counter) -> str | None:
    """A whole txt / html file as one text (None when dropped for its bytes)."""
    disp = part.disp
    try:
        with _open(part.path) as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise InputError(f"{disp}: cannot read: {e}") from e
    if not data.strip():
        stats["empty_files"] += 1
    return decode(data, disp, opts, stats, line_of=True)


def open_parquet(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{display_path(Path(path))}: not a readable Parquet file: {e}") from e


def iter_parquet_batches(part: Part, required: Sequence[str] = (), optional: Sequence[str] | None = (),
                         stats: Counter | None = None, batch_rows: int = 1024) -> Iterator[pa.RecordBatch]:
    """Record batches of the part's row groups: the `required` columns (ValueError naming the file if one is
    absent) and the `optional` ones present; `optional=None` reads every column."""
    disp = part.disp
    pf = open_parquet(part.path)
    try:
        names = pf.schema_arrow.names
        missing = [c for c in required if c not in names]
        if missing:
            raise InputError(f"{disp}: no column {missing[0]!r} (columns: {', '.join(names)})")
        if optional is None:
            columns = None
        else:
            columns = list(dict.fromkeys([*required, *(c for c in optional if c in names)]))
        groups = None if part.whole else list(range(part.start, part.stop if part.stop is not None
                                                     else pf.metadata.num_row_groups))
        rows = 0
        if groups == []:
            return
        it = pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns)
        while True:
            try:
                batch = next(it, None)
            except (pa.ArrowException, OSError) as e:
                raise InputError(f"{disp}: corrupt Parquet data after row {part.row + rows}: {e}") from e
            if batch is None:
                break
            rows += batch.num_rows
            yield batch
        if rows == 0 and part.whole and stats is not None:
            stats["empty_files"] += 1
    finally:
        pf.close()


# -- tables (the commands) ----------------------------------------------------------------------------------


def _scalar_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _merge_meta(value: Any, extras: dict[str, Any]) -> dict[str, Any]:
    """A record's own `meta` merged with its other extra fields: an object (or a string holding a JSON object,
    as DOC_SCHEMA's meta column is) contributes its keys; anything else is kept under "meta"."""
    if value is _MISSING:
        return extras
    base = value
    if isinstance(value, str) and value.startswith("{"):
        try:
            base = json.loads(value)
        except (ValueError, RecursionError):
            base = value
    if isinstance(base, dict):
        return {**base, **extras}
    return {"meta": value, **extras}


def meta_json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)


class _Columns:
    """Column lists of one table under construction, flushed at opts.batch_rows rows / batch_chars characters."""

    def __init__(self, names: list[str], opts: ReadOptions):
        self.names = names
        self.opts = opts
        self.schema = DOC_SCHEMA if names == DOC_SCHEMA.names else pa.schema([(n, pa.string()) for n in names])
        self.cols: list[list] = [[] for _ in names]
        self.chars = 0

    def add(self, row: tuple, size: int) -> pa.Table | None:
        for col, value in zip(self.cols, row):
            col.append(value)
        self.chars += size
        if len(self.cols[0]) >= self.opts.batch_rows or self.chars >= self.opts.batch_chars:
            return self.flush()
        return None

    def flush(self) -> pa.Table | None:
        if not self.cols[0]:
            return None
        table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in self.cols], schema=self.schema)
        self.cols = [[] for _ in self.names]
        self.chars = 0
        return table


def table_names(opts: ReadOptions) -> list[str]:
    """Columns of the tables iter_tables makes from jsonl / txt / html: id, text, source, url, meta."""
    return [opts.id_field, opts.text_field, opts.source_field, "url", "meta"]


def iter_tables(part: Part, opts: ReadOptions, stats: Counter, columns: Sequence[str] | None = None,
                doc: bool = False) -> Iterator[pa.Table]:
    """Bounded tables of the part's documents.

    jsonl / txt / html give `table_names(opts)` (string columns): the record's id (else `<stem>:<line>`, or the
    file name for a whole txt/html file), text, source (else the file stem), url (else null) and `meta`: a JSON
    object of every other field (a `meta` object field merged in), or {"format", "file"[, "line"]} for txt/html.
    A record without text counts dropped/missing_text. Parquet keeps its own columns, or with `doc=True` is
    turned into DOC_SCHEMA too (other columns folded into meta). `columns` limits what is built (no meta JSON
    unless asked for)."""
    if part.fmt == "parquet":
        yield from _parquet_tables(part, opts, stats, columns, doc)
        return
    names = table_names(opts)
    want_meta = columns is None or "meta" in columns
    out = _Columns(names, opts)
    stem = file_stem(part.path)
    disp = part.disp
    if part.fmt == "jsonl":
        consumed = {opts.text_field, opts.id_field, opts.source_field, opts.url_field}
        for lineno, rec in iter_json_records(part, opts, stats):
            text = rec.get(opts.text_field)
            if text is None:
                stats["dropped/missing_text"] += 1
                continue
            where = f"{disp}:{lineno}"
            if not isinstance(text, str):
                malformed(where, f"field {opts.text_field!r} is {type(text).__name__}, expected a string", opts, stats)
                continue
            rid = rec.get(opts.id_field)
            src = rec.get(opts.source_field)
            url = rec.get(opts.url_field)
            meta = None
            if want_meta:
                extras = {k: v for k, v in rec.items() if k not in consumed and k != "meta"}
                try:
                    meta = meta_json(_merge_meta(rec.get("meta", _MISSING), extras))
                except RecursionError:
                    malformed(where, "fields nested too deep to keep as meta JSON", opts, stats)
                    continue
            row = (
                _scalar_str(rid) if rid is not None else f"{stem}:{lineno}",
                text,
                _scalar_str(src) if src is not None and src != "" else stem,
                _scalar_str(url) if url is not None else None,
                meta,
            )
            if (t := out.add(row, len(text))) is not None:
                yield _finish(t, columns, doc)
    elif part.fmt == "txt" and opts.txt_unit == "line":
        for lineno, line in iter_lines(part, opts, stats):
            meta = meta_json({"format": "text", "file": disp, "line": lineno}) if want_meta else None
            text = line.rstrip("\r\n")
            if (t := out.add((f"{stem}:{lineno}", text, stem, None, meta), len(text))) is not None:
                yield _finish(t, columns, doc)
    else:
        text = read_text(part, opts, stats)
        if text is not None:
            fmt = "html" if part.fmt == "html" else "text"
            meta = meta_json({"format": fmt, "file": disp}) if want_meta else None
            out.add((os.path.basename(part.path), text, stem, None, meta), len(text))
    if (t := out.flush()) is not None:
        yield _finish(t, columns, doc)


def _finish(table: pa.Table, columns: Sequence[str] | None, doc: bool) -> pa.Table:
    if columns is not None and not doc:
        table = table.select([c for c in table.column_names if c in columns])
    return table


def _parquet_tables(part: Part, opts: ReadOptions, stats: Counter, columns: Sequence[str] | None,
                    doc: bool) -> Iterator[pa.Table]:
    if not doc:
        optional = None if columns is None else list(columns)
        for batch in iter_parquet_batches(part, (), optional, stats, batch_rows=opts.batch_rows):
            yield pa.Table.from_batches([batch])
        return
    row = part.row
    for batch in iter_parquet_batches(part, [opts.text_field], None, stats, batch_rows=opts.batch_rows):
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        out = _parquet_doc(table, part, opts, stats, row)
        row += n
        if out.num_rows:
            yield out


def _str_column(table: pa.Table, name: str) -> list | None:
    if name not in table.column_names:
        return None
    col = table.column(name)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.to_pylist()
    return [None if v is None else _scalar_str(v) for v in col.to_pylist()]


def _parquet_doc(table: pa.Table, part: Part, opts: ReadOptions, stats: Counter, row0: int) -> pa.Table:
    """A Parquet batch as DOC_SCHEMA: id (else `<stem>:<row>`), text, source (else the stem), url, and meta:
    the `meta` column (a JSON object string) merged with every other column's value."""
    disp, stem = part.disp, file_stem(part.path)
    text_col = table.column(opts.text_field)
    if not (pa.types.is_string(text_col.type) or pa.types.is_large_string(text_col.type)):
        malformed(f"{disp}: rows {row0}-{row0 + table.num_rows - 1}",
                  f"column {opts.text_field!r} is {text_col.type}, expected strings", opts, stats,
                  "dropped/malformed_row")
        stats["dropped/malformed_row"] += table.num_rows - 1
        return DOC_SCHEMA.empty_table()
    texts = text_col.to_pylist()
    ids = _str_column(table, opts.id_field)
    sources = _str_column(table, opts.source_field)
    urls = _str_column(table, opts.url_field)
    consumed = {opts.text_field, opts.id_field, opts.source_field, opts.url_field, "meta"}
    extra_names = [c for c in table.column_names if c not in consumed]
    extras = [table.column(c).to_pylist() for c in extra_names]
    metas = table.column("meta").to_pylist() if "meta" in table.column_names else None
    cols: list[list] = [[], [], [], [], []]
    for i, text in enumerate(texts):
        if text is None:
            stats["dropped/missing_text"] += 1
            continue
        r = row0 + i
        cols[0].append(ids[i] if ids is not None and ids[i] is not None else f"{stem}:{r}")
        cols[1].append(text)
        cols[2].append(sources[i] if sources is not None and sources[i] else stem)
        cols[3].append(urls[i] if urls is not None else None)
        m = metas[i] if metas is not None else _MISSING
        if m is None:
            m = _MISSING
        cols[4].append(meta_json(_merge_meta(m, {n: v[i] for n, v in zip(extra_names, extras)})))
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], schema=DOC_SCHEMA)


def read_table(part: Part, opts: ReadOptions, stats: Counter, columns: Sequence[str] | None = None,
               doc: bool = False) -> pa.Table:
    """The whole part as one table (the schema kept when it holds no document)."""
    tables = list(iter_tables(part, opts, stats, columns, doc))
    if tables:
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if doc:
        return DOC_SCHEMA.empty_table()
    if part.fmt == "parquet":
        schema = open_parquet(part.path).schema_arrow
        if columns is not None:
            schema = pa.schema([f for f in schema if f.name in columns])
        return schema.empty_table()
    names = [n for n in table_names(opts) if columns is None or n in columns]
    return pa.schema([(n, pa.string()) for n in names]).empty_table()


# -- deterministic output cuts ------------------------------------------------------------------------------


def rebatch(tables: Iterable[pa.Table], max_rows: int, max_chars: int | None = None,
            size_column: str = "text") -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of `max_rows` rows (fewer when `max_chars` characters of
    `size_column` are reached; the last one may be short). The cuts depend only on the rows, not on how the
    input was chunked, so writing each output table as a file or row group gives the same bytes either way."""
    buf: list[pa.Table] = []
    rows = 0
    chars = 0

    def flush() -> pa.Table:
        nonlocal rows, chars
        out = pa.concat_tables(buf).combine_chunks() if len(buf) > 1 else buf[0].combine_chunks()
        buf.clear()
        rows = chars = 0
        return out

    for table in tables:
        n = table.num_rows
        if max_chars is not None and size_column in table.column_names:
            sizes = pc.fill_null(pc.utf8_length(table.column(size_column)), 0).to_numpy().astype(np.int64)
        else:
            sizes = None
        i = 0
        while i < n:
            room = max_rows - rows
            k = min(room, n - i)
            full = k == room
            if sizes is not None:
                cs = np.cumsum(sizes[i : i + k])
                hit = int(np.searchsorted(cs, max_chars - chars, side="left"))
                if hit < k:
                    k, full = hit + 1, True
                chars += int(cs[k - 1])
            buf.append(table.slice(i, k))
            rows += k
            i += k
            if full:
                yield flush()
    if buf and rows:
        yield flush()


# -- worker pool over parts ---------------------------------------------------------------------------------

def _call(fn: Callable, item: Any, args: tuple) -> tuple[int, Any]:
    return os.getpid(), fn(item, *args)


class PartPool:
    """`imap(fn, items, *args)`: fn(item, *args) for each item, results in input order, through the current
    executor (`plasma_pipeline.executor`: `processes` spawned local workers, all started before the first part is
    taken, or inline when one is enough; or a Dask cluster); at most 2 x processes items in flight, so memory
    stays bounded by the part size. `workers_used` is the number of distinct processes that returned a result."""

    def __init__(self, processes: int, n_tasks: int):
        self.processes = max(1, min(processes, n_tasks))
        self.pids: set[int] = set()

    @property
    def workers_used(self) -> int:
        return len(self.pids)

    def imap(self, fn: Callable, items: Iterable[Any], *args: Any) -> Iterator[Any]:
        from plasma_pipeline.executor import ordered_map

        jobs = ((fn, item, args) for item in items)
        for _, (pid, out) in ordered_map(_call, jobs, self.processes, all_up=True):
            self.pids.add(pid)
            yield out
