"""SFT shards: exact row length, padding masked, masks equal to the chat template's, packing, splits, limits."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from plasma_pipeline.chat_template import BOS_ID, EOS_ID, PAD_ID, load_sp, render
from plasma_pipeline.instruct import InstructionsConfig, SFTShardConfig, build_instructions, build_sft_shards
from plasma_pipeline.schema import SFT_SCHEMA
from plasma_pipeline_tests.instruct.sp_model import SOURCES


@pytest.fixture(scope="module")
def instructions():
    """Real dialog and recipe instructions from the offline sources (dialogs are short, recipes often long)."""
    cfg = InstructionsConfig(generators=["dialog", "recipes"], max_per_generator=120, sources_root=str(SOURCES))
    return pa.concat_tables(list(build_instructions(cfg, Counter())))


def run(instructions, sp_path, **kw):
    train, val = [], []
    stats: Counter = Counter()
    meta = build_sft_shards([instructions], str(sp_path), SFTShardConfig(**kw), train.append, val.append, stats)
    return train, val, stats, meta


def rows_of(tables):
    return [r for t in tables for r in t.to_pylist()]


def split_conversations(ids, mask):
    """Cut a packed row back into (ids, mask) per conversation, at BOS ... EOS."""
    out, i = [], 0
    while i < len(ids) and ids[i] == BOS_ID:
        j = ids.index(EOS_ID, i)
        out.append((ids[i : j + 1], mask[i : j + 1]))
        i = j + 1
    assert all(t == PAD_ID for t in ids[i:]), "only padding may follow the last conversation"
    return out, i


def test_unpacked_rows_are_exact_length_padded_and_masked_like_the_template(instructions, sp_path):
    sp = load_sp(str(sp_path))
    train, val, stats, meta = run(instructions, sp_path, seq_len=128, pack=False, val_fraction=0.2,
                                  rows_per_shard=50)
    assert all(t.schema == SFT_SCHEMA for t in train + val)
    assert [t.num_rows for t in train[:-1]] == [50] * (len(train) - 1)  # full shards, then the rest
    rendered = {}
    for r in instructions.to_pylist():
        ids, mask = render(r["messages"], sp)
        rendered.setdefault(tuple(ids[:129]), (ids, mask, r["source"]))
    n_trunc = 0
    for row in rows_of(train) + rows_of(val):
        ids, mask = row["input_ids"], row["loss_mask"]
        assert len(ids) == len(mask) == 129
        n = len(ids) - next((k for k, t in enumerate(reversed(ids)) if t != PAD_ID), 0)
        assert all(m == 0 for m in mask[n:]) and all(t == PAD_ID for t in ids[n:])
        full_ids, full_mask, source = rendered[tuple(ids[:n])] if tuple(ids[:n]) in rendered else \
            rendered[tuple(ids)]
        assert row["domain"] == source
        assert mask[:n] == full_mask[:n]  # the template's mask, cut at the row end when truncated
        n_trunc += len(full_ids) > 129
        assert sum(mask) > 0
    assert n_trunc == stats["truncated"] > 0  # long recipes are truncated
    total = len(rows_of(train)) + len(rows_of(val))
    assert total == meta["rows_train"] + meta["rows_val"] == meta["conversations"] == stats["kept"]
    assert meta["conversations"] + stats["dropped/too_long"] == instructions.num_rows
    assert 0.1 < meta["rows_val"] / total < 0.3
    assert meta["per_source"] == {"dialog": stats["conversations/dialog"], "recipes": stats["conversations/recipes"]}
    positions = sum(sum(r["loss_mask"]) for r in rows_of(train) + rows_of(val))
    assert meta["trained_tokens"] == positions and 0 < meta["trained_token_fraction"] < 1


def test_packed_rows_hold_whole_conversations_of_one_source(instructions, sp_path):
    sp = load_sp(str(sp_path))
    train, val, stats, meta = run(instructions, sp_path, seq_len=256, pack=True, val_fraction=0.1, too_long="drop")
    assert stats["truncated"] == 0 and stats["dropped/too_long"] > 0
    want = {}
    for r in instructions.to_pylist():
        ids, mask = render(r["messages"], sp)
        if len(ids) <= 257:
            want[tuple(ids)] = (mask, r["source"])
    seen = 0
    multi = 0
    for row in rows_of(train) + rows_of(val):
        assert len(row["input_ids"]) == len(row["loss_mask"]) == 257
        convs, end = split_conversations(row["input_ids"], row["loss_mask"])
        assert all(m == 0 for m in row["loss_mask"][end:])
        multi += len(convs) > 1
        for ids, mask in convs:
            assert want[tuple(ids)] == (mask, row["domain"])  # whole conversation, same source as the row
            seen += 1
    assert seen == meta["conversations"] == len(want)
    assert multi > 10
    assert meta["rows_train"] + meta["rows_val"] < meta["conversations"]  # packing saves rows
    unpacked = run(instructions, sp_path, seq_len=256, pack=False, val_fraction=0.1, too_long="drop")[3]
    assert meta["padding_fraction"] < unpacked["padding_fraction"]


def test_split_and_shuffle_are_deterministic(instructions, sp_path):
    a = run(instructions, sp_path, seq_len=128, seed=3)
    b = run(instructions, sp_path, seq_len=128, seed=3)
    c = run(instructions, sp_path, seq_len=128, seed=4)
    assert rows_of(a[0]) == rows_of(b[0]) and rows_of(a[1]) == rows_of(b[1])
    assert rows_of(a[0]) != rows_of(c[0])


@pytest.mark.parametrize(
    "kw, field",
    [({"seq_len": 0}, "seq_len"), ({"val_fraction": 1.0}, "val_fraction"), ({"too_long": "split"}, "too_long"),
     ({"pack": "yes"}, "pack"), ({"rows_per_shard": -1}, "rows_per_shard")],
)
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        SFTShardConfig(**kw)


@pytest.mark.parametrize(
    "kw, field",
    [({"generators": ["poems"]}, "generators"), ({"max_per_generator": 0}, "max_per_generator"),
     ({"datasets": [{"name": "x", "kind": "ftp"}]}, "datasets.kind"),
     ({"datasets": [{"name": "x", "kind": "local"}]}, "datasets.data_files"),
     ({"datasets": [{"name": "x", "kind": "local", "data_files": ["a.jsonl"], "colour": 1}]}, "datasets"),
     ({"decontam_ngram": 40}, "decontam_ngram"), ({"source_domains": {"web": "poems"}}, "source_domains")],
)
def test_instructions_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        InstructionsConfig(**kw)
