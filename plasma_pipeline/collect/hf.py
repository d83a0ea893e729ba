"""Hugging Face `datasets` in streaming mode, with a doc/byte budget (applied by the shared driver).

Works the same for a Hub dataset ("HuggingFaceFW/fineweb-edu") and for local files through a packaged builder
("json" / "parquet" with data_files), which is how it is tested offline.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from plasma_pipeline.collect.config import HFSourceConfig
from plasma_pipeline.collect.documents import REPO_ROOT, RawDoc

# Builders that read local data_files; their relative paths are taken from the repository root.
LOCAL_BUILDERS = ("json", "parquet", "csv", "text", "arrow")


def local_data_files(cfg: HFSourceConfig) -> list[str] | None:
    if cfg.data_files is None or cfg.path not in LOCAL_BUILDERS:
        return cfg.data_files
    return [p if "://" in p or Path(p).is_absolute() else str(REPO_ROOT / p) for p in cfg.data_files]


def check_data_files(cfg: HFSourceConfig) -> None:
    """For a local builder, every data_files glob must match a file."""
    if cfg.path not in LOCAL_BUILDERS:
        return
    if not cfg.data_files:
        raise ValueError(f"data_files: required with the local builder {cfg.path!r}")
    for pattern, full in zip(cfg.data_files, local_data_files(cfg) or [], strict=True):
        if "://" not in full and not glob.glob(full, recursive=True):
            raise ValueError(f"data_files: {pattern!r} matches no file")


def iter_hf(cfg: HFSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    import datasets  # heavy import: only when an hf source is collected

    ds = datasets.load_dataset(cfg.path, cfg.name, split=cfg.split, streaming=True,
                               data_files=local_data_files(cfg), revision=cfg.revision)
    where = f"{cfg.path}" + (f"/{cfg.name}" if cfg.name else "") + f" [{cfg.split}]"
    base = f"hf://datasets/{cfg.path}" + (f"/{cfg.name}" if cfg.name else "") + f"/{cfg.split}"
    for index, rec in enumerate(ds):
        if index == 0 and cfg.text_field not in rec:
            raise ValueError(f"text_field: {cfg.text_field!r} is not a field of {where} (fields: {', '.join(rec)})")
        text = rec.get(cfg.text_field)
        if text is None:
            stats["dropped/missing_text"] += 1
            continue
        if not isinstance(text, str):
            raise ValueError(f"{where} #{index}: field {cfg.text_field!r} is {type(text).__name__}, expected a string")
        locator = f"{base}#{index}"
        if cfg.id_field is not None:
            if rec.get(cfg.id_field) is None:
                raise ValueError(f"{where} #{index}: id_field {cfg.id_field!r} is missing")
            locator = f"{base}#id={rec[cfg.id_field]}"
        url = f"{base}#{index}"
        if cfg.url_field is not None and rec.get(cfg.url_field) is not None:
            url = str(rec[cfg.url_field])
        meta = {"format": cfg.doc_format, "dataset": cfg.path, "config": cfg.name, "split": cfg.split, "index": index}
        for name in cfg.meta_fields:
            meta[name] = rec.get(name)
        yield RawDoc(locator, text, url, meta)
