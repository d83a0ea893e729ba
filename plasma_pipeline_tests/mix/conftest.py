from __future__ import annotations

from collections import Counter

import pytest

from plasma_pipeline.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from plasma_pipeline_tests.tokenizer import corpora


def mix_domains():
    """The real document tables the mix tests use: name -> table (wiki, recipes, dialog, shakespeare)."""
    return {
        "wiki": corpora.wiki(500),
        "recipes": corpora.recipes(250),
        "dialog": corpora.dialog(),
        "shakespeare": corpora.shakespeare(),
    }


def iters(tables, batch=120):
    """domain -> callable yielding the table in batches (as the shard store would yield shards)."""
    return {d: (lambda t=t: (t.slice(i, batch) for i in range(0, t.num_rows, batch))) for d, t in tables.items()}


@pytest.fixture(scope="session")
def tok_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixtok")
    cfg = TokenizerConfig(vocab_size=1500, sample_chars=300_000, eval_chars_per_domain=10_000)
    meta = train_tokenizer({d: [t] for d, t in mix_domains().items()}, cfg, out, Counter())
    return meta["model_path"]


@pytest.fixture(scope="session")
def sp(tok_path):
    return load_tokenizer(tok_path)
