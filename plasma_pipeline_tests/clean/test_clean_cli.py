"""`plasma clean PATH... --out DIR`: the cleaning stage on any jsonl / txt / html / Parquet input, with the
defaults or a recipe source's slice; part files + stats.json; one big file shared by two workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from plasma_pipeline.clean import CleanConfig
from plasma_pipeline.clean.cli import clean_config, parse_languages, rule_table
from plasma_pipeline.recipe import REPO_ROOT

PLASMA = str(Path(sys.executable).parent / "plasma")


def plasma(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PLASMA, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout,
                          check=False)


def _inputs(tmp_path, long_en_extracts, wiki_fr) -> list[Path]:
    en = long_en_extracts
    fr = [v["extract"] for v in wiki_fr.values() if len(v["extract"].split()) >= 120][:5]
    with open(tmp_path / "mixed.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(en[:10] + fr):
            f.write(json.dumps({"text": t, "meta": {"n": i} if i % 2 else "plain", "id": f"doc{i}"}) + "\n")
        f.write(json.dumps({"text": "too short to keep."}) + "\n")
    (tmp_path / "note.txt").write_text(en[10], encoding="utf-8")
    page = f"<html><head><title>T</title></head><body><p>{en[11]}</p><script>var x = 1;</script></body></html>"
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    return [tmp_path / n for n in ("mixed.jsonl", "note.txt", "page.html", "empty.jsonl")]


def test_clean_end_to_end_writes_parts_and_stats(tmp_path, long_en_extracts, wiki_fr):
    files = _inputs(tmp_path, long_en_extracts, wiki_fr)
    out = tmp_path / "out"
    p = plasma("clean", *map(str, files), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "kept" in p.stdout and "dropped/lang" in p.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["docs_in"] == 18 and stats["docs_kept"] == 12
    assert stats["rules"]["lang"]["docs"] == 5 and stats["rules"]["gopher_min_words"]["docs"] == 1
    assert set(stats["rules"]["lang"]) == {"docs", "chars"}
    assert stats["read"]["files"] == 4 and stats["read"]["empty_files"] == 1
    assert stats["chars_kept"] < stats["chars_in"] and stats["workers_used"] == 1
    parts = sorted(out.glob("part-*.parquet"))
    assert [x.name for x in parts] == stats["parts"] == ["part-00000.parquet"]
    kept = pq.read_table(parts[0])
    assert kept.column_names[:2] == ["id", "text"] and kept.num_rows == 12
    ids = kept.column("id").to_pylist()
    assert ids[:10] == [f"doc{i}" for i in range(10)] and ids[10:] == ["note.txt", "page.html"]
    page = kept.column("text").to_pylist()[11]
    assert "<p>" not in page and "var x" not in page
    assert " ".join(long_en_extracts[11].split()[:8]) in " ".join(page.split())
    assert not list(out.glob(".tmp-*"))
    # French only, the same files: the English documents go, the French ones stay.
    p = plasma("clean", str(files[0]), "--out", str(out), "--languages", "fr")
    assert p.returncode == 0, p.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["languages"] == ["fr"] and stats["rules"]["lang"]["docs"] == 10 + 1  # English, and the short one
    # The French documents pass language ID, and the stop-word rule judges them by the French list.
    assert stats["rules"].get("gopher_stop_words", {"docs": 0})["docs"] == 0
    assert stats["docs_kept"] >= 3 and stats["docs_kept"] + sum(
        r["docs"] for name, r in stats["rules"].items() if name != "lang") == 5
    assert sorted(x.name for x in out.glob("part-*.parquet")) == ["part-00000.parquet"]


def test_one_big_file_is_shared_by_two_workers_with_the_same_output(tmp_path, long_en_extracts):
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:  # ~3.5 MB of one jsonl file
        i = 0
        while f.tell() < 3_500_000:
            f.write(json.dumps({"text": long_en_extracts[i % len(long_en_extracts)], "i": i}) + "\n")
            i += 1
    reports = {}
    for n in ("1", "2"):
        p = plasma("clean", str(path), "--out", str(tmp_path / f"out{n}"), "--processes", n)
        assert p.returncode == 0, p.stderr
        reports[n] = json.loads((tmp_path / f"out{n}" / "stats.json").read_text())
    assert reports["1"]["workers_used"] == 1 and reports["2"]["workers_used"] == 2
    assert reports["2"]["parts_read"] >= 2
    for key in ("docs_in", "docs_kept", "chars_in", "chars_kept", "rules", "parts"):
        assert reports["1"][key] == reports["2"][key], key
    assert reports["1"]["docs_kept"] > 0
    for name in reports["1"]["parts"]:
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()


def test_malformed_input_and_bad_options(tmp_path, long_en_extracts):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": long_en_extracts[0]}) + "\n{oops}\n", encoding="utf-8")
    p = plasma("clean", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"))
    assert p.returncode == 1 and "bad.jsonl:2: not valid JSON" in p.stderr and "Traceback" not in p.stderr
    p = plasma("clean", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"), "--on-error", "skip",
               "--profile", "nonsense")
    assert p.returncode == 2 and "profile" in p.stderr
    p = plasma("clean", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"), "--on-error", "skip")
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["read"]["dropped/malformed_line"] == 1 and stats["docs_in"] == 1
    p = plasma("clean", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"), "--recipe-source", "nope")
    assert p.returncode == 2 and "no source 'nope'" in p.stderr
    p = plasma("--help", timeout=60)
    assert p.returncode == 0 and "clean" in p.stdout
    p = plasma("clean", "--help", timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("usage: plasma clean ")


def test_recipe_source_slice_and_overrides():
    cfg = clean_config("wiki", str(REPO_ROOT / "recipes" / "default.yaml"))
    assert cfg.min_words == 20 and cfg.c4_min_sentences == 2  # the wiki source's slice, not the defaults
    assert clean_config("code", str(REPO_ROOT / "recipes" / "default.yaml")).profile == "code"
    cfg = clean_config("wiki", str(REPO_ROOT / "recipes" / "default.yaml"), languages=["fr", "es"])
    assert cfg.languages == ["fr", "es"] and cfg.min_words == 20
    assert clean_config() == CleanConfig()
    assert parse_languages("fr, es") == ["fr", "es"] and parse_languages("any") == []


def test_rule_table_takes_chars_from_the_counters():
    counters = {"dropped/lang": 3, "chars_dropped/lang": 900, "dropped/gopher_min_words": 1,
                "chars_removed/c4_line_filter": 40, "kept": 5}
    table = rule_table(CleanConfig(), counters)
    assert table["lang"] == {"docs": 3, "chars": 900}
    assert table["gopher_min_words"] == {"docs": 1, "chars": None}
    assert table["c4_line_filter"] == {"docs": 0, "chars": 40}
