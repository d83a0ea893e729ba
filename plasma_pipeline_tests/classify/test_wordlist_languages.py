"""Word lists by language (issue 14, item 1): a document is matched only against its own language's list."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from plasma_pipeline.classify import ScoreConfig, Wordlist, score_shard, score_table
from plasma_pipeline.classify.score import load_lang_wordlists, wordlist_hits
from plasma_pipeline.classify.toxicity import build_lang_wordlists
from plasma_pipeline.classify.wordlist import LanguageWordlists, naughty_words_files
from plasma_pipeline_tests.classify import corpora as C
from plasma_pipeline_tests.classify.conftest import toxicity_config

NAUGHTY = C.NAUGHTY_EN.parent


def test_naughty_words_files_are_keyed_by_lid_label():
    files = naughty_words_files(C.need(NAUGHTY))
    assert files["fr"].name == "fr.json"  # not fr-CA-u-sd-caqc.json
    assert files["tl"].name == "fil.json"  # lid.176 calls Filipino/Tagalog "tl"
    assert {"en", "es", "de", "ru", "ja", "zh"} <= set(files)
    assert not {"kab", "tlh", "package", "bower"} & set(files)  # not lid.176 languages, or not lists


def test_each_language_gets_its_own_list():
    en = Wordlist.from_terms(["dick", "shit"])
    es = Wordlist.from_terms(["mierda"])
    lists = LanguageWordlists({"en": en, "es-ES": es, "ja": Wordlist.from_terms(["x"])})
    assert lists.langs() == ["en", "es"]  # ja dropped: no spaces, whole-token matching finds nothing there
    assert lists.for_lang("es") is es and lists.for_lang("es_MX") is es
    assert lists.for_lang("code") is en and lists.for_lang(None) is en  # code comments; unknown language
    assert lists.for_lang("fr") is None and lists.for_lang("ja") is None

    texts = ["Philip K. Dick escribió novelas.", "Qué mierda.", "Oh shit.", "Merde alors, shit.", "shit", ""]
    langs = ["es", "es", "en", "fr", "code", "ceb"]
    stats = Counter()
    assert wordlist_hits(texts, langs, lists, stats).tolist() == [0, 1, 1, 0, 1, 0]
    assert stats == Counter({"wordlist_unavailable/fr": 1, "wordlist_unavailable/ceb": 1})


def test_toxicity_asset_stores_the_lists_by_language(toxicity_model):
    out, meta, _ = toxicity_model
    info = json.loads((out / "classifier.json").read_text("utf-8"))
    by_lang = info["wordlist_terms_by_lang"]
    assert "en" not in by_lang and {"fr", "es", "de"} <= set(by_lang)  # English terms stay in wordlist.txt
    assert meta["wordlists"]["by_lang"] == {lang: len(terms) for lang, terms in by_lang.items()}
    assert "sex" not in by_lang["fr"]  # label_term_exclude applies to every language
    lists = load_lang_wordlists(out)
    assert lists.for_lang("en") == Wordlist.load(out / "wordlist.txt")
    assert lists.for_lang("fr") == Wordlist.from_terms(by_lang["fr"])
    assert load_lang_wordlists(out).by_lang["fr"] is lists.by_lang["fr"]  # cached per process


def test_english_only_when_no_folder():
    assert build_lang_wordlists(toxicity_config(lang_wordlists_dir=None)) == ({}, {})


def _docs(texts_langs: list[tuple[str, str]]) -> pa.Table:
    table = C.clean_table("mixed", [str(i) for i in range(len(texts_langs))], [t for t, _ in texts_langs])
    return table.set_column(table.column_names.index("lang"), "lang", pa.array([lang for _, lang in texts_langs]))


def test_score_uses_the_document_language(quality_model, toxicity_model):
    (qo, qm, _), (to, tm, _) = quality_model, toxicity_model
    en = Wordlist.load(to / "wordlist.txt")
    fr_term = sorted(load_lang_wordlists(to).for_lang("fr").terms)[0]
    en_term = sorted(en.terms)[0]
    docs = _docs([(f"Un texte avec {' '.join(fr_term)} dedans.", "fr"),
                  (f"A text with {' '.join(en_term)} in it.", "en"),
                  (f"Un texte avec {' '.join(en_term)} dedans.", "fr"),  # an English term in French: not counted
                  (f"Teksto {' '.join(en_term)}.", "ceb")])
    stats = Counter()
    out = score_shard(docs, qo, to, ScoreConfig(enabled=False), stats)
    assert stats["wordlist_hits"] == 2 and stats["docs_with_wordlist_hit"] == 2
    assert stats["wordlist_unavailable/ceb"] == 1
    tox = out.column("toxicity").to_numpy()
    assert np.all(tox[:2] >= 0.5)
    # One list given directly is the English one: it applies to English documents only.
    stats = Counter()
    score_table(docs, qo / qm["model_file"], to / tm["model_file"], en, ScoreConfig(enabled=False), stats)
    assert stats["wordlist_hits"] == 1
    assert stats["wordlist_unavailable/fr"] == 2 and stats["wordlist_unavailable/ceb"] == 1
