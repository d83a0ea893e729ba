"""Normalisation, HTML to text, and fastText language ID on real text."""

from __future__ import annotations

import unicodedata

import pytest

from plasma_pipeline.clean.html import html_to_text, looks_like_html
from plasma_pipeline.clean.langid import load_lid_model, predict_languages
from plasma_pipeline.clean.normalize import fix_mojibake, normalize_text


def test_nfc_composes_decomposed_accents(wiki_fr):
    text = next(v["extract"] for v in wiki_fr.values() if "é" in v["extract"])
    decomposed = unicodedata.normalize("NFD", text)
    assert decomposed != text
    assert normalize_text(decomposed) == normalize_text(text)
    assert "é" in normalize_text(decomposed)


def test_nfc_not_nfkc():
    assert normalize_text("E = mc² with ﬁne µ") == "E = mc² with ﬁne µ"


def test_control_characters_and_whitespace(kubrick):
    sentences = kubrick.split(". ")
    messy = "\ufeff  " + sentences[0] + ".\x00\x07\u200b\r\n\r\n\r\n\r\n  " + "\t".join(sentences[1].split(" ")) + ".  \n"
    out = normalize_text(messy)
    assert out == sentences[0] + ".\n\n" + sentences[1] + "."


def test_single_newlines_and_paragraphs_kept(hamlet):
    scene = hamlet[30_000:31_000]
    out = normalize_text(scene)
    assert "\n" in out and "\n\n\n" not in out
    assert [ln.strip() for ln in scene.split("\n") if ln.strip()] == [ln for ln in out.split("\n") if ln]


def _cp1252_roundtrips(text: str) -> bool:
    try:
        text.encode("utf-8").decode("cp1252")
        return True
    except UnicodeDecodeError:
        return False


def test_mojibake_fixed(wiki_fr, wiki_es):
    for wiki in (wiki_fr, wiki_es):
        texts = [v["extract"] for v in wiki.values() if not v["extract"].isascii() and _cp1252_roundtrips(v["extract"])]
        for text in texts[:20]:
            broken = text.encode("utf-8").decode("cp1252")  # UTF-8 bytes read as Windows-1252: "Ã©" for "é"
            assert broken != text
            assert fix_mojibake(broken) == text
            assert normalize_text(broken) == normalize_text(text)
    clean = next(v["extract"] for v in wiki_fr.values() if "é" in v["extract"])
    assert fix_mojibake(clean) is clean  # correct text is never touched


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><title>" + title + "</title><style>p {color: red}</style>"
        "<script>var tracker = 'track';</script></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About us</a></nav>"
        "<header>Site banner</header>"
        f"<h1>{title}</h1>" + "".join(f"<p>{s}.</p>" for s in body.split(". ") if s) +
        "<ul><li>First <b>bold</b> item</li><li>Second item</li></ul>"
        "<footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>"
    )


def test_html_to_text_strips_boilerplate(kubrick):
    html = _page("2001: A Space Odyssey", kubrick)
    text = normalize_text(html_to_text(html))
    lines = text.split("\n")
    assert lines[0] == "2001: A Space Odyssey"
    assert kubrick.split(". ")[0] + "." in lines
    assert "First bold item" in lines and "Second item" in lines  # inline tags stay on their line
    for junk in ("tracker", "color: red", "Home", "About us", "Site banner", "Copyright"):
        assert junk not in text, junk


def test_html_auto_detection(kubrick):
    assert looks_like_html(_page("t", kubrick), None)
    assert looks_like_html("plain text", '{"format": "html"}')
    assert looks_like_html("plain", '{"content_type": "text/html; charset=utf-8"}')
    assert not looks_like_html(kubrick, '{"format": "text", "title": "html in a title"}')
    assert not looks_like_html(kubrick, None)


def test_lid_model_loaded_once(lid_model):
    assert load_lid_model(lid_model) is load_lid_model(lid_model)


def test_lid_missing_model_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_sources"):
        load_lid_model(tmp_path / "nope.ftz")


def test_lid_on_real_summaries(wiki_en, wiki_fr, wiki_es, lid_model):
    en = [v["extract"] for v in list(wiki_en.values())[:100]]
    fr = [v["extract"] for v in list(wiki_fr.values())[:100]]
    es = [v["extract"] for v in list(wiki_es.values())[:100]]
    langs, scores = predict_languages(en + fr + es, model=load_lid_model(lid_model))
    assert sum(lang == "en" for lang in langs[:100]) >= 97
    assert sum(lang == "fr" for lang in langs[100:200]) >= 97
    assert sum(lang == "es" for lang in langs[200:]) >= 97
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sorted(scores[:100])[50] > 0.9


def test_mojibake_partial_repair(wiki_fr):
    """Text that is half broken, half correct: only the broken runs are repaired."""
    texts = [v["extract"] for v in wiki_fr.values() if "é" in v["extract"] and _cp1252_roundtrips(v["extract"])]
    a, b = texts[0], texts[1]
    broken = a.encode("utf-8").decode("cp1252") + " " + b  # b keeps its correct "é"
    assert fix_mojibake(broken) == a + " " + b
