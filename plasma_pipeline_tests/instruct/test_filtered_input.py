"""Instructions come from the documents the pipeline hands over (the deduped splits), and say so in counters."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest

from plasma_pipeline.collect import build_source_config, iter_documents
from plasma_pipeline.instruct import InstructionsConfig, build_instructions, instructions_from_docs
from plasma_pipeline_tests.instruct.sp_model import SOURCES


@pytest.fixture(scope="module")
def docs():
    out = {}
    for corpus in ("wiki", "recipes", "dialog"):
        src = build_source_config({"kind": "offline", "corpus": corpus, "root": str(SOURCES), "max_docs": 80})
        out[corpus] = pa.concat_tables(list(iter_documents(corpus, src, Counter())))
    return out


def test_only_the_given_documents_feed_the_generators(docs):
    # What the filters would have removed: every other document of each source.
    kept = {s: t.take(pa.array(range(0, t.num_rows, 2))) for s, t in docs.items()}
    removed = {s: t.take(pa.array(range(1, t.num_rows, 2))) for s, t in docs.items()}
    cfg = InstructionsConfig(generators=["wiki", "recipes", "dialog", "code"], max_per_generator=None,
                             sources_root=str(SOURCES))
    stats: Counter = Counter()
    rows = [r for t in build_instructions(cfg, stats, {s: [t] for s, t in kept.items()}, input_name="deduped_docs",
                                          file_fallback=False) for r in t.to_pylist()]
    ids = {r["id"] for r in rows}

    def ids_from(tables):
        return {i for s, t in tables.items() for i in instructions_from_docs(t, s, cfg, Counter())["id"].to_pylist()}

    assert ids == ids_from(kept)
    assert not ids & (ids_from(removed) - ids_from(kept))
    assert stats["input/deduped_docs"] == sum(t.num_rows for t in kept.values())
    for s, t in kept.items():
        assert stats[f"input/deduped_docs/{s}"] == t.num_rows
        assert stats[f"from_source/{s}"] == stats[f"kept/{s}"] > 0
    assert stats["kept"] == len(rows) == sum(stats[f"from_source/{s}"] for s in kept)
    # No source feeds the code generator, and the unfiltered offline files are not read instead.
    assert stats["skipped/no_source/code"] == 1 and stats["kept/code"] == 0
    assert not [k for k in stats if k.startswith("from_offline_files/")]
    assert {json.loads(r["meta"])["generator"] for r in rows} == {"wiki", "recipes", "dialog"}


def test_the_offline_file_fallback_is_counted_as_such(docs):
    cfg = InstructionsConfig(generators=["wiki", "dialog"], max_per_generator=30, sources_root=str(SOURCES))
    stats: Counter = Counter()
    rows = [r for t in build_instructions(cfg, stats, {"wiki": [docs["wiki"]]}) for r in t.to_pylist()]
    assert stats["from_source/wiki"] == stats["kept/wiki"] > 0
    assert stats["from_offline_files/dialog"] == stats["kept/dialog"] == 30
    assert len(rows) == stats["kept"]


def test_a_wiki_extract_survives_the_cleaner_removing_its_title_line():
    from plasma_pipeline.instruct.sources import doc_items

    meta = {"title": "Fast food", "lang": "en"}
    extract = "Fast food is a type of mass-produced food designed for commercial resale."
    for text in (f"Fast food\n\n{extract}", f"Fast food\n{extract}", extract):  # as collected; as cleaned
        assert doc_items(text, meta, None, "wiki", Counter())[0]["extract"] == extract
