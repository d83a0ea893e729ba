"""The held-out eval battery and decontamination against it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from plasma_pipeline.instruct import EvalIndex, InstructionsConfig, build_instructions, decontaminate_table, eval_prompts
from plasma_pipeline.instruct.eval_prompts import HELDOUT_FRACTION, item_hash
from plasma_pipeline.instruct.generators import make_record, to_table
from plasma_pipeline_tests.instruct.sp_model import SOURCES, WIKI_EN, require

DOMAINS = ("wiki", "recipes", "dialog", "code", "literature")


@pytest.fixture(scope="module")
def battery():
    return eval_prompts(str(SOURCES))


def test_battery_is_deterministic_held_out_and_real(battery):
    assert battery == eval_prompts(str(SOURCES))
    per = Counter(p["domain"] for p in battery)
    assert per == {d: 8 for d in DOMAINS}
    for p in battery:
        assert p["prompt"].strip() and p["reference"].strip()
        assert item_hash(p["domain"], p["key"]) < HELDOUT_FRACTION
    wiki = json.loads(require(WIKI_EN).read_text(encoding="utf-8"))
    by_title = {v["title"]: v["extract"].strip() for v in wiki.values()}
    for p in battery:
        if p["domain"] == "wiki":
            assert p["reference"] == by_title[p["key"]] and p["key"] in p["prompt"]
    assert len(eval_prompts(str(SOURCES), per_domain=5, domains=("dialog",))) == 5


def _chat(user: str, answer: str, key: str) -> dict:
    return make_record("test", key, [{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


def test_planted_overlaps_are_removed_and_counted(battery):
    index = EvalIndex.build(battery)
    wiki = next(p for p in battery if p["domain"] == "wiki" and len(p["reference"].split()) > 40)
    code = next(p for p in battery if p["domain"] == "code" and len(p["reference"].split()) >= 8)
    dialog = next(p for p in battery if p["domain"] == "dialog" and 3 <= len(p["prompt"].split()) < 8)
    span13 = " ".join(wiki["reference"].split()[10:23])  # 13 words from the middle of a held-out extract
    span12 = " ".join(wiki["reference"].split()[10:22])
    records = [
        _chat("Tell me something.", f"Here is a fact: {span13}. Interesting!", "a"),  # long tier: 13-gram
        _chat("Tell me something.", f"Here is a fact: {span12}. Interesting!", "b"),  # 12 words: below the tier
        _chat(f"Explain: {code['reference'].upper()}", "ok", "c"),  # short tier: 8-gram, case-insensitive
        _chat(dialog["prompt"].lower() + "!", "Some answer.", "d"),  # very short: the whole turn
        _chat(f"Well, {dialog['prompt']} and more", "Some answer.", "e"),  # containing it is not equality
        _chat("How do I boil an egg?", "Put it in boiling water for seven minutes.", "f"),
    ]
    stats: Counter = Counter()
    kept = decontaminate_table(to_table(records), index, stats)
    assert [json.loads(m)["key"] for m in kept.column("meta").to_pylist()] == ["b", "e", "f"]
    assert stats == {"dropped/decontaminated": 3, "dropped/decontaminated/test": 3}
    # Template words shared by every code prompt are not an overlap.
    assert not index.hit("Write a docstring for this Python function. ```python def f(x): return x```")


def test_stage_skips_held_out_items_and_decontaminates(battery):
    cfg = InstructionsConfig(generators=["wiki", "dialog"], max_per_generator=None, sources_root=str(SOURCES))
    stats: Counter = Counter()
    rows = [r for t in build_instructions(cfg, stats) for r in t.to_pylist()]
    keys = {json.loads(r["meta"])["key"] for r in rows}
    held = [p for p in battery if p["domain"] in ("wiki", "dialog")]
    assert not keys & {p["key"] for p in held}
    assert stats["heldout/wiki"] > 100 and stats["heldout/dialog"] > 5  # ~2% of 10k articles, 900 dialogs
    assert stats["kept"] == len(rows) == stats["kept/wiki"] + stats["kept/dialog"]
    for r in rows:
        assert item_hash(r["source"], json.loads(r["meta"])["key"]) >= HELDOUT_FRACTION
    # No kept instruction still overlaps the battery.
    index = EvalIndex.build(battery)
    assert not any(index.contaminated(r["messages"]) for r in rows[::7])
