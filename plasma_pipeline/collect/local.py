"""Local files: jsonl (optionally .gz), parquet, txt and html matched by globs, streamed file by file through
the shared reader (collect/reader.py: line by line, row group by row group; lines of any length).

Bad input is never lost silently: non-UTF-8 bytes follow `on_non_utf8` (counted), a line that is not JSON (or is
nested too deep to parse, or is not an object, or has a non-string text) raises ValueError naming `file:line`
unless `on_error: skip` counts it as dropped/malformed_line (dropped/malformed_row for Parquet rows), a corrupt
Parquet file raises ValueError naming the file, an empty file counts empty_files, and a glob matching nothing
raises ValueError. HTML stays raw in `text` with meta {"format": "html"}; the clean stage extracts it.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plasma_pipeline.collect import reader
from plasma_pipeline.collect.config import LocalSourceConfig
from plasma_pipeline.collect.documents import REPO_ROOT, RawDoc
from plasma_pipeline.collect.reader import Part, ReadOptions

# Meta values (copied from records into meta JSON) nested deeper than this are an error, not a RecursionError later.
MAX_META_DEPTH = 64
ALL_FIELDS = "*"


def expand_paths(cfg: LocalSourceConfig) -> list[Path]:
    """The files the globs match, each glob's matches sorted, duplicates removed; ValueError if a glob matches none."""
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in cfg.paths:
        full = Path(pattern).expanduser()
        if not full.is_absolute():
            full = REPO_ROOT / full
        matches = sorted(Path(m) for m in glob.glob(str(full), recursive=True) if Path(m).is_file())
        if not matches:
            raise ValueError(f"paths: glob {pattern!r} matches no file (looked in {full.parent})")
        for m in matches:
            if m not in seen:
                seen.add(m)
                files.append(m)
    return files


def file_format(path: Path, fmt: str) -> str:
    return reader.file_format(path, fmt)


def read_options(cfg: LocalSourceConfig) -> ReadOptions:
    return ReadOptions(text_field=cfg.text_field, txt_unit=cfg.txt_unit, on_non_utf8=cfg.on_non_utf8,
                       on_error=cfg.on_error)


def _from_record(rec: dict[str, Any], cfg: LocalSourceConfig, opts: ReadOptions, where: str, locator: str,
                 file_url: str, meta: dict[str, Any], stats: Counter, counter: str) -> RawDoc | None:
    text = rec.get(cfg.text_field)
    if text is None:
        stats["dropped/missing_text"] += 1
        return None
    if not isinstance(text, str):
        reader.malformed(where, f"field {cfg.text_field!r} is {type(text).__name__}, expected a string",
                         opts, stats, counter)
        return None
    if cfg.id_field is not None:
        if rec.get(cfg.id_field) is None:
            reader.malformed(where, f"id_field {cfg.id_field!r} is missing", opts, stats, counter)
            return None
        locator = str(rec[cfg.id_field])
    url = file_url
    if cfg.url_field is not None and rec.get(cfg.url_field) is not None:
        url = str(rec[cfg.url_field])
    if ALL_FIELDS in cfg.meta_fields:
        skip = {cfg.text_field, cfg.id_field, cfg.url_field}
        names = [k for k in rec if k not in skip] + [n for n in cfg.meta_fields if n != ALL_FIELDS and n not in rec]
    else:
        names = cfg.meta_fields
    for name in names:
        value = rec.get(name)
        if isinstance(value, (dict, list)) and _too_deep(value, MAX_META_DEPTH):
            reader.malformed(where, f"meta field {name!r} is nested too deep (more than {MAX_META_DEPTH} levels)",
                             opts, stats, counter)
            return None
        meta[name] = value
    return RawDoc(locator, text, url, meta)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether a JSON-like value nests more than `limit` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _jsonl(part: Part, cfg: LocalSourceConfig, opts: ReadOptions, stats: Counter) -> Iterator[RawDoc]:
    disp, url = part.disp, Path(part.path).resolve().as_uri()
    for lineno, rec in reader.iter_json_records(part, opts, stats):
        meta = {"format": cfg.doc_format or "text", "file": disp, "line": lineno}
        doc = _from_record(rec, cfg, opts, f"{disp}:{lineno}", f"{disp}#L{lineno}", url, meta, stats,
                           "dropped/malformed_line")
        if doc is not None:
            yield doc


def _parquet(part: Part, cfg: LocalSourceConfig, opts: ReadOptions, stats: Counter) -> Iterator[RawDoc]:
    disp, url = part.disp, Path(part.path).resolve().as_uri()
    required = [c for c in (cfg.text_field, cfg.id_field) if c]
    every = ALL_FIELDS in cfg.meta_fields
    optional = None if every else [c for c in (cfg.url_field, *cfg.meta_fields) if c]
    row = part.row
    for batch in reader.iter_parquet_batches(part, required, optional, stats):
        for rec in batch.to_pylist():
            meta = {"format": cfg.doc_format or "text", "file": disp, "row": row}
            doc = _from_record(rec, cfg, opts, f"{disp}: row {row}", f"{disp}#{row}", url, meta, stats,
                               "dropped/malformed_row")
            row += 1
            if doc is not None:
                yield doc


def _txt(part: Part, cfg: LocalSourceConfig, opts: ReadOptions, stats: Counter) -> Iterator[RawDoc]:
    disp, url = part.disp, Path(part.path).resolve().as_uri()
    if part.fmt == "txt" and cfg.txt_unit == "line":
        for lineno, line in reader.iter_lines(part, opts, stats):
            meta = {"format": cfg.doc_format or "text", "file": disp, "line": lineno}
            yield RawDoc(f"{disp}#L{lineno}", line.rstrip("\r\n"), url, meta)
        return
    text = reader.read_text(part, opts, stats)
    if text is not None:
        fmt = cfg.doc_format or ("html" if part.fmt == "html" else "text")
        yield RawDoc(disp, text, url, {"format": fmt, "file": disp})


def iter_local(cfg: LocalSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    """The documents of every matched file, in order, in this process (the raw asset streams them straight
    into its writer; a file is read as one part)."""
    opts = read_options(cfg)
    for path in expand_paths(cfg):
        fmt = file_format(path, cfg.format)
        stats["files"] += 1
        part = Part(str(path), fmt)
        if fmt == "jsonl":
            yield from _jsonl(part, cfg, opts, stats)
        elif fmt == "parquet":
            yield from _parquet(part, cfg, opts, stats)
        else:
            yield from _txt(part, cfg, opts, stats)
