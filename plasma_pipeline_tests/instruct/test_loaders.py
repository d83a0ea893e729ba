"""Chat datasets in the messages format through `datasets` (streaming), on local jsonl and parquet files."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from plasma_pipeline.instruct import InstructionsConfig, MessagesDatasetConfig, build_instructions, eval_prompts
from plasma_pipeline.instruct.loaders import iter_messages_dataset
from plasma_pipeline_tests.instruct.sp_model import SOURCES, require

CONVERSATIONS = SOURCES / "site" / "chatterbot_corpus" / "data" / "english" / "conversations.yml"


def real_chats() -> list[list[dict]]:
    """Chatterbot conversations.yml dialogs (cut to an even number of turns), as messages."""
    convs = yaml.safe_load(require(CONVERSATIONS).read_text(encoding="utf-8"))["conversations"]
    chats = []
    for c in convs:
        turns = [str(t) for t in c][: len(c) // 2 * 2]
        chats.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])
    return chats


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("chats")
    chats = real_chats()
    records = [{"messages": m, "lang": "en"} for m in chats]
    # Two broken records (unknown role; roles not alternating) and one ShareGPT-style record.
    records.append({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]})
    records.append({"messages": [{"role": "assistant", "content": "first"}, {"role": "user", "content": "y"}]})
    records.append({"messages": [{"from": "human", "value": chats[0][0]["content"]},
                                 {"from": "gpt", "value": chats[0][1]["content"]}]})
    jsonl = d / "chats.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    parquet = d / "chats.parquet"
    pq.write_table(pa.Table.from_pylist([{"conversation": m} for m in chats]), parquet)
    return chats, jsonl, parquet


def test_local_jsonl_and_hf_json_builder_read_the_same_chats(files):
    chats, jsonl, _ = files
    for spec in (
        MessagesDatasetConfig(name="local_chats", kind="local", data_files=[str(jsonl)]),
        MessagesDatasetConfig(name="hf_chats", kind="hf", path="json", data_files=[str(jsonl)]),
    ):
        stats: Counter = Counter()
        recs = list(iter_messages_dataset(spec, stats))
        assert [r["messages"] for r in recs] == chats + [chats[0][:2]]  # ShareGPT roles mapped
        assert {r["source"] for r in recs} == {spec.name}
        assert stats["dropped/bad_messages"] == 2 and stats[f"read/{spec.name}"] == len(chats) + 3
        assert len({r["id"] for r in recs}) == len(recs)


def test_local_parquet_with_custom_field_and_max_docs(files):
    chats, _, parquet = files
    spec = MessagesDatasetConfig(name="pq", kind="local", data_files=[str(parquet)], messages_field="conversation",
                                 max_docs=5)
    recs = list(iter_messages_dataset(spec, Counter()))
    assert [r["messages"] for r in recs] == chats[:5]
    bad = MessagesDatasetConfig(name="pq", kind="local", data_files=[str(parquet)])  # no "messages" field
    with pytest.raises(KeyError, match="messages"):
        list(iter_messages_dataset(bad, Counter()))


def test_datasets_go_through_the_stage_with_caps_and_counters(files):
    chats, jsonl, _ = files
    cfg = InstructionsConfig(generators=[], max_per_generator=10,
                             datasets=[{"name": "mine", "kind": "local", "data_files": [str(jsonl)]}])
    stats: Counter = Counter()
    rows = [r for t in build_instructions(cfg, stats) for r in t.to_pylist()]
    assert len(rows) == 10 and stats["kept/mine"] == 10 and stats["capped/mine"] == 1
    # conversations.yml's "I am working on a project" dialog is in the held-out eval battery: a dataset that
    # contains it loses it to decontamination, like any generator would.
    battery = {p["prompt"] for p in eval_prompts(str(SOURCES)) if p["domain"] == "dialog"}
    dropped = [c for c in chats[:11] if c[0]["content"] in battery]
    assert [c[0]["content"] for c in dropped] == ["I am working on a project"]
    assert stats["dropped/decontaminated/mine"] == 1
    assert [r["messages"] for r in rows] == [c for c in chats[:11] if c not in dropped]
