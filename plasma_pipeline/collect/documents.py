"""What every collector shares: raw records, stable ids, UTF-8 decoding with counted repairs, and the driver
that applies empty-text drops and doc/byte budgets and cuts the stream into bounded DOC_SCHEMA tables."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from plasma_pipeline.schema import DOC_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "run `make setup` (or `python scripts/fetch_sources.py`) to fetch the offline sources"


@dataclass
class RawDoc:
    """One document as a collector sees it, before the driver gives it an id and a batch."""

    # Stable, machine-independent locator (relative path + line, Hub index, wiki lang/title); hashed into the id.
    locator: str
    text: str
    url: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def doc_id(source_name: str, locator: str) -> str:
    """`<source>/<sha1 of the locator>`: the same input gives the same id on every machine and every run."""
    return f"{source_name}/{hashlib.sha1(locator.encode('utf-8')).hexdigest()}"


def sources_root(root: str | None = None) -> Path:
    """The offline corpora folder: the config's root, else $PLASMA_SOURCES, else <repo>/data/sources."""
    if root:
        return Path(root)
    return Path(os.environ.get("PLASMA_SOURCES") or REPO_ROOT / "data" / "sources")


def display_path(path: Path) -> str:
    """A path for ids and meta: relative to the repo root when inside it, else absolute (POSIX form)."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def decode_utf8(data: bytes, where: str, policy: str, stats: Counter) -> str | None:
    """Decode UTF-8 (a leading BOM is removed). Bad bytes: `replace` → U+FFFD and repaired/non_utf8,
    `drop` → None and dropped/non_utf8, `error` → ValueError naming `where`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if policy == "error":
            raise ValueError(f"{where}: not valid UTF-8 (byte {e.start}: {e.reason}); "
                             "set on_non_utf8: replace or drop to accept it") from e
        if policy == "drop":
            stats["dropped/non_utf8"] += 1
            return None
        stats["repaired/non_utf8"] += 1
        text = data.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)


def batched_documents(source_name: str, cfg: Any, records: Iterator[RawDoc], stats: Counter,
                      describe: str) -> Iterator[pa.Table]:
    """Drop empty texts, stop at the doc/byte budget, and yield DOC_SCHEMA tables of at most
    cfg.batch_docs docs / cfg.batch_bytes text bytes. Raises ValueError if the source yields no document."""
    cols: dict[str, list] = {name: [] for name in DOC_SCHEMA.names}
    batch_bytes = 0
    kept = 0
    kept_bytes = 0

    def flush() -> pa.Table:
        nonlocal batch_bytes
        table = pa.Table.from_pydict(cols, schema=DOC_SCHEMA)
        for values in cols.values():
            values.clear()
        batch_bytes = 0
        return table

    try:
        for rec in records:
            if not rec.text.strip():
                stats["dropped/empty_text"] += 1
                continue
            # Checked only once another document exists, so the counter means "there was more to read".
            if cfg.max_docs is not None and kept >= cfg.max_docs:
                stats["stopped/budget_docs"] += 1
                break
            nbytes = len(rec.text.encode("utf-8"))
            if cfg.max_bytes is not None and kept_bytes + nbytes > cfg.max_bytes:
                stats["stopped/budget_bytes"] += 1
                break
            if cols["id"] and (len(cols["id"]) >= cfg.batch_docs or batch_bytes + nbytes > cfg.batch_bytes):
                yield flush()
            cols["id"].append(doc_id(source_name, rec.locator))
            cols["text"].append(rec.text)
            cols["source"].append(source_name)
            cols["url"].append(rec.url)
            cols["meta"].append(meta_json(rec.meta))
            batch_bytes += nbytes
            kept += 1
            kept_bytes += nbytes
            stats["kept"] += 1
            stats["kept_bytes"] += nbytes
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
    if cols["id"]:
        yield flush()
    if kept == 0:
        raise ValueError(f"source {source_name!r}: no documents collected from {describe} "
                         f"(counters: {dict(stats) or 'none'})")
