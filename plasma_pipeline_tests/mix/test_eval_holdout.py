"""No eval battery text reaches the pretraining token shards once the hold-out has filtered the documents.

The battery's own documents are planted in the mix corpora (as the collector writes them, inside bigger
documents, with edits); the packed shards are decoded back into documents and searched for the battery's texts.
Without the hold-out the same search finds them, so the search can see a leak.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from plasma_pipeline.collect.offline import dialog_text
from plasma_pipeline.dedup import DedupConfig
from plasma_pipeline.instruct import InstructionsConfig
from plasma_pipeline.instruct.decontaminate import words
from plasma_pipeline.instruct.eval_prompts import to_eval_prompt
from plasma_pipeline.instruct.holdout import Holdout, battery_id, battery_items, item_spans, reference_text
from plasma_pipeline.mix import MixConfig, build_token_shards
from plasma_pipeline.tokenizer import BOS_ID, EOS_ID, PAD_ID
from plasma_pipeline_tests.mix.conftest import iters, mix_domains
from plasma_pipeline_tests.tokenizer.corpora import ROOT

MIN_WORDS = 8


@pytest.fixture(scope="module")
def items():
    return battery_items(InstructionsConfig(sources_root=str(ROOT)))


def planted(items) -> dict[str, pa.Table]:
    """The mix corpora with the battery's documents added to the domains, in the shapes the pipeline meets."""
    tables = dict(mix_domains())
    extra: dict[str, list[tuple[str, str]]] = {d: [] for d in tables}
    filler = "Enter a messenger.\n\nExeunt all but the fool."
    for k, it in enumerate(items):
        d, text = it["domain"], reference_text(it)
        if d == "wiki":
            extra["wiki"].append((f"wiki:battery{k}", text))  # the article as collected
        elif d == "recipes":
            w = text.split()
            cut = len(w) * 4 // 5  # one word of the steps edited
            extra["recipes"].append((f"recipes:battery{k}", " ".join(w[:cut] + ["gently"] + w[cut + 1:])))
        elif d == "dialog":
            extra["dialog"].append((f"dialog:battery{k}", "\n".join(it["turns"])))  # bare turns, as corpora.dialog
        elif d == "literature":
            extra["shakespeare"].append((f"shakespeare:battery{k}", f"{filler}\n\n{text}\n\n{filler}"))  # in a chunk
        elif d == "code":
            extra["wiki"].append((f"wiki:code{k}", f"From the manual:\n\n{text}\n\nThat is all."))  # a copy in a page
    out = {}
    for d, t in tables.items():
        add = pa.table({"id": [i for i, _ in extra[d]], "text": [x for _, x in extra[d]],
                        "source": [d] * len(extra[d])}, schema=t.schema)
        out[d] = pa.concat_tables([t, add])
    return out


def packed_documents(tok_path, tables, sp) -> list[str]:
    """Every document placed in the train and val shards, decoded (one full epoch of every domain)."""
    cfg = MixConfig(weights={d: 1 for d in tables}, total_tokens=10**9, max_epochs=1.0, seq_len=64,
                    val_fraction=0.05, rows_per_shard=1)  # rows_per_shard 1: rows in stream order
    train, val = [], []
    build_token_shards(iters(tables), tok_path, cfg, train.append, val.append, Counter())
    docs = []
    for shards in (train, val):
        stream = np.concatenate([np.concatenate(t.column("input_ids").to_numpy(zero_copy_only=False))
                                 for t in shards])
        for chunk in np.split(stream, np.flatnonzero(stream == BOS_ID)):
            ids = [int(x) for x in chunk if x not in (BOS_ID, EOS_ID, PAD_ID)]
            if ids:
                docs.append(sp.decode(ids))
    return docs


def battery_texts(items) -> list[str]:
    """What must not be trained on: each item's text as it stands in its documents, and the eval references."""
    out = []
    for it in items:
        out += item_spans(it) + [to_eval_prompt(it)["reference"]]
        if it["domain"] == "dialog":
            out.append(dialog_text(it["turns"]))
    return [" ".join(words(t)) for t in out if len(words(t)) >= MIN_WORDS]


def leaks(docs, texts) -> list[str]:
    corpus = " | " + " | ".join(" ".join(words(d)) for d in docs) + " | "
    return [t for t in texts if f" {t} " in corpus]


def test_no_battery_text_is_packed_into_the_pretrain_shards(tok_path, sp, items):
    tables = planted(items)
    texts = battery_texts(items)
    assert len(texts) > 60

    # Without the hold-out the planted documents are packed and found: the search sees a leak.
    assert len(leaks(packed_documents(tok_path, tables, sp), texts)) > 30

    holdout = Holdout(items, DedupConfig(), InstructionsConfig(sources_root=str(ROOT)))
    stats: Counter = Counter()
    filtered = {d: holdout.filter(t, d, stats) for d, t in tables.items()}
    assert leaks(packed_documents(tok_path, filtered, sp), texts) == []
    dropped = {d["id"]: d for d in holdout.dropped}
    planted_ids = {i for d, t in tables.items() for i in t["id"].to_pylist() if ":battery" in i or ":code" in i}
    assert planted_ids <= set(dropped)
    assert stats["dropped/eval_holdout_near_dup"] == stats["eval_holdout_near_dup/recipes"] == 8  # the edited ones
    assert stats["dropped/eval_holdout"] + stats["dropped/eval_holdout_near_dup"] == len(dropped)
    # The rest of what went are the battery's own dialogs, which the dialog corpus holds.
    by_id = {battery_id(it): it for it in items}
    texts_by_id = {i: x for t in tables.values() for i, x in zip(t["id"].to_pylist(), t["text"].to_pylist())}
    for doc_id in set(dropped) - planted_ids:
        it = by_id[dropped[doc_id]["battery_item"]]
        assert it["domain"] == "dialog" and leaks([texts_by_id[doc_id]], [" ".join(words(" ".join(it["turns"])))])
