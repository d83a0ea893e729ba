"""The eval battery held out of the training documents: source documents by id and text, near-duplicates by the
dedup signature."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pyarrow as pa
import pytest

from plasma_pipeline.collect.offline import dialog_text
from plasma_pipeline.dedup import DedupConfig, dedup_tables
from plasma_pipeline.dedup.core import ReferenceIndex
from plasma_pipeline.instruct import InstructionsConfig, eval_prompts
from plasma_pipeline.instruct.eval_prompts import to_eval_prompt
from plasma_pipeline.instruct.holdout import Holdout, battery_id, battery_items, reference_text
from plasma_pipeline.instruct.sources import iter_file_items
from plasma_pipeline_tests.instruct.sp_model import SOURCES

DEDUP = DedupConfig(ngram=5, num_perm=112, bands=14, rows=8)  # the default recipe's dedup section


@pytest.fixture(scope="module")
def cfg():
    return InstructionsConfig(sources_root=str(SOURCES))


@pytest.fixture(scope="module")
def items(cfg):
    return battery_items(cfg)


def first(items, domain, pred=lambda it: True):
    return next(it for it in items if it["domain"] == domain and pred(it))


def rows_table(rows):
    return pa.table({
        "id": [r[0] for r in rows], "text": [r[1] for r in rows], "source": [r[2] for r in rows],
        "url": [None] * len(rows), "meta": [json.dumps(r[3]) if r[3] is not None else None for r in rows],
    })


def test_the_held_out_battery_is_the_one_the_evaluation_prompts_with(cfg, items):
    assert [to_eval_prompt(it) for it in items] == eval_prompts(cfg.sources_root, per_domain=cfg.eval_per_domain)
    assert len({battery_id(it) for it in items}) == len(items) == 5 * cfg.eval_per_domain


def test_source_documents_and_near_duplicates_are_dropped_and_counted(cfg, items):
    wiki = first(items, "wiki", lambda it: len(it["extract"].split()) > 40)
    recipe = first(items, "recipes", lambda it: len(it["steps"]) >= 3)
    dialog = first(items, "dialog", lambda it: len(dialog_text(it["turns"]).split()) >= 8)
    code = first(items, "code")
    lit = first(items, "literature")
    held = {battery_id(it) for it in items}
    other_wiki = next(it for it in iter_file_items("wiki", str(SOURCES), Counter()) if battery_id(it) not in held)
    other_dialog = ["Do you like tea?", "Yes, with milk."]
    words = reference_text(recipe).split()
    mid = len(words) // 2
    near_recipe = " ".join(["Serves four."] + words[:mid] + ["carefully"] + words[mid + 1:])
    filler = "\n\n".join(["Enter a messenger, with letters for the king.", "Exeunt all but the fool."])
    by_source = {
        "wiki": [
            # the collected article whose text cleaning cut short: found by the title in its meta
            ("wiki/en-us/a", f"{wiki['title']}\n\n{' '.join(wiki['extract'].split()[:10])}", "wiki",
             {"title": wiki["title"], "lang": "en"}),
            ("wiki/en-us/b", f"{other_wiki['title']}\n\n{other_wiki['extract']}", "wiki",
             {"title": other_wiki["title"], "lang": "en"}),
        ],
        # a chatterbot topic file whose battery lines the line filter removed: found by the turns in its meta
        "dialog": [("dialog/english/x.yml", dialog_text(other_dialog), "dialog",
                    {"dialogs": [other_dialog, dialog["turns"]]})],
        # the stdlib file of a battery function: found by its path, whatever the text
        "code": [("code/x", "def f():\n    return 1\n", "code", {"file": code["key"].rsplit(":", 1)[0]})],
        # a play chunk holding the battery paragraph among others: found by its text
        "literature": [("lit/1", f"{filler}\n\n{lit['text']}\n\n{filler}", "literature", {"file": "x_gut.txt"})],
        "web": [
            ("web/copy", f"Read this. {wiki['extract']} That was all.", "web", None),  # a copy inside a page
            ("web/near", near_recipe, "web", None),  # the recipe with one word changed and a line added
            ("web/short", "The answer is Vitamin A, I think.", "web", None),  # a short reference is no hit
            ("web/other", "An unrelated page about the weather in spring and autumn, rain and sun.", "web", None),
        ],
    }
    holdout = Holdout(items, DEDUP, cfg)
    stats: Counter = Counter()
    kept = {s: holdout.filter(rows_table(rows), s, stats).column("id").to_pylist() for s, rows in by_source.items()}
    assert kept == {"wiki": ["wiki/en-us/b"], "dialog": [], "code": [], "literature": [],
                    "web": ["web/short", "web/other"]}
    assert stats == {
        "dropped/eval_holdout": 5, "dropped/eval_holdout_near_dup": 1,
        "eval_holdout/wiki": 1, "eval_holdout/dialog": 1, "eval_holdout/code": 1, "eval_holdout/literature": 1,
        "eval_holdout/web": 1, "eval_holdout_near_dup/web": 1,
    }
    summary = holdout.summary()
    assert summary["documents_dropped"] == 6 and summary["battery_items"] == len(items)
    got = {(d["id"], d["battery_item"], d["rule"]) for d in summary["dropped"]}
    assert got == {
        ("wiki/en-us/a", battery_id(wiki), "source_document"),
        ("dialog/english/x.yml", battery_id(dialog), "source_document"),
        ("code/x", battery_id(code), "source_document"),
        ("lit/1", battery_id(lit), "source_document"),
        ("web/copy", battery_id(wiki), "source_document"),
        ("web/near", battery_id(recipe), "near_duplicate"),
    }


def test_near_duplicates_follow_the_dedup_stage_rule(items):
    """ReferenceIndex flags exactly the documents dedup_tables would cluster with a reference."""
    refs = [it for it in items if it["domain"] in ("wiki", "recipes", "literature")]
    ref_table = pa.table({"id": [battery_id(it) for it in refs], "text": [reference_text(it) for it in refs],
                          "source": ["battery"] * len(refs)})
    texts, ids = [], []
    for k, it in enumerate(refs):
        words = reference_text(it).split()
        n_edit = [1, 3, len(words) // 3][k % 3]  # light edits are near-duplicates, a third of the words is not
        step = max(1, len(words) // n_edit)
        edited = [w + "x" if i % step == step // 2 else w for i, w in enumerate(words)]
        texts.append(" ".join(edited))
        ids.append(f"c{k}")
    texts += [it["extract"] for _, it in zip(range(60), iter_file_items("wiki", str(SOURCES), Counter()))]
    ids += [f"w{k}" for k in range(len(texts) - len(ids))]
    corpus = pa.table({"id": ids, "text": texts, "source": ["web"] * len(ids)})
    m = ReferenceIndex(ref_table, DEDUP).match(corpus)
    flagged = {ids[i] for i in range(len(ids)) if m.near[i] >= 0 or m.exact[i] >= 0}

    res = dedup_tables([ref_table, corpus], dataclasses.replace(DEDUP, source_priority=["battery"]), Counter())
    ref_ids = set(ref_table["id"].to_pylist())
    clustered = {i for c in res.clusters() if c[0] in ref_ids for i in c[1:]}
    assert flagged == clustered
    assert 0 < len(flagged) < len(refs)  # some edits are near-duplicates, the heavy ones are not
