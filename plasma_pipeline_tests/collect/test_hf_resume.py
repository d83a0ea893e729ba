"""kind: hf at scale: collect_hf streams bounded batches, retries transient errors and resumes a killed run.

Two layers of tests:

* in-process, on local Parquet files through `datasets` (HF_HUB_OFFLINE=1), with failures injected into the
  stream: the exact equivalence with iter_documents, the retry / rewind / budget logic, the progress folder;
* end to end, in subprocesses, through `datasets.load_dataset("<owner>/<name>", streaming=True)` — the code path
  of a real Hub dataset (huggingface_hub's HfFileSystem, Range requests) — against a fake Hub on 127.0.0.1
  (HF_ENDPOINT) that drops connections mid-body and answers 503; and a collector killed with SIGKILL midway
  whose rerun must publish the very version an uninterrupted run publishes. Every other host is routed to a dead
  proxy, so nothing can reach the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.collect import build_source_config, doc_id, iter_documents
from plasma_pipeline.collect import hf as hf_mod
from plasma_pipeline.collect.hf import CURSOR, collect_hf, transient_reason
from plasma_pipeline.schema import DOC_SCHEMA

REPO = "plasma/toy"
SHA = "0123456789abcdef0123456789abcdef01234567"
ROWS = [700, 900, 1100, 800]  # rows per Parquet file: 3,500 records, a few empty or null
BATCH_DOCS = 250


def make_records() -> list[dict]:
    out = []
    for i in range(sum(ROWS)):
        text = f"document {i:05d}: " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(5 + i % 40))
        if i % 211 == 5:
            text = None  # dropped/missing_text
        elif i % 307 == 9:
            text = "   "  # dropped/empty_text
        out.append({"doc_id": f"d{i:05d}", "content": text, "page": f"https://example.org/{i}"})
    return out


def write_files(folder: Path) -> list[Path]:
    records, paths, start = make_records(), [], 0
    folder.mkdir(parents=True, exist_ok=True)
    for n, rows in enumerate(ROWS):
        part = records[start:start + rows]
        start += rows
        table = pa.table({k: [r[k] for r in part] for k in ("doc_id", "content", "page")})
        path = folder / f"train-{n:05d}-of-{len(ROWS):05d}.parquet"
        pq.write_table(table, path, row_group_size=128)
        paths.append(path)
    return paths


def expected_ids(source: str, base: str) -> list[str]:
    return [doc_id(source, f"{base}#id={r['doc_id']}") for r in make_records()
            if r["content"] is not None and r["content"].strip()]


def rows(tables) -> list[dict]:
    return [r for t in tables for r in t.to_pylist()]


# ---------------------------------------------------------------------------------------------------------------
# in-process: local Parquet through datasets, failures injected into the stream
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def local_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    files = write_files(tmp_path / "data")
    return {"kind": "hf", "path": "parquet", "data_files": [str(p) for p in files], "text_field": "content",
            "id_field": "doc_id", "url_field": "page", "batch_docs": BATCH_DOCS, "backoff_s": 0.01}


@pytest.fixture
def sleeps(monkeypatch):
    out: list[float] = []
    monkeypatch.setattr(hf_mod, "_sleep", out.append)
    return out


class Faults(dict):
    """{record number: [exceptions]}: the stream raises the next one just before handing out that record; record
    numbers count every record handed out (`served`), so a record read again after a retry counts again."""

    served = 0


@pytest.fixture
def faults(monkeypatch):
    import datasets

    plan = Faults()
    real_iter = datasets.IterableDataset.__iter__

    def failing_iter(self):
        for rec in real_iter(self):
            todo = plan.get(plan.served)
            if todo:
                raise todo.pop(0)
            plan.served += 1
            yield rec

    monkeypatch.setattr(datasets.IterableDataset, "__iter__", failing_iter)
    return plan


def reference(spec: dict) -> tuple[list[pa.Table], Counter]:
    stats = Counter()
    return list(iter_documents("loc", build_source_config(spec), stats)), stats


def test_collect_hf_yields_what_iter_documents_yields(local_spec, tmp_path):
    for extra in ({}, {"max_docs": 1234}, {"max_bytes": 40_000, "batch_bytes": 9_000}):
        spec = {**local_spec, **extra}
        ref, ref_stats = reference(spec)
        for work in (None, tmp_path / f"work-{len(extra)}-{sorted(extra)}"):
            stats = Counter()
            tables = list(collect_hf("loc", build_source_config(spec), stats, work_dir=work))
            assert [t.num_rows for t in tables] == [t.num_rows for t in ref]
            assert all(t.schema.equals(DOC_SCHEMA) for t in tables)
            assert rows(tables) == rows(ref) and stats == ref_stats
    full, stats = reference(local_spec)
    assert [r["id"] for r in rows(full)] == expected_ids("loc", "hf://datasets/parquet/train")
    assert stats["dropped/missing_text"] > 0 and stats["dropped/empty_text"] > 0


def test_transient_errors_are_retried_without_loss_duplicates_or_double_counting(local_spec, faults, sleeps):
    spec = {**local_spec, "max_docs": 2_900, "retries": 3}
    ref, ref_stats = reference(spec)
    faults.served = 0
    # Mid-batch, twice in a row at the same record, right at a batch boundary, at file boundaries, near the end.
    faults.update({0: [TimeoutError("read timed out")], 137: [ConnectionResetError(104, "Connection reset by peer")],
                   600: [ConnectionResetError(104, "reset"), OSError("Server Disconnected")],
                   BATCH_DOCS + 1: [ConnectionError("dropped")], 700: [TimeoutError("t")],
                   1600: [OSError("eof")], 2_910: [ConnectionResetError(104, "late")]})
    logs: list[str] = []
    stats = Counter()
    tables = list(collect_hf("loc", build_source_config(spec), stats, log=logs.append))
    assert rows(tables) == rows(ref)  # same documents, same order: none lost, none repeated
    assert [t.num_rows for t in tables] == [t.num_rows for t in ref]
    assert stats == ref_stats and stats["kept"] == 2_900  # the budget counted each document once
    retries = [m for m in logs if " retry " in m]
    assert len(retries) == 8, logs
    assert "retry 1/3 in 0.01s at stream record #0 (0 documents kept): TimeoutError: read timed out" in retries[0]
    assert any("ConnectionResetError: [Errno 104] Connection reset by peer" in m for m in retries)
    assert sleeps == [0.01, 0.01, 0.01, 0.01, 0.02, 0.01, 0.01, 0.01]  # doubled only for a failure in a row


def test_retries_in_a_row_are_bounded_and_the_last_error_is_raised(local_spec, faults, sleeps):
    faults[500] = [ConnectionResetError(104, f"reset {n}") for n in range(10)]
    logs: list[str] = []
    with pytest.raises(ConnectionResetError, match="reset 3"):
        list(collect_hf("loc", build_source_config({**local_spec, "retries": 3, "backoff_s": 0.5}), Counter(),
                        log=logs.append))
    assert sleeps == [0.5, 1.0, 2.0]
    assert [m.split(" in ")[0] for m in logs[:3]] == [f"source 'loc': retry {n}/3" for n in (1, 2, 3)]
    assert logs[-1].startswith("source 'loc': giving up after 4 attempts in a row: ConnectionResetError")
    faults.served = 0
    faults[0] = [ConnectionResetError(104, "once")]
    with pytest.raises(ConnectionResetError, match="once"):
        list(collect_hf("loc", build_source_config({**local_spec, "retries": 0}), Counter(), log=logs.append))


def test_errors_that_are_not_transient_are_raised_at_once(local_spec, faults, sleeps):
    faults[10] = [FileNotFoundError("gone")]
    with pytest.raises(FileNotFoundError):
        list(collect_hf("loc", build_source_config(local_spec), Counter()))
    faults[10] = [ValueError("bad row")]
    with pytest.raises(ValueError, match="bad row"):
        list(collect_hf("loc", build_source_config(local_spec), Counter()))
    assert sleeps == []
    with pytest.raises(ValueError, match="^text_field: 'body' is not a field"):
        list(collect_hf("loc", build_source_config({**local_spec, "text_field": "body"}), Counter()))


def test_transient_reason_classifies_client_errors():
    import httpx2
    import requests
    from huggingface_hub.errors import HfHubHTTPError

    def http_error(cls, status):
        request = httpx2.Request("GET", "https://hub.example/x")
        response = httpx2.Response(status, request=request)
        if cls is httpx2.HTTPStatusError:
            return cls(f"{status} error", request=request, response=response)
        return cls(f"{status} error", response=response)

    def requests_error(status):
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(f"{status}", response=response)

    def wrapped(inner):
        try:
            try:
                raise inner
            except Exception as e:
                raise RuntimeError("while reading") from e
        except RuntimeError as outer:
            return outer

    transient = [ConnectionResetError(104, "reset"), TimeoutError("slow"), OSError("Server Disconnected"),
                 requests.ConnectionError("refused"), requests.ReadTimeout("slow"),
                 requests.exceptions.ChunkedEncodingError("x"),
                 requests_error(503), requests_error(429), http_error(HfHubHTTPError, 502),
                 http_error(httpx2.HTTPStatusError, 500), httpx2.RemoteProtocolError("peer closed connection"),
                 httpx2.ReadTimeout("slow"), httpx2.ConnectError("refused"), wrapped(ConnectionResetError(104, "x"))]
    permanent = [ValueError("bad"), FileNotFoundError("gone"), PermissionError("no"), requests_error(404),
                 http_error(HfHubHTTPError, 401), http_error(httpx2.HTTPStatusError, 403), KeyError("k"),
                 wrapped(ValueError("bad")), wrapped(FileNotFoundError("gone"))]
    assert [transient_reason(e) is not None for e in transient] == [True] * len(transient)
    assert [transient_reason(e) for e in permanent] == [None] * len(permanent)
    assert transient_reason(http_error(HfHubHTTPError, 503)).startswith("HTTP 503: ")
    assert transient_reason(wrapped(ConnectionResetError(104, "x"))) == "ConnectionResetError: [Errno 104] x"


def test_a_closed_run_resumes_from_its_cursor(local_spec, tmp_path, faults, sleeps):
    ref, ref_stats = reference(local_spec)
    work = tmp_path / "work"
    cfg = build_source_config(local_spec)
    # Stop the consumer after 5 batches (as a killed step would), with a retry along the way.
    faults.served = 0
    faults[400] = [ConnectionResetError(104, "reset")]
    stats = Counter()
    gen = collect_hf("loc", cfg, stats, work_dir=work)
    first = [next(gen) for _ in range(5)]
    gen.close()
    cursor = json.loads((work / CURSOR).read_text())
    assert cursor["batches"] == 5 and not cursor["done"] and cursor["state"] is not None
    # A batch file written after the last cursor (killed in between) is not taken.
    pq.write_table(ref[0], work / "batch-000005.parquet")
    logs: list[str] = []
    stats = Counter({"before": 1})  # the caller's own counters are kept and not stored in the cursor
    again = list(collect_hf("loc", cfg, stats, work_dir=work, log=logs.append))
    assert rows(first) == rows(again[:5])
    assert rows(again) == rows(ref) and [t.num_rows for t in again] == [t.num_rows for t in ref]
    assert stats == ref_stats + Counter({"before": 1})
    assert logs == [f"source 'loc': resuming after 5 committed batches ({5 * BATCH_DOCS:,} documents, "
                    f"stream record #{cursor['next_index']:,})"]
    done = json.loads((work / CURSOR).read_text())
    assert done["done"] and done["batches"] == len(ref) and Counter(done["stats"]) == ref_stats

    # A finished folder replays without opening the dataset at all.
    def no_stream(*a, **k):
        raise AssertionError("the dataset was opened again")

    stats = Counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_mod, "_load", no_stream)
        assert rows(collect_hf("loc", cfg, stats, work_dir=work)) == rows(ref) and stats == ref_stats
        # A changed config does not reuse it: the progress is discarded and collected again.
        logs.clear()
        with pytest.raises(AssertionError, match="opened again"):
            list(collect_hf("loc", build_source_config({**local_spec, "max_docs": 10}), Counter(), work_dir=work,
                            log=logs.append))
    assert "discarding the collected progress (the source config changed)" in logs[0]
    assert not (work / CURSOR).exists() and not list(work.glob("batch-*.parquet"))
    # retries / backoff_s are not part of what the progress is valid for.
    assert hf_mod.progress_fingerprint("loc", cfg) == hf_mod.progress_fingerprint(
        "loc", build_source_config({**local_spec, "retries": 9, "backoff_s": 3}))
    assert hf_mod.progress_fingerprint("loc", cfg) != hf_mod.progress_fingerprint("other", cfg)


def test_one_collector_per_progress_folder(local_spec, tmp_path):
    cfg = build_source_config(local_spec)
    first = collect_hf("loc", cfg, Counter(), work_dir=tmp_path / "w")
    next(first)
    with pytest.raises(RuntimeError, match="another collector is running"):
        next(collect_hf("loc", cfg, Counter(), work_dir=tmp_path / "w"))
    first.close()
    assert next(collect_hf("loc", cfg, Counter(), work_dir=tmp_path / "w")).num_rows == BATCH_DOCS


def test_retry_settings_are_checked():
    base = {"kind": "hf", "path": "x/y"}
    cfg = build_source_config(base)
    assert (cfg.retries, cfg.backoff_s) == (5, 1.0)
    assert build_source_config({**base, "retries": 0, "backoff_s": 0}).retries == 0
    for bad in ({"retries": -1}, {"retries": 1.5}, {"retries": True}, {"backoff_s": -1}, {"backoff_s": "1s"},
                {"backoff_s": float("nan")}):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}:"):
            build_source_config({**base, **bad})


# ---------------------------------------------------------------------------------------------------------------
# end to end: a fake Hub on 127.0.0.1, collectors in subprocesses
# ---------------------------------------------------------------------------------------------------------------
class FakeHub:
    """The Hub endpoints `datasets` / `huggingface_hub` use to stream one dataset repo, with Range support, and a
    fault plan: `faults[key]` is a list of actions ("drop": full Content-Length, half the body, then the socket is
    closed; "503": Service Unavailable) taken by the next requests for that key, a repo file path or "tree"."""

    def __init__(self, folder: Path):
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[str, str, str]] = []  # (method, path, action)
        self.lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self)

            def do_GET(self):
                hub.handle(self)

            def do_POST(self):
                hub.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def action(self, key: str, method: str, path: str) -> str:
        with self.lock:
            todo = self.faults.get(key)
            act = todo.pop(0) if todo and method != "HEAD" else "ok"
            self.log.append((method, path, act))
            return act

    def entries(self, prefix: str, recursive: bool) -> list[dict]:
        out, dirs = [], set()
        for rel, data in self.files.items():
            if prefix and not rel.startswith(prefix + "/"):
                continue
            parts = rel[len(prefix) + 1 if prefix else 0:].split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add("/".join(([prefix] if prefix else []) + parts[:i]))
            if recursive or len(parts) == 1:
                out.append({"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": rel})
        return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)] + out

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlparse(h.path)
        path = urllib.parse.unquote(url.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if h.command == "POST" else b""
        api = f"/api/datasets/{REPO}"
        if path == api or re.fullmatch(rf"{api}/revision/[^/]+", path):
            self.action("info", h.command, path)
            return self.json(h, {"id": REPO, "_id": "0" * 24, "sha": SHA, "private": False, "disabled": False,
                                 "gated": False, "siblings": [{"rfilename": r} for r in self.files],
                                 "tags": [], "cardData": {}, "lastModified": "2024-01-01T00:00:00.000Z",
                                 "downloads": 0, "likes": 0})
        m = re.fullmatch(rf"{api}/tree/[^/]+/?(.*)", path)
        if m:
            if self.action("tree", h.command, path) == "503":
                return self.json(h, {"error": "unavailable"}, 503)
            recursive = "recursive=true" in url.query.lower()
            return self.json(h, self.entries(m.group(1).strip("/"), recursive))
        if re.fullmatch(rf"{api}/paths-info/[^/]+", path):
            self.action("paths-info", h.command, path)
            text = body.decode()
            wanted = json.loads(text)["paths"] if text.startswith("{") else urllib.parse.parse_qs(text)["paths"]
            listing = {e["path"]: e for e in self.entries("", True)}
            return self.json(h, [listing[p] for p in wanted if p in listing])
        m = re.fullmatch(rf"/datasets/{REPO}/resolve/[^/]+/(.+)", path)
        if m and m.group(1) in self.files:
            return self.send_file(h, m.group(1), path)
        self.action("missing", h.command, path)
        error = b'{"error": "Entry not found"}'
        h.send_response(404)
        h.send_header("X-Error-Code", "EntryNotFound")
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(error)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(error)

    def json(self, h, obj, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def send_file(self, h, rel: str, path: str) -> None:
        data = self.files[rel]
        act = self.action(rel, h.command, path)
        if act == "503":
            return self.json(h, {"error": "unavailable"}, 503)
        start, end = 0, len(data) - 1
        rng = h.headers.get("Range")
        if rng:
            a, b = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()).groups()
            if a:
                start, end = int(a), min(int(b), len(data) - 1) if b else len(data) - 1
            else:  # a suffix range: the last b bytes
                start = len(data) - int(b)
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            h.send_response(200)
        part = data[start:end + 1]
        h.send_header("Content-Length", str(len(part)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", SHA)
        h.end_headers()
        if h.command == "HEAD":
            return
        if act == "drop":
            h.wfile.write(part[:len(part) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(part)


HUB_SPEC = {"kind": "hf", "path": REPO, "text_field": "content", "id_field": "doc_id", "url_field": "page",
            "batch_docs": BATCH_DOCS, "retries": 4, "backoff_s": 0.05}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub_repo")
    write_files(folder / "data")
    with FakeHub(folder) as server:
        yield server


def run_worker(hub: FakeHub, tmp: Path, store: Path, spec: dict, sleep_s: float = 0.0, wait: bool = True):
    """The collector as raw/<source> runs it, in a subprocess: collect_hf into a store writer, then publish."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf_home"), "HF_DATASETS_CACHE": str(tmp / "hf_cache"),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
                # Anything not on 127.0.0.1 goes to a dead proxy: the test cannot reach the internet.
                "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                "ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    args = json.dumps({"store": str(store), "spec": spec, "sleep_s": sleep_s})
    proc = subprocess.Popen([sys.executable, __file__, args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    result["log"] = [line[4:] for line in out.splitlines() if line.startswith("LOG ")]
    return result


def published(store: Path, version: str) -> list[dict]:
    folder = store / "raw" / "hub" / "versions" / version
    manifest = json.loads((folder / "manifest.json").read_text())
    return [r for s in manifest["shards"] for r in pq.read_table(folder / s["path"]).to_pylist()]


@pytest.fixture(scope="module")
def uninterrupted(hub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean_run")
    result = run_worker(hub, tmp, tmp / "store", HUB_SPEC)
    assert result["log"] == []
    docs = published(tmp / "store", result["version"])
    assert [d["id"] for d in docs] == expected_ids("hub", f"hf://datasets/{REPO}/train")
    return result, docs


def test_hub_drops_and_503s_are_retried_through_datasets(hub, uninterrupted, tmp_path):
    clean, clean_docs = uninterrupted
    names = sorted(hub.files)
    # The first request of every file is cut after half its body (the first one of file 0 is made while
    # load_dataset reads the schema, the others mid-stream), the second one of file 2 too, and the first listing
    # of the repo answers 503. huggingface_hub's and datasets' own retries are off in the worker
    # (PLASMA_TEST_INNER_RETRIES=0), so each of these reaches the collector.
    hub.faults = {"tree": ["503"], **{n: ["drop"] for n in names}}
    hub.faults[names[2]] = ["drop", "drop"]
    start = len(hub.log)
    result = run_worker(hub, tmp_path, tmp_path / "store", {**HUB_SPEC, "max_docs": 3_000})
    served = hub.log[start:]
    assert sum(a == "drop" for _, _, a in served) == len(names) + 1 and any(a == "503" for _, _, a in served)
    assert not any(hub.faults.values())
    retries = [m for m in result["log"] if " retry " in m]
    assert len(retries) == len(names) + 2, result["log"]
    assert any("HTTP 503" in m for m in retries)
    assert all(re.search(r"retry \d/4 in [\d.]+s at stream record #[\d,]+ \([\d,]+ documents kept\): \w+", m)
               for m in retries)
    docs = published(tmp_path / "store", result["version"])
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)) == 3_000 and result["stats"]["kept"] == 3_000
    assert docs == clean_docs[:3_000]  # none lost, none duplicated, same order, same text/url/meta
    assert result["stats"]["stopped/budget_docs"] == 1


def test_a_collector_killed_midway_reruns_to_the_uninterrupted_version(hub, uninterrupted, tmp_path):
    clean, clean_docs = uninterrupted
    hub.faults = {}
    store = tmp_path / "store"
    cursor = store / "raw" / "hub" / "work" / "hf-progress" / CURSOR
    proc = run_worker(hub, tmp_path, store, HUB_SPEC, sleep_s=0.15, wait=False)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if cursor.exists() and json.loads(cursor.read_text())["batches"] >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[0]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    killed_at = json.loads(cursor.read_text())
    assert 6 <= killed_at["batches"] < len(clean_docs) // BATCH_DOCS and not killed_at["done"]
    assert not (store / "raw" / "hub" / "CURRENT").exists()  # nothing was published
    start = len(hub.log)
    result = run_worker(hub, tmp_path, store, HUB_SPEC)
    assert result["log"][0].startswith(f"source 'hub': resuming after {killed_at['batches']} committed batches")
    assert result["version"] == clean["version"]  # the same shards, byte for byte
    assert published(store, result["version"]) == clean_docs
    assert result["stats"] == clean["stats"]
    # The rerun streamed on from the cursor: the file whose records were all committed was not read again
    # (only load_dataset's schema probe touches the first file).
    first = sorted(hub.files)[0]
    assert sum(p.endswith(first) and m == "GET" for m, p, _ in hub.log[start:]) <= 1
    assert not (store / "raw" / "hub" / "work" / "hf-progress").exists()  # removed once published


def _worker(args: dict) -> None:
    import shutil

    import datasets

    if os.environ.get("PLASMA_TEST_INNER_RETRIES", "0") == "0":
        # huggingface_hub and datasets retry reads themselves (after 1 s and 5 s); switched off here so each
        # injected fault reaches collect_hf, which must then handle it alone.
        from huggingface_hub.utils import _http

        for fn in (_http.http_backoff, _http.http_stream_backoff):
            getattr(fn, "__wrapped__", fn).__kwdefaults__["max_retries"] = 0
        datasets.config.STREAMING_READ_MAX_RETRIES = datasets.config.STREAMING_OPEN_MAX_RETRIES = 1
        datasets.config.STREAMING_READ_RETRY_INTERVAL = datasets.config.STREAMING_OPEN_RETRY_INTERVAL = 0

    from plasma_pipeline.shards import ShardStore, StoreConfig

    store = ShardStore(StoreConfig(root=args["store"], max_rows_per_shard=1_000))
    cfg = build_source_config(args["spec"])
    work = store.work_dir("raw/hub", "hf-progress", {})
    with store.writer("raw/hub") as w:
        for table in collect_hf("hub", cfg, w.stats, work_dir=work, log=lambda m: print("LOG", m, flush=True)):
            w.write(table)
            time.sleep(args["sleep_s"])
        version = w.publish()
    shutil.rmtree(work)
    print(json.dumps({"version": version.id, "stats": dict(w.stats)}), flush=True)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
