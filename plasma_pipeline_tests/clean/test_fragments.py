"""No fragments: line rules judge hard-wrapped paragraphs whole, a document they would shred is dropped as
`fragmented`, and every character the stage costs is counted (`chars_dropped/<rule>`, `chars_removed/<step>`).

Corpora: the Python docs reST sources when the machine has them, else the offline corpora: Gutenberg plays and
Milton (hard-wrapped by their editors) and wiki lead summaries filled with `textwrap.fill`.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from plasma_pipeline.clean import CleanConfig, clean_table
from plasma_pipeline.clean.lines import TERMINAL_PUNCT, line_units, logical_lines
from plasma_pipeline.clean.normalize import normalize_text
from plasma_pipeline.collect import build_source_config, iter_documents
from plasma_pipeline.schema import DOC_SCHEMA

from .conftest import PROSE

PY_DOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
# The default recipe's slice for Gutenberg text (recipes/default.yaml, sources.literature.clean).
LITERATURE = CleanConfig(
    c4_drop_no_terminal_punct=False,
    c4_min_words_per_line=1,
    rules_disabled=["fineweb_char_dup_ratio", "fineweb_line_punct_ratio", "gopher_dup_line_frac", "c4_curly_bracket"],
)


def docs_table(texts: list[str], source: str = "t") -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": f"{source}-{i}", "text": t, "source": source, "url": None, "meta": None} for i, t in enumerate(texts)],
        schema=DOC_SCHEMA,
    )


def kept(out: pa.Table) -> dict[str, str]:
    return dict(zip(out.column("id").to_pylist(), out.column("text").to_pylist()))


def assert_chars_balance(stats: Counter) -> None:
    """Every input character is kept, in a dropped document, or cut by a named step."""
    lost = sum(v for k, v in stats.items() if k.startswith(("chars_dropped/", "chars_removed/")))
    assert stats["chars_in"] == stats["chars_kept"] + lost, stats


def assert_kept_share(table: pa.Table, out: pa.Table, floor: float = 0.5) -> list[float]:
    """Every kept document holds at least `floor` of its input characters; returns the shares."""
    raw = kept(table)
    shares = [len(text) / len(raw[i]) for i, text in kept(out).items()]
    assert shares and min(shares) >= floor, min(shares, default=None)
    return shares


# --- units --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [50, 60, 72, 79])
def test_a_filled_paragraph_is_one_unit(long_en_extracts, width):
    for text in long_en_extracts[:40]:
        lines = textwrap.fill(text, width).split("\n")
        assert len(lines) > 2
        assert line_units(lines) == [lines], width


def test_verse_lists_and_dialog_keep_one_unit_per_line(hamlet, recipes, kubrick):
    start = hamlet.index("Faith, no; as you may season it in the charge.")
    verse = hamlet[start : hamlet.index("\n\n", start)].split("\n")
    assert len(verse) == 8 and all(line[0].isupper() for line in verse)
    assert line_units(verse) == [[line] for line in verse]
    rec = next(r for r in recipes if len(r["ingredients"]) >= 6)
    bullets = ["- " + i for i in rec["ingredients"]]
    assert line_units(bullets) == [[line] for line in bullets]
    a, b = kubrick.split(". ")[:2]
    dialog = [f"A: {a}, and what does it mean for the film as a whole", f"B: {b}."]
    assert line_units(dialog) == [[line] for line in dialog]


def test_a_speech_under_a_speaker_name_is_one_unit(hamlet):
    # "LAFEU." then a prose speech hand-wrapped at ~65 columns: the name is a unit, the speech another
    start = hamlet.index("Ham.\nThere's another: why may not that be the skull of a lawyer?")
    lines = hamlet[start : hamlet.index("\n\n", start)].split("\n")
    units = line_units(lines)
    assert units == [lines[:1], lines[1:]]
    assert logical_lines("\n".join(lines))[0][1] == " ".join(lines[1:])


def test_stray_line_breaks_in_real_summaries_do_not_cut_sentences(wiki_en):
    """Wiki summaries with a line break inside a sentence ("...the most common type of harmonica is a\\ndiatonic
    Richter-tuned instrument..."): the old line filter cut the sentence and kept its tail, a fragment starting
    mid-sentence. Every sentence crossing such a break must now be kept whole (or its document dropped)."""
    crossings: dict[int, list[str]] = {}
    texts = []
    for v in wiki_en.values():
        text = normalize_text(v["extract"])
        pairs = [(a, b) for para in text.split("\n\n") for a, b in zip(para.split("\n"), para.split("\n")[1:])]
        mid = [
            f"{a}\n{b}"
            for a, b in pairs
            if min(len(a), len(b)) >= 20 and not a.endswith(TERMINAL_PUNCT) and (b[0].islower() or a.endswith(","))
        ]
        if mid:
            crossings[len(texts)] = mid
            texts.append(text)
    assert len(texts) > 30
    out = kept(clean_table(docs_table(texts), CleanConfig(min_words=20, c4_min_sentences=2), Counter()))
    assert len(out) > 0.8 * len(texts)
    for i, text in out.items():
        for crossing in crossings[int(i.split("-")[1])]:
            assert crossing in text, crossing


# --- hard-wrapped prose through clean_table --------------------------------------------------------------------
@pytest.mark.parametrize("width", [60, 72, 79])
def test_textwrapped_summaries_survive_whole(long_en_extracts, wiki_en, width):
    """Wiki summaries filled at `width` columns, three to a document under a title: every document kept as it is
    unwrapped, every paragraph kept whole with its line breaks; only the title goes (C4: no terminal punct)."""
    titles = list(wiki_en)[:40]
    docs, flat, paras = [], [], []
    for k in range(40):
        group = [" ".join(p.split()) for p in long_en_extracts[3 * k : 3 * k + 3]]
        filled = [textwrap.fill(p, width) for p in group]
        paras.append(filled)
        docs.append(titles[k] + "\n\n" + "\n\n".join(filled))
        flat.append(titles[k] + "\n\n" + "\n\n".join(group))
    stats: Counter = Counter()
    table = docs_table(docs)
    out = clean_table(table, PROSE, stats)
    flat_out = clean_table(docs_table(flat), PROSE, Counter())
    assert kept(out).keys() == kept(flat_out).keys()  # wrapping changes no verdict
    assert out.num_rows >= 36
    for i, text in kept(out).items():
        assert text == "\n\n".join(paras[int(i.split("-")[1])])  # whole paragraphs, original line breaks
    assert stats["dropped/fragmented"] == 0
    assert stats["c4_lines/no_terminal_punct"] == 40  # the titles, nothing else
    assert_kept_share(table, out, 0.9)
    assert_chars_balance(stats)


@pytest.fixture(scope="module")
def literature() -> pa.Table:
    """The offline literature corpus as the collector chunks it: 12 Gutenberg plays and poems, ~233 documents."""
    cfg = build_source_config({"kind": "offline", "corpus": "literature", "max_files": 12})
    return pa.concat_tables(list(iter_documents("literature", cfg, Counter())))


def _wrapped_speeches(text: str) -> list[str]:
    """Speeches in hard-wrapped prose (not verse): the lines under the first of a paragraph, when at least three,
    under 80 columns, ending a sentence, with most continuation lines starting in lower case."""
    out = []
    for para in normalize_text(text).split("\n\n"):
        body = para.split("\n")[1:]
        if len(body) >= 3 and max(map(len, body)) <= 80 and body[-1].endswith(TERMINAL_PUNCT):
            if 2 * sum(line[0].islower() for line in body[1:]) >= len(body) - 1:
                out.append("\n".join(body))
    return out


@pytest.mark.parametrize("cfg", [LITERATURE, PROSE], ids=["literature_recipe", "strict_defaults"])
def test_gutenberg_kept_documents_are_whole(literature, cfg):
    stats: Counter = Counter()
    out = clean_table(literature, cfg, stats)
    shares = assert_kept_share(literature, out)  # no kept document under half its input
    raw = kept(literature)
    checked = missing = 0
    for i, text in kept(out).items():
        for speech in _wrapped_speeches(raw[i]):
            checked += 1
            missing += speech not in text
    assert checked > 800
    assert_chars_balance(stats)
    if cfg is LITERATURE:
        assert out.num_rows >= literature.num_rows - 2 and missing == 0
        assert sorted(shares)[len(shares) // 2] > 0.99
    else:
        # Strict C4 cuts verse lines without end stops: such documents are dropped whole, not kept shredded.
        # A wrapped speech may still lose a line that opens with "l. 6." after an abbreviation ("comp.").
        assert stats["dropped/fragmented"] > 50 and out.num_rows > 50
        assert missing <= 0.01 * checked, (missing, checked)


# --- the fragment guard -----------------------------------------------------------------------------------------
def test_a_shredded_document_is_dropped_as_fragmented(long_en_extracts, recipes):
    summary = long_en_extracts[0]
    menu = "\n".join(r["title"] for r in recipes[:100])  # unpunctuated title lines: C4 cuts every one
    doc = summary + "\n\n" + menu
    assert len(summary) < len(menu) < 9 * len(summary)
    stats: Counter = Counter()
    assert clean_table(docs_table([doc]), PROSE, stats).num_rows == 0
    assert stats["dropped/fragmented"] == 1 and stats["chars_dropped/fragmented"] == len(doc)
    assert_chars_balance(stats)
    for cfg in (dataclasses.replace(PROSE, max_removed_char_frac=0.9), dataclasses.replace(PROSE, rules_disabled=["fragmented"])):
        stats = Counter()
        out = clean_table(docs_table([doc]), cfg, stats)
        assert out.column("text").to_pylist() == [summary]
        titles = sum(len(r["title"].strip()) for r in recipes[:100])  # the line breaks count as normalisation
        assert stats["chars_removed/c4_no_terminal_punct"] == titles and stats["dropped/fragmented"] == 0
        assert_chars_balance(stats)


def test_config_validates_the_threshold():
    with pytest.raises(ValueError, match="max_removed_char_frac"):
        CleanConfig(max_removed_char_frac=1.5)
    assert CleanConfig().max_removed_char_frac == 0.5


def test_counters_name_every_character(long_en_extracts, wiki_fr, hamlet):
    body = long_en_extracts[25]
    html = "<html><body><div>Home | About</div>" + "".join(f"<p>{s}.</p>" for s in body.split(". ")) + "</body></html>"
    fr = [v["extract"] for v in wiki_fr.values() if len(v["extract"].split()) > 100][:5]
    texts = long_en_extracts[:20] + fr + ["", " \n "] + [hamlet[40_000:48_000], html]
    stats: Counter = Counter()
    clean_table(docs_table(texts), CleanConfig(), stats)
    assert_chars_balance(stats)
    assert stats["chars_dropped/lang"] == sum(map(len, fr))
    assert stats["chars_dropped/fragmented"] == 8000  # the Hamlet scene under strict C4
    assert stats["chars_removed/html"] > 0 and stats["chars_removed/c4_no_terminal_punct"] > 0
    assert stats["docs_in"] == len(texts) and stats["chars_kept"] > 0


@pytest.mark.skipif(not PY_DOC_SOURCES.is_dir(), reason=f"{PY_DOC_SOURCES} (python3.11-doc) not installed")
def test_python_doc_sources_are_kept_whole():
    files = sorted(PY_DOC_SOURCES.rglob("*.rst.txt"))[::5]
    table = docs_table([p.read_text("utf-8") for p in files])
    stats: Counter = Counter()
    out = clean_table(table, CleanConfig(c4_min_sentences=2, min_words=20), stats)
    assert_kept_share(table, out)
    assert_chars_balance(stats)
