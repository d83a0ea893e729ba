"""C4 line filter and page rules, FineWeb rules, on real text."""

from __future__ import annotations

import dataclasses
from collections import Counter

from plasma_pipeline.clean import rules as R

from .conftest import PROSE, view


def c4(text: str, cfg=PROSE) -> tuple[str, str | None, Counter]:
    stats: Counter = Counter()
    res = R.c4_filter(view(text).text, cfg, stats)
    return res.text, res.reason, stats


def test_c4_keeps_a_real_summary_unchanged(long_en_extracts):
    text = view(long_en_extracts[0]).text
    out, reason, stats = c4(text)
    assert reason is None and out == text
    assert stats["modified/c4_lines_removed"] == 0


def test_c4_line_rules_remove_lines_and_count_them(long_en_extracts, recipes):
    summary = long_en_extracts[1]
    rec = recipes[0]
    doc = "\n".join(
        [
            rec["title"],  # a heading: no terminal punctuation
            summary,
            "Please enable JavaScript to view the comments powered by Disqus.",
            "This site uses cookies; see our privacy policy for details.",
            "Ok.",  # fewer than 3 words
            "Stir well.",  # 2 words: C4 drops it too
        ]
    )
    out, reason, stats = c4(doc)
    assert reason is None
    assert out == view(summary).text
    assert stats["c4_lines/no_terminal_punct"] == 1
    assert stats["c4_lines/javascript"] == 1
    assert stats["c4_lines/policy"] == 1
    assert stats["c4_lines/too_few_words"] == 2
    assert stats["modified/c4_lines_removed"] == 5
    assert stats["modified/c4_docs"] == 1


def test_c4_removes_citations_and_keeps_paragraph_breaks(long_en_extracts):
    a, b = long_en_extracts[2], long_en_extracts[3]
    cited = a.replace(". ", ".[1] ", 1) + "[citation needed]"
    out, reason, _ = c4(cited + "\n\n" + b)
    assert reason is None
    assert "[1]" not in out and "[citation needed]" not in out
    assert out.split("\n\n") == [view(a).text, view(b).text]


def test_c4_long_word_line(long_en_extracts):
    junk = "x" * 1200 + " is not a word at all."
    out, _, stats = c4(long_en_extracts[0] + "\n" + junk)
    assert junk not in out and stats["c4_lines/too_long_word"] == 1


def test_c4_terminal_punct_switch(hamlet):
    verse = "\n".join(ln for ln in hamlet[30_000:33_000].split("\n") if ln.strip())
    _, _, strict = c4(verse)
    out, _, loose = c4(verse, dataclasses.replace(PROSE, c4_drop_no_terminal_punct=False))
    assert strict["c4_lines/no_terminal_punct"] > 10  # verse lines end with commas
    assert loose["c4_lines/no_terminal_punct"] == 0
    assert len(out) > 0.8 * len(view(verse).text)


def test_c4_lorem_ipsum(long_en_extracts):
    doc = long_en_extracts[0] + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
    assert c4(doc)[1] == "c4_lorem_ipsum"
    off = dataclasses.replace(PROSE, c4_drop_lorem_ipsum=False)
    assert c4(doc, off)[1] is None


def test_c4_curly_bracket(long_en_extracts, stdlib):
    doc = long_en_extracts[0] + '\nThe decoder maps {"a": 1} to a dict in one call.'
    assert c4(doc)[1] == "c4_curly_bracket"
    assert c4(doc, dataclasses.replace(PROSE, rules_disabled=["c4_curly_bracket"]))[1] is None


def test_c4_min_sentences(kubrick, long_en_extracts):
    two = ". ".join(kubrick.split(". ")[:2]) + "."
    assert c4(two)[1] == "c4_min_sentences"
    assert c4(long_en_extracts[0])[1] is None
    assert c4(two, dataclasses.replace(PROSE, c4_min_sentences=2))[1] is None


def test_fineweb_rules_keep_real_summaries(long_en_extracts):
    docs = [view(t) for t in long_en_extracts[:150]]
    for name, rule in R.FINEWEB_RULES:
        assert sum(rule(d, PROSE) for d in docs) == 0, name


def test_fineweb_line_punct_ratio(recipes):
    rec = next(r for r in recipes if len(r["ingredients"]) >= 8)
    ingredients = view("\n".join(rec["ingredients"]))  # "1 cup milk": no line ends a sentence
    assert R.fineweb_line_punct_ratio(ingredients, PROSE)
    assert not R.fineweb_line_punct_ratio(view("\n".join(rec["steps"])), PROSE)


def test_fineweb_short_line_ratio(recipes, long_en_extracts):
    rec = next(r for r in recipes if len(r["ingredients"]) >= 8 and max(map(len, r["ingredients"])) <= 30)
    assert R.fineweb_short_line_ratio(view("\n".join(rec["ingredients"])), PROSE)
    assert not R.fineweb_short_line_ratio(view("\n".join(long_en_extracts[:5])), PROSE)


def test_fineweb_char_dup_ratio(hamlet):
    scene = view(hamlet[40_000:48_000])  # speaker names ("HAMLET.") repeat line after line
    assert scene.dup_lines[0] > 5
    assert R.fineweb_char_dup_ratio(scene, PROSE)
    distinct = view("\n".join(dict.fromkeys(scene.lines)))
    assert not R.fineweb_char_dup_ratio(distinct, PROSE)


def test_fineweb_newline_ratio(recipes, long_en_extracts):
    rec = next(r for r in recipes if len(r["ingredients"]) >= 8)
    listing = view("\n".join(" ".join(i.split(",")[0].split()[-2:]) for i in rec["ingredients"]))  # 2 words a line
    assert R.fineweb_newline_ratio(listing, PROSE)
    assert not R.fineweb_newline_ratio(view(long_en_extracts[0]), PROSE)


def test_c4_no_lines_left(recipes):
    rec = next(r for r in recipes if len(r["ingredients"]) >= 5)
    listing = "\n".join(rec["ingredients"])  # no line ends a sentence: C4 removes them all
    out, reason, stats = c4(listing, dataclasses.replace(PROSE, c4_min_sentences=0))
    assert (out, reason) == ("", "c4_no_lines_left")
    assert stats["modified/c4_lines_removed"] == len(rec["ingredients"])
