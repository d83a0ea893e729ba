"""`plasma dedup` on ordinary jsonl that pyarrow's json reader choked on (a 3 MiB line, an empty file, a `meta`
field that is an object in one row and a string in another), on malformed and non-UTF-8 lines (file:line
errors, or counted with --on-error skip), and on one big file shared by two workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline_tests.dedup.corpora import wiki_docs

PLASMA = str(Path(sys.executable).parent / "plasma")


def plasma(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([PLASMA, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout,
                          check=False)


def test_ordinary_jsonl_that_used_to_crash(tmp_path):
    docs = wiki_docs()[:40]
    long_text = " ".join(docs) * (3 * 2**20 // len(" ".join(docs)) + 1)  # one line over 3 MiB
    with open(tmp_path / "web.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(docs[:20]):
            f.write(json.dumps({"text": t, "meta": {"n": i} if i % 2 else f"row {i}"}) + "\n")
        f.write(json.dumps({"text": long_text, "meta": None}) + "\n")
        f.write(json.dumps({"text": docs[3], "meta": "copy"}) + "\n")  # an exact duplicate
    (tmp_path / "empty.jsonl").write_bytes(b"")
    out = tmp_path / "out"
    p = plasma("dedup", str(tmp_path / "web.jsonl"), str(tmp_path / "empty.jsonl"), "--out", str(out))
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["docs"] == 22 and summary["kept"] == 21
    assert summary["counters"]["empty_files"] == 1 and summary["counters"]["dropped/exact_duplicate"] == 1
    kept = pq.read_table(out / "web.parquet")
    assert kept.column_names[:3] == ["id", "text", "source"]
    metas = [json.loads(m) for m in kept.column("meta").to_pylist()]
    assert metas[:3] == [{"meta": "row 0"}, {"n": 1}, {"meta": "row 2"}]
    assert long_text in kept.column("text").to_pylist()
    assert pq.read_table(out / "empty.parquet").num_rows == 0


def test_malformed_and_non_utf8_lines_name_file_and_line_or_are_counted(tmp_path):
    docs = wiki_docs()[:6]
    body = b"".join(json.dumps({"text": t}).encode() + b"\n" for t in docs[:3])
    (tmp_path / "bad.jsonl").write_bytes(body + b'{"text": "unterminated\n' + json.dumps({"text": docs[3]}).encode())
    (tmp_path / "latin.jsonl").write_bytes(json.dumps({"text": docs[4]}).encode() + b'\n{"text": "caf\xe9"}\n')
    p = plasma("dedup", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o1"))
    assert p.returncode == 1 and "bad.jsonl:4: not valid JSON" in p.stderr and "--on-error skip" in p.stderr
    assert "Traceback" not in p.stderr
    p = plasma("dedup", str(tmp_path / "latin.jsonl"), "--out", str(tmp_path / "o2"))
    assert p.returncode == 1 and "latin.jsonl:2: not valid UTF-8" in p.stderr
    p = plasma("dedup", str(tmp_path / "bad.jsonl"), str(tmp_path / "latin.jsonl"), "--out", str(tmp_path / "o3"),
               "--on-error", "skip")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["docs"] == 5
    assert summary["counters"]["dropped/malformed_line"] == 1 and summary["counters"]["dropped/non_utf8"] == 1
    report = json.loads((tmp_path / "o3" / "dedup_stats.json").read_text())
    assert report["metadata"]["read"]["dropped/malformed_line"] == 1
    assert pq.read_table(tmp_path / "o3" / "bad.parquet").column("id").to_pylist() == [
        "bad:1", "bad:2", "bad:3", "bad:5"]


def test_help_names_the_plasma_command():
    p = plasma("dedup", "--help", timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("usage: plasma dedup ")
    assert "--on-error" in p.stdout


def test_one_big_file_is_shared_by_the_workers_with_the_same_output(tmp_path):
    docs = wiki_docs()
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:  # ~3.5 MB; every 5th line repeats an earlier document
        i = 0
        while f.tell() < 3_500_000:
            f.write(json.dumps({"text": docs[(i // 5) if i % 5 == 4 else i % len(docs)], "i": i}) + "\n")
            i += 1
    summaries = {}
    for n in ("1", "2"):
        p = plasma("dedup", str(path), "--out", str(tmp_path / f"out{n}"), "--processes", n)
        assert p.returncode == 0, p.stderr
        summaries[n] = json.loads(p.stdout)
    assert summaries["1"]["workers_used"] == 1 and summaries["2"]["workers_used"] == 2
    assert summaries["2"]["parts"] >= 2
    assert summaries["1"]["kept"] == summaries["2"]["kept"] < summaries["1"]["docs"]
    assert (tmp_path / "out1" / "big.parquet").read_bytes() == (tmp_path / "out2" / "big.parquet").read_bytes()
