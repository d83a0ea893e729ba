"""Word-list matching on the real lists (better-profanity, LDNOOBW) and real sentences."""

from __future__ import annotations

import json

from plasma_pipeline.classify import Wordlist
from plasma_pipeline.classify.wordlist import read_terms
from plasma_pipeline_tests.classify import corpora as C


def test_whole_tokens_and_phrases():
    wl = Wordlist.from_terms(["ass", "g-spot", "2 girls 1 cup", "shit"])
    assert wl.find("A classic class: Assassin's Creed.") == []  # no substring hits
    assert wl.find("What an ASS! The g-spot, 2 girls 1 cup.") == ["ass", "g spot", "2 girls 1 cup"]
    assert wl.count("shit shit") == 2
    assert "G-Spot" in wl and "spot" not in wl


def test_real_lists_load():
    bp = read_terms("better_profanity")
    nw = read_terms(str(C.need(C.NAUGHTY_EN)))
    assert len(bp) == 916 and len(nw) == len(json.loads(C.NAUGHTY_EN.read_text("utf-8"))) == 403
    wl = Wordlist.from_terms(nw)
    # Real sentences from nlp-corpus build 2: a clean one and one that uses an LDNOOBW term.
    sents = C.nlp_sentences(2)
    hit = [s for s in sents if wl.find(s)]
    assert hit and len(hit) < len(sents) // 10
    assert not wl.find("You and my sister, sittin’ in a tree.")


def test_save_load_roundtrip(tmp_path):
    wl = Wordlist.from_terms(read_terms("better_profanity"))
    wl.save(tmp_path / "w.txt")
    assert Wordlist.load(tmp_path / "w.txt") == wl
