"""Local files: jsonl (optionally .gz), parquet, txt and html matched by globs, streamed file by file.

Bad input is never lost silently: non-UTF-8 bytes follow `on_non_utf8` (counted), a line that is not JSON (or is
nested too deep to parse) raises ValueError naming `file:line`, a corrupt Parquet file raises ValueError naming
the file, and a glob matching nothing raises ValueError.
HTML stays raw in `text` with meta {"format": "html"}; the clean stage extracts it.
"""

from __future__ import annotations

import glob
import gzip
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from plasma_pipeline.collect.config import LocalSourceConfig
from plasma_pipeline.collect.documents import REPO_ROOT, RawDoc, decode_utf8, display_path

# Meta values (copied from records into meta JSON) nested deeper than this are an error, not a RecursionError later.
MAX_META_DEPTH = 64

_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".txt": "txt", ".text": "txt", ".md": "txt",
    ".html": "html", ".htm": "html",
}


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
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in _EXTENSIONS:
        raise ValueError(f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
                         f"set format: to one of jsonl, parquet, txt, html")
    return _EXTENSIONS[ext]


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_all(path: Path) -> bytes:
    try:
        with _open(path) as fh:
            return fh.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{display_path(path)}: cannot read: {e}") from e


def _from_record(rec: dict[str, Any], cfg: LocalSourceConfig, where: str, locator: str, file_url: str,
                 meta: dict[str, Any], stats: Counter) -> RawDoc | None:
    text = rec.get(cfg.text_field)
    if text is None:
        stats["dropped/missing_text"] += 1
        return None
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {cfg.text_field!r} is {type(text).__name__}, expected a string")
    if cfg.id_field is not None:
        if rec.get(cfg.id_field) is None:
            raise ValueError(f"{where}: id_field {cfg.id_field!r} is missing")
        locator = str(rec[cfg.id_field])
    url = file_url
    if cfg.url_field is not None and rec.get(cfg.url_field) is not None:
        url = str(rec[cfg.url_field])
    for name in cfg.meta_fields:
        value = rec.get(name)
        if isinstance(value, (dict, list)) and _too_deep(value, MAX_META_DEPTH):
            raise ValueError(f"{where}: meta field {name!r} is nested too deep (more than {MAX_META_DEPTH} levels)")
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


def _jsonl(path: Path, cfg: LocalSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    disp, url = display_path(path), path.resolve().as_uri()
    lineno = 0
    try:
        with _open(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                where = f"{disp}:{lineno}"
                line = decode_utf8(raw, where, cfg.on_non_utf8, stats)
                if line is None:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    reason = e.msg.removesuffix(" at")  # "Invalid control character at"
                    raise ValueError(f"{where}: not valid JSON ({reason} at column {e.colno})") from e
                except RecursionError:
                    # json's C scanner recurses per nesting level; a pathological line must not be a bare crash.
                    raise ValueError(f"{where}: JSON nested too deep to parse "
                                     f"(beyond Python's recursion limit of {sys.getrecursionlimit()})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{where}: expected a JSON object per line, got {type(rec).__name__}")
                meta = {"format": cfg.doc_format or "text", "file": disp, "line": lineno}
                doc = _from_record(rec, cfg, where, f"{disp}#L{lineno}", url, meta, stats)
                if doc is not None:
                    yield doc
    except (OSError, EOFError) as e:  # truncated gzip, unreadable file
        raise ValueError(f"{disp}: cannot read after line {lineno}: {e}") from e


def _parquet_batches(path: Path, required: list[str], optional: list[str], disp: str) -> Iterator[list[dict[str, Any]]]:
    """Row dicts of the required columns (ValueError if one is absent) and of the optional ones present."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{disp}: not a readable Parquet file: {e}") from e
    names = pf.schema_arrow.names
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"{disp}: no column {missing[0]!r} (columns: {', '.join(names)})")
    columns = list(dict.fromkeys([*required, *(c for c in optional if c in names)]))
    rows = 0
    it = pf.iter_batches(batch_size=1024, columns=columns)
    while True:
        try:
            batch = next(it, None)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{disp}: corrupt Parquet data after row {rows}: {e}") from e
        if batch is None:
            return
        rows += batch.num_rows
        yield batch.to_pylist()


def _parquet(path: Path, cfg: LocalSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    disp, url = display_path(path), path.resolve().as_uri()
    required = [c for c in (cfg.text_field, cfg.id_field) if c]
    optional = [c for c in (cfg.url_field, *cfg.meta_fields) if c]
    row = 0
    for records in _parquet_batches(path, required, optional, disp):
        for rec in records:
            meta = {"format": cfg.doc_format or "text", "file": disp, "row": row}
            doc = _from_record(rec, cfg, f"{disp}: row {row}", f"{disp}#{row}", url, meta, stats)
            row += 1
            if doc is not None:
                yield doc


def _txt(path: Path, cfg: LocalSourceConfig, stats: Counter, fmt: str) -> Iterator[RawDoc]:
    disp, url = display_path(path), path.resolve().as_uri()
    if fmt == "txt" and cfg.txt_unit == "line":
        lineno = 0
        try:
            with _open(path) as fh:
                for lineno, raw in enumerate(fh, 1):
                    if not raw.strip():
                        continue
                    line = decode_utf8(raw, f"{disp}:{lineno}", cfg.on_non_utf8, stats)
                    if line is not None:
                        meta = {"format": cfg.doc_format or "text", "file": disp, "line": lineno}
                        yield RawDoc(f"{disp}#L{lineno}", line.rstrip("\r\n"), url, meta)
        except (OSError, EOFError) as e:
            raise ValueError(f"{disp}: cannot read after line {lineno}: {e}") from e
        return
    text = decode_utf8(_read_all(path), disp, cfg.on_non_utf8, stats)
    if text is not None:
        yield RawDoc(disp, text, url, {"format": cfg.doc_format or ("html" if fmt == "html" else "text"), "file": disp})


def iter_local(cfg: LocalSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    for path in expand_paths(cfg):
        fmt = file_format(path, cfg.format)
        stats["files"] += 1
        if fmt == "jsonl":
            yield from _jsonl(path, cfg, stats)
        elif fmt == "parquet":
            yield from _parquet(path, cfg, stats)
        else:
            yield from _txt(path, cfg, stats, fmt)
