"""Hugging Face `datasets` in streaming mode, with a doc/byte budget.

Works the same for a Hub dataset ("HuggingFaceFW/fineweb-edu") and for local files through a packaged builder
("json" / "parquet" with data_files), which is how it is tested offline.

Two entry points:

* `iter_hf(cfg, stats)` yields RawDoc records for the shared driver (`iter_documents` applies budget and batches).
* `collect_hf(source_name, cfg, stats, work_dir=None, log=None)`, the collector for the Hub at scale, yields the
  same DOC_SCHEMA tables as `iter_documents` does for the source, and also
  - retries transient errors (connection reset or dropped mid-file, timeouts, HTTP 408/425/429/5xx, httpx /
    requests / aiohttp / fsspec client errors, other OSErrors) up to `cfg.retries` times in a row, waiting
    `cfg.backoff_s * 2**(n-1)` seconds (at most MAX_BACKOFF_S), logging each retry with its reason. The stream is
    reopened right after the last record it consumed (`IterableDataset.state_dict()`), so a retry neither loses
    nor repeats a document and never counts one twice toward max_docs / max_bytes;
  - with a `work_dir`, commits each batch there (batch-NNNNNN.parquet, then cursor.json, both atomically) before
    yielding it. A later call with the same work dir and config replays the committed batches and streams on from
    the cursor, so a collector killed at any point (kill -9 included) reruns to the same tables, in the same
    order, with the same counters, as an uninterrupted run. A Hub dataset read without a pinned commit is pinned
    to the commit resolved when collection started, so a resumed run does not mix two revisions.

Memory stays bounded by one batch (cfg.batch_docs / cfg.batch_bytes) whatever the size of the dataset.

Progress folder layout (any other file in it, such as the store's pins.json, is left alone):

    cursor.json            format, config fingerprint, datasets version, pinned revision, committed batches,
                           stream index, kept / kept_bytes, counters, datasets state_dict, done
    batch-000000.parquet   the committed batches, in order
    .collect.lock          flock held by the running collector (a second one on the same folder fails at once)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from plasma_pipeline.collect.config import HFSourceConfig
from plasma_pipeline.collect.documents import REPO_ROOT, RawDoc, doc_id, meta_json
from plasma_pipeline.schema import DOC_SCHEMA

# Builders that read local data_files; their relative paths are taken from the repository root.
LOCAL_BUILDERS = ("json", "parquet", "csv", "text", "arrow")

CURSOR = "cursor.json"
LOCK = ".collect.lock"
PROGRESS_FORMAT = 1
# Longest wait between two attempts, whatever retries / backoff_s say.
MAX_BACKOFF_S = 60.0
# Config fields that change how the stream is read, not what it yields: left out of the progress fingerprint.
UNFINGERPRINTED_FIELDS = ("retries", "backoff_s")
# HTTP statuses worth another attempt: timeout, too early, rate limit, server errors.
RETRY_STATUS = frozenset({408, 425, 429})
# OSErrors that another attempt cannot fix.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
_BATCH_RE = re.compile(r"^batch-(\d{6})\.parquet$")

_log = logging.getLogger(__name__)
_sleep = time.sleep  # the wait between attempts (a test replaces it)


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


def _load(cfg: HFSourceConfig, revision: str | None):
    import datasets  # heavy import: only when an hf source is collected

    return datasets.load_dataset(cfg.path, cfg.name, split=cfg.split, streaming=True,
                                 data_files=local_data_files(cfg), revision=revision)


class _Records:
    """Turns the stream's records into RawDocs (None for a record without text, counted dropped/missing_text)."""

    def __init__(self, cfg: HFSourceConfig, stats: Counter):
        self.cfg = cfg
        self.stats = stats
        self.where = f"{cfg.path}" + (f"/{cfg.name}" if cfg.name else "") + f" [{cfg.split}]"
        self.base = f"hf://datasets/{cfg.path}" + (f"/{cfg.name}" if cfg.name else "") + f"/{cfg.split}"

    def convert(self, index: int, rec: dict[str, Any]) -> RawDoc | None:
        cfg, where, base = self.cfg, self.where, self.base
        if index == 0 and cfg.text_field not in rec:
            raise ValueError(f"text_field: {cfg.text_field!r} is not a field of {where} (fields: {', '.join(rec)})")
        text = rec.get(cfg.text_field)
        if text is None:
            self.stats["dropped/missing_text"] += 1
            return None
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
        return RawDoc(locator, text, url, meta)


def iter_hf(cfg: HFSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    """The records of the source, for the shared driver; no retry, no resume (see collect_hf for those)."""
    records = _Records(cfg, stats)
    for index, rec in enumerate(_load(cfg, cfg.revision)):
        doc = records.convert(index, rec)
        if doc is not None:
            yield doc


# -- transient errors -------------------------------------------------------------------------------------------
def _status(exc: BaseException) -> int | None:
    code = getattr(getattr(exc, "response", None), "status_code", None)
    if code is None and type(exc).__module__.startswith("aiohttp"):
        code = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code < 600:
        return code
    return None


def _client_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of the HTTP clients that are loaded (none of them is imported just to be checked)."""
    out: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        mod = sys.modules.get(name)
        if mod is not None and isinstance(getattr(mod, "TransportError", None), type):
            out.append(mod.TransportError)
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(getattr(aiohttp, "ClientError", None), type):
        out.append(aiohttp.ClientError)
    return tuple(out)


def _verdict(exc: BaseException) -> bool | None:
    """True: worth another attempt; False: not; None: this exception alone does not tell (look at its cause)."""
    status = _status(exc)
    if status is not None:
        return status in RETRY_STATUS or status >= 500
    if isinstance(exc, PERMANENT_OS_ERRORS):
        return False
    # OSError covers ConnectionError (reset, refused, aborted), TimeoutError (asyncio's and fsspec's too),
    # requests' RequestException, huggingface_hub's HfHubHTTPError and datasets' "Server Disconnected".
    if isinstance(exc, OSError) or isinstance(exc, _client_errors()):
        return True
    return None


def transient_reason(exc: BaseException) -> str | None:
    """Why `exc` is worth another attempt ("ConnectionResetError: ...", "HTTP 503: ..."), or None when it is not.
    The exception's causes are looked at too, so a transport error re-raised as another type still counts."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(seen) < 16:
        seen.add(id(e))
        verdict = _verdict(e)
        if verdict is not None:
            if not verdict:
                return None
            status = _status(e)
            what = f"HTTP {status}" if status is not None else type(e).__name__
            msg = " ".join(str(e).split())[:200]
            return f"{what}: {msg}" if msg else what
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


# -- progress folder --------------------------------------------------------------------------------------------
def progress_fingerprint(source_name: str, cfg: HFSourceConfig) -> str:
    """What committed progress is valid for: the source name (it is in every id) and every config field that
    shapes the tables (all but retries / backoff_s)."""
    spec = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in UNFINGERPRINTED_FIELDS}
    payload = json.dumps({"format": PROGRESS_FORMAT, "source": source_name, "config": spec},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _read_batch(path: Path) -> pa.Table:
    table = pq.read_table(path).replace_schema_metadata(None)
    if not table.schema.equals(DOC_SCHEMA):
        raise ValueError(f"{path}: not a DOC_SCHEMA batch:\n{table.schema}")
    return table


class _Progress:
    """A collector's progress folder: committed batches plus the cursor that says how far the stream got."""

    def __init__(self, work_dir: Path, fingerprint: str, log: Callable[[str], None]):
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.log = log
        self._fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._fd)
            self._fd = None
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RuntimeError(f"{self.dir}: another collector is running on this progress folder") from e
            raise
        try:
            self.cursor = self._load_cursor()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def batch_path(self, n: int) -> Path:
        return self.dir / f"batch-{n:06d}.parquet"

    def _load_cursor(self) -> dict[str, Any] | None:
        import datasets

        path = self.dir / CURSOR
        if not path.exists():
            self._clear(keep=0)
            return None
        try:
            cursor = json.loads(path.read_text())
        except ValueError as e:
            self.log(f"{path}: unreadable cursor ({e}); collecting from the start")
            self._clear(keep=0)
            return None
        why = None
        if cursor.get("format") != PROGRESS_FORMAT:
            why = f"progress format {cursor.get('format')!r}, expected {PROGRESS_FORMAT}"
        elif cursor.get("fingerprint") != self.fingerprint:
            why = "the source config changed"
        elif not cursor.get("done") and cursor.get("datasets") != datasets.__version__:
            why = f"it was written by datasets {cursor.get('datasets')}, this is {datasets.__version__}"
        else:
            missing = [n for n in range(cursor["batches"]) if not self.batch_path(n).exists()]
            if missing:
                why = f"batch file {self.batch_path(missing[0]).name} is missing"
        if why is not None:
            self.log(f"{self.dir}: discarding the collected progress ({why}); collecting from the start")
            self._clear(keep=0)
            return None
        self._clear(keep=cursor["batches"])  # a batch written after the last cursor (killed in between)
        return cursor

    def _clear(self, keep: int) -> None:
        for p in self.dir.iterdir():
            m = _BATCH_RE.match(p.name)
            stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
            if (m and int(m.group(1)) >= keep) or stale_tmp:
                p.unlink()
        if keep == 0:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / CURSOR).unlink()

    def commit(self, n: int, table: pa.Table | None, cursor: dict[str, Any]) -> pa.Table | None:
        """Write batch `n` (if any), then the cursor that counts it; returns the batch as read back, so a replay
        yields exactly what a first run yields."""
        out = None
        if table is not None:
            path = self.batch_path(n)
            _write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd",
                                                           row_group_size=max(1, table.num_rows)))
            out = _read_batch(path)
        _write_atomic(self.dir / CURSOR, lambda tmp: tmp.write_text(json.dumps(cursor, ensure_ascii=False)))
        self.cursor = cursor
        return out


# -- the stream -------------------------------------------------------------------------------------------------
def _hub_repo(cfg: HFSourceConfig) -> bool:
    """A Hub dataset id (owner/name), not a packaged builder or a local folder."""
    return (cfg.path not in LOCAL_BUILDERS and "://" not in cfg.path and cfg.path.count("/") == 1
            and not Path(cfg.path).exists())


def _resolve_revision(cfg: HFSourceConfig, log: Callable[[str], None]) -> str | None:
    """The commit a Hub dataset's revision (or default branch) points at now, so that a resumed run reads the same
    commit; the configured revision where that cannot be known (packaged builder, local folder, offline mode, or an
    answer that is not transient, which load_dataset then reports in its own words)."""
    if not _hub_repo(cfg) or (cfg.revision and re.fullmatch(r"[0-9a-f]{40}", cfg.revision)):
        return cfg.revision
    import datasets
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE:
        return cfg.revision
    try:
        return HfApi().dataset_info(cfg.path, revision=cfg.revision).sha or cfg.revision
    except Exception as e:
        if transient_reason(e) is not None:
            raise
        log(f"hf dataset {cfg.path!r}: could not pin revision {cfg.revision or 'main'} to a commit "
            f"({type(e).__name__}: {e}); a resumed run reads the revision as it is then")
        return cfg.revision


class _Stream:
    """The dataset's records, reopened at the last consumed record after a failure."""

    def __init__(self, cfg: HFSourceConfig, revision: str | None, pinned: bool, state: dict | None,
                 log: Callable[[str], None]):
        self.cfg = cfg
        self.log = log
        self.revision = revision
        self.pinned = pinned
        self.state = state  # datasets state_dict after the last record consumed (None: before the first)
        self._ds = None
        self._it = None

    def next(self) -> dict[str, Any] | None:
        if self._it is None:
            if not self.pinned:
                self.revision = _resolve_revision(self.cfg, self.log)
                self.pinned = True
            ds = _load(self.cfg, self.revision)
            if self.state is not None:
                ds.load_state_dict(self.state)
            self._ds, self._it = ds, iter(ds)
        try:
            rec = next(self._it)
        except StopIteration:
            return None
        self.state = self._ds.state_dict()
        return rec

    def close(self) -> None:
        it, self._it, self._ds = self._it, None, None
        close = getattr(it, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def collect_hf(source_name: str, cfg: HFSourceConfig, stats: Counter, work_dir: str | Path | None = None,
               log: Callable[[str], None] | None = None) -> Iterator[pa.Table]:
    """Stream the source as DOC_SCHEMA tables, exactly as `iter_documents(source_name, cfg, stats)` would (same
    batches, ids and counters), retrying transient errors and, given a `work_dir`, resuming from what an earlier
    call with that folder and config committed. `log` receives one line per retry or resume (default: this
    module's logger, at WARNING). Raises ValueError naming the source if nothing is collected; re-raises the last
    error once `cfg.retries` attempts in a row have failed, or at once for an error that is not transient."""
    import datasets

    log = log or _log.warning
    base = Counter(stats)  # the caller's counters before this call; the cursor keeps only ours
    progress = _Progress(Path(work_dir), progress_fingerprint(source_name, cfg), log) if work_dir else None
    try:
        yield from _collect(source_name, cfg, stats, base, progress, log, datasets.__version__)
    finally:
        if progress is not None:
            progress.close()


def _collect(source_name: str, cfg: HFSourceConfig, stats: Counter, base: Counter, progress: _Progress | None,
             log: Callable[[str], None], datasets_version: str) -> Iterator[pa.Table]:
    cursor = progress.cursor if progress is not None else None
    batches = kept = kept_bytes = index = 0
    revision, pinned, state, done = cfg.revision, False, None, False
    if cursor is not None:
        stats.update(cursor["stats"])
        batches, index, kept, kept_bytes = cursor["batches"], cursor["next_index"], cursor["kept"], cursor["kept_bytes"]
        revision, pinned, state, done = cursor["revision"], True, cursor["state"], cursor["done"]
        if not done:
            log(f"source {source_name!r}: resuming after {batches} committed batches ({kept:,} documents, "
                f"stream record #{index:,})")
        for n in range(batches):
            yield _read_batch(progress.batch_path(n))

    records = _Records(cfg, stats)
    cols: dict[str, list] = {name: [] for name in DOC_SCHEMA.names}
    batch_bytes = 0
    stream = _Stream(cfg, revision, pinned, state, log)

    def flush(state: dict | None, next_index: int, final: bool) -> pa.Table | None:
        nonlocal batch_bytes, batches
        table = pa.Table.from_pydict(cols, schema=DOC_SCHEMA) if cols["id"] else None
        for values in cols.values():
            values.clear()
        batch_bytes = 0
        if progress is not None:
            own = {k: v - base.get(k, 0) for k, v in stats.items() if v != base.get(k, 0)}
            cursor = {"format": PROGRESS_FORMAT, "fingerprint": progress.fingerprint, "datasets": datasets_version,
                      "revision": stream.revision, "batches": batches + (table is not None), "next_index": next_index,
                      "kept": kept, "kept_bytes": kept_bytes, "stats": own, "state": state, "done": final}
            table = progress.commit(batches, table, cursor)
        if table is not None:
            batches += 1
        return table

    failures = 0
    try:
        while not done:
            before = stream.state
            try:
                rec = stream.next()
            except Exception as e:
                reason = transient_reason(e)
                if reason is None or failures >= cfg.retries:
                    if reason is not None:
                        log(f"source {source_name!r}: giving up after {failures + 1} attempts in a row: {reason}")
                    raise
                failures += 1
                wait = min(cfg.backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S)
                log(f"source {source_name!r}: retry {failures}/{cfg.retries} in {wait:g}s at stream record "
                    f"#{index:,} ({kept:,} documents kept): {reason}")
                stream.close()
                _sleep(wait)
                continue
            if rec is None:
                break
            failures = 0
            doc = records.convert(index, rec)
            index += 1
            if doc is None:
                continue
            if not doc.text.strip():
                stats["dropped/empty_text"] += 1
                continue
            # Checked only once another document exists, so the counter means "there was more to read".
            if cfg.max_docs is not None and kept >= cfg.max_docs:
                stats["stopped/budget_docs"] += 1
                break
            nbytes = len(doc.text.encode("utf-8"))
            if cfg.max_bytes is not None and kept_bytes + nbytes > cfg.max_bytes:
                stats["stopped/budget_bytes"] += 1
                break
            if cols["id"] and (len(cols["id"]) >= cfg.batch_docs or batch_bytes + nbytes > cfg.batch_bytes):
                # The committed cursor is the stream as it was before this record, which a resume reads again.
                yield flush(before, index - 1, final=False)
            cols["id"].append(doc_id(source_name, doc.locator))
            cols["text"].append(doc.text)
            cols["source"].append(source_name)
            cols["url"].append(doc.url)
            cols["meta"].append(meta_json(doc.meta))
            batch_bytes += nbytes
            kept += 1
            kept_bytes += nbytes
            stats["kept"] += 1
            stats["kept_bytes"] += nbytes
        if not done:
            last = flush(None, index, final=True)
            if last is not None:
                yield last
    finally:
        stream.close()
    if kept == 0:
        describe = f"hf dataset {cfg.path!r} (name={cfg.name}, split={cfg.split}, data_files={cfg.data_files})"
        raise ValueError(f"source {source_name!r}: no documents collected from {describe} "
                         f"(counters: {dict(stats) or 'none'})")
