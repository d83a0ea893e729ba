"""Session fixtures: one quality and one toxicity model trained on real offline text, shared by the tests."""

from __future__ import annotations

from collections import Counter

import pytest

from plasma_pipeline.classify import QualityClassifierConfig, ToxicityClassifierConfig
from plasma_pipeline.classify import train_quality_classifier, train_toxicity_classifier
from plasma_pipeline_tests.classify import corpora as C

# nlp-corpus builds 10-49 train the toxicity model; builds 50-89 are never seen by it and serve as fresh test text.
TOX_TRAIN_GLOB = str(C.NLP_CORPUS / "doc-[1-4]?.json")
TOX_FRESH_BUILDS = range(50, 90)


def quality_config(**kw) -> QualityClassifierConfig:
    base = dict(positive_sources=["wiki_en", "recipes_en"], negative_sources=["dialogs", "nlp_corpus"],
                max_docs_per_class=600)
    return QualityClassifierConfig(**(base | kw))


def quality_inputs():
    """Positives: 500 wiki extracts + 250 recipes; negatives: chatterbot dialogs + nlp-corpus pseudo-docs."""
    return [C.wiki(0, 500), C.recipes(250)], [C.dialogs(), C.nlp_docs(range(51, 54))]


def toxicity_config(**kw) -> ToxicityClassifierConfig:
    C.need(C.NLP_CORPUS / "doc-10.json")
    base = dict(clean_sources=["wiki_en", "recipes_en"], offensive_corpus_glob=TOX_TRAIN_GLOB,
                max_sentences_per_class=2500)
    return ToxicityClassifierConfig(**(base | kw))


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    stats = Counter()
    pos, neg = quality_inputs()
    meta = train_quality_classifier(pos, neg, quality_config(), out, stats)
    return out, meta, stats


@pytest.fixture(scope="session")
def toxicity_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("toxicity")
    stats = Counter()
    meta = train_toxicity_classifier([C.wiki(0, 500), C.recipes(250)], toxicity_config(), out, stats)
    return out, meta, stats
