"""Gopher quality and repetition rules, one test per rule, on real text (failing cases are built from real text)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from plasma_pipeline.clean import rules as R
from plasma_pipeline.clean.docview import _NUMPY_MIN_TOKENS

from .conftest import PROSE, view


@pytest.fixture(scope="module")
def good(long_en_extracts) -> list:
    """Real lead summaries, normalised; every Gopher rule must keep nearly all of them."""
    return [view(t) for t in long_en_extracts[:150]]


def _fails(rule, docs, cfg=PROSE) -> int:
    return sum(1 for d in docs if rule(d, cfg))


GOPHER_RULES = R.GOPHER_QUALITY_RULES + R.GOPHER_REPETITION_RULES


@pytest.mark.parametrize("name,rule", GOPHER_RULES, ids=[n for n, _ in GOPHER_RULES])
def test_real_summaries_pass_each_gopher_rule(good, name, rule):
    assert _fails(rule, good) == 0, name


def test_ngram_rules_pass_real_summaries(good):
    rules = [r for n, r in R.prose_rules_before_c4(PROSE) if re.fullmatch(r"gopher_(top|dup)_\d+gram", n)]
    assert len(rules) == 9  # top 2..4 and dup 5..10
    assert sum(_fails(r, good) for r in rules) == 0


def test_min_words(long_en_extracts):
    text = long_en_extracts[0]
    assert not R.gopher_min_words(view(text), PROSE)
    short = " ".join(text.split()[:30])
    d = view(short)
    assert d.n_words == 30
    assert R.gopher_min_words(d, PROSE)


def test_max_words(hamlet):
    d = view(hamlet)
    assert 25_000 < d.n_words < 100_000
    assert not R.gopher_max_words(d, PROSE)
    assert R.gopher_max_words(d, dataclasses.replace(PROSE, max_words=10_000))


def test_symbol_tokens_are_not_words():
    d = view("To be, or not to be - that is the question : ...")
    assert d.n_tokens == 13 and d.n_words == 10
    assert d.mean_word_length == pytest.approx(len("Tobeornottobethatisthequestion") / 10)
    # the non-ASCII (regex) path agrees with the ASCII (bytes) path
    u = view("To be, or not to be — that is the question : … café")
    assert u.n_tokens == 14 and u.n_words == 11


def test_min_mean_word_length(long_en_extracts):
    text = long_en_extracts[1]
    assert 4 < view(text).mean_word_length < 7
    tiny = " ".join(w for w in text.split() if len(w) <= 2) * 3  # "of a in to is ..." from the real text
    d = view(tiny)
    assert d.mean_word_length < 3
    assert R.gopher_min_mean_word_length(d, PROSE)
    assert not R.gopher_min_mean_word_length(view(text), PROSE)


def test_max_mean_word_length(long_en_extracts):
    text = " ".join(long_en_extracts[:5])
    long_words = " ".join(w for w in text.split() if len(w.strip(".,;:()\"'")) >= 11)
    d = view(long_words)
    assert d.n_words >= 20 and d.mean_word_length > 10
    assert R.gopher_max_mean_word_length(d, PROSE)
    assert not R.gopher_max_mean_word_length(view(text), PROSE)


def test_symbol_word_ratio(long_en_extracts):
    text = long_en_extracts[2]
    words = text.split()
    hashtags = " ".join("#" + w if i % 5 == 0 else w for i, w in enumerate(words))  # 20% hashtags
    assert R.gopher_symbol_word_ratio(view(hashtags), PROSE)
    trailing = " ".join(w + "..." if i % 6 == 0 else w for i, w in enumerate(words))  # 17% ellipses
    assert R.gopher_symbol_word_ratio(view(trailing), PROSE)
    assert not R.gopher_symbol_word_ratio(view(text), PROSE)


def test_bullet_lines(recipes):
    rec = next(r for r in recipes if len(r["ingredients"]) >= 8)
    bullets = "\n".join("- " + i for i in rec["ingredients"])
    assert R.gopher_bullet_lines(view(bullets), PROSE)
    assert not R.gopher_bullet_lines(view("\n".join(rec["steps"])), PROSE)
    # a real recipe layout: title, ingredient bullets and numbered steps, under 90% bullets
    mixed = "\n".join([rec["title"], bullets, *rec["steps"]])
    n_lines = 1 + len(rec["ingredients"]) + len(rec["steps"])
    assert R.gopher_bullet_lines(view(mixed), PROSE) == (len(rec["ingredients"]) > 0.9 * n_lines)


def test_ellipsis_lines(hamlet):
    lines = [ln for ln in hamlet[30_000:34_000].split("\n") if ln.strip()]
    trailing = "\n".join(ln.rstrip(",.;:!?") + "…" if i % 2 else ln for i, ln in enumerate(lines))  # half the lines
    assert R.gopher_ellipsis_lines(view(trailing), PROSE)
    assert not R.gopher_ellipsis_lines(view("\n".join(lines)), PROSE)


def test_alpha_words(hamlet):
    words = hamlet[40_000:43_000].split()
    numbered = " ".join(f"{w} {i}" for i, w in enumerate(words))  # a line-number token after every word
    d = view(numbered)
    assert R.gopher_alpha_words(d, PROSE)
    assert not R.gopher_alpha_words(view(" ".join(words)), PROSE)
    # the same rule on non-ASCII text (regex path) gives the same verdict
    assert R.gopher_alpha_words(view(numbered + " café"), PROSE)


def test_stop_words(wiki_fr, long_en_extracts):
    french = next(v["extract"] for v in wiki_fr.values() if len(v["extract"].split()) > 80)
    assert R.gopher_stop_words(view(french), PROSE)  # no "the", "and", "of" ... in French
    text = long_en_extracts[3]
    assert not R.gopher_stop_words(view(text), PROSE)
    stripped = re.sub(r"(?i)\b(the|be|to|of|and|that|have|with)\b", "", text)
    assert R.gopher_stop_words(view(stripped), PROSE)


def test_dup_para_frac(long_en_extracts):
    a, b = long_en_extracts[4], long_en_extracts[5]
    doc = view("\n\n".join([a, b, a, a]))  # 2 of 4 paragraphs repeat an earlier one
    assert R.gopher_dup_para_frac(doc, PROSE)
    assert not R.gopher_dup_para_frac(view("\n\n".join([a, b])), PROSE)


def test_dup_para_char_frac(long_en_extracts):
    a = long_en_extracts[6]
    shorts = [t.split(". ")[0] + "." for t in long_en_extracts[10:18]]
    doc = view("\n\n".join([a, *shorts, a]))  # 1 of 10 paragraphs repeats, but it holds much of the text
    assert not R.gopher_dup_para_frac(doc, PROSE)
    assert R.gopher_dup_para_char_frac(doc, PROSE)


def test_dup_line_frac(hamlet):
    lines = [ln for ln in hamlet[50_000:52_000].split("\n") if ln.strip()][:20]
    doc = view("\n".join(lines + lines[:10]))  # 10 of 30 lines repeat
    assert R.gopher_dup_line_frac(doc, PROSE)
    assert not R.gopher_dup_line_frac(view("\n".join(lines)), PROSE)


def test_dup_line_char_frac(hamlet):
    lines = [ln for ln in hamlet[50_000:53_000].split("\n") if ln.strip()]
    short = list(dict.fromkeys(ln.strip() for ln in lines if len(ln) < 30))[:12]  # distinct short lines
    longest = max(lines, key=len)
    doc = view("\n".join(short + [longest] * 4))  # few repeated lines, but long ones
    cfg = PROSE
    assert doc.dup_lines == (3, 3 * len(longest))
    assert doc.dup_lines[0] <= cfg.max_dup_line_frac * len(doc.lines)  # the line-count rule keeps it...
    assert R.gopher_dup_line_char_frac(doc, cfg)  # ...the character rule does not
    assert not R.gopher_dup_line_char_frac(view("\n".join(short + [longest])), cfg)


def test_top_ngram(kubrick):
    phrase = "Stanley Kubrick"
    assert phrase in kubrick
    spam = kubrick + " " + " ".join([phrase] * 15)
    d = view(spam)
    assert d.top_ngram_char_frac(2) > 0.2
    assert R.make_top_ngram_rule(2, 0.20)(d, PROSE)
    assert not R.make_top_ngram_rule(2, 0.20)(view(kubrick), PROSE)


def test_top_ngram_numpy_path_matches_counter_path(hamlet):
    """Long documents use hashed n-grams; the answer must equal the exact Counter computation."""
    text = hamlet[60_000:75_000]
    d = view(text)
    assert d.n_tokens > _NUMPY_MIN_TOKENS
    for n in (2, 3, 4):
        grams = list(zip(*[d.tokens[k:] for k in range(n)]))
        from collections import Counter

        (gram, top), = Counter(grams).most_common(1)  # ties: the first to occur
        exact = sum(map(len, gram)) * top / d.word_chars
        assert d.top_ngram_char_frac(n) == pytest.approx(exact)


@pytest.mark.parametrize("n", [5, 6, 7, 8, 9, 10])
def test_dup_ngram(long_en_extracts, n):
    a, b = long_en_extracts[7], long_en_extracts[8]
    doc = view(" ".join([a, b, a]))  # one paragraph, a real summary repeated: ~1/3 of the characters repeat
    frac = doc.dup_ngram_char_frac(n)
    assert 0.25 < frac < 0.45
    rule = R.make_dup_ngram_rule(n, PROSE.max_dup_ngram_char_frac[n])
    assert rule(doc, PROSE)
    assert not rule(view(" ".join([a, b])), PROSE)


def test_dup_ngram_exact_fraction():
    # 12 distinct words, then the first 6 again: the repeated 5-grams cover exactly those 6 words.
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    d = view(" ".join(words + words[:6]))
    repeated = sum(len(w) for w in words[:6])
    assert d.dup_ngram_char_frac(5) == pytest.approx(repeated / d.word_chars)
    assert d.dup_ngram_char_frac(7) == 0.0  # no repeated 7-gram
