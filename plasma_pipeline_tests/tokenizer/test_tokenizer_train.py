"""Stage 6 on real text: SentencePiece BPE with byte fallback, reserved chat tokens, bytes per token per domain."""

from __future__ import annotations

from collections import Counter

import pytest

from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS
from plasma_pipeline.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from plasma_pipeline_tests.tokenizer import corpora

SMALL = dict(vocab_size=2000, sample_chars=500_000, eval_chars_per_domain=40_000, num_threads=2)


def _batches(table, n=300):
    return [table.slice(i, n) for i in range(0, table.num_rows, n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    stats = Counter()
    meta = train_tokenizer({d: _batches(t) for d, t in corpora.domains().items()}, TokenizerConfig(**SMALL), out, stats)
    return out, meta, stats


def test_writes_model_and_vocab_with_requested_size(trained):
    out, meta, _ = trained
    assert (out / "tokenizer.model").stat().st_size > 0
    vocab_lines = (out / "tokenizer.vocab").read_text("utf-8").splitlines()
    assert len(vocab_lines) == 2000 == meta["vocab_size"]
    assert [line.split("\t")[0] for line in vocab_lines[:8]] == ["<pad>", "<unk>", "<s>", "</s>", *CHAT_SPECIAL_TOKENS]


def test_special_tokens_are_single_ids_4_to_7(trained):
    out, meta, _ = trained
    sp = load_tokenizer(out / "tokenizer.model")
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert meta["special_token_ids"] == {t: 4 + i for i, t in enumerate(CHAT_SPECIAL_TOKENS)}
    text = "<|system|>Be brief.<|end|><|user|>What is AI?<|end|><|assistant|>A field of science.<|end|>"
    ids = sp.encode(text)
    assert [i for i in ids if i < 8] == [4, 7, 5, 7, 6, 7]
    assert sp.decode(ids) == text


def test_real_documents_round_trip_exactly(trained):
    out, _, _ = trained
    sp = load_tokenizer(out / "tokenizer.model")
    for name, table in corpora.domains().items():
        texts = table["text"].to_pylist()[:40]
        for text, ids in zip(texts, sp.encode(texts)):
            assert 1 not in ids, f"{name}: <unk> in a real document"
            assert sp.decode(ids) == text, f"{name}: round trip changed the text"
    # code keeps its indentation as whitespace pieces, not as bytes
    src = "def f(x):\n    if x:\n        return 1\n"
    pieces = sp.encode(src, out_type=str)
    assert sp.decode(sp.encode(src)) == src and any(set(p) == {"▁"} and len(p) >= 2 for p in pieces)


def test_byte_fallback_encodes_unseen_characters(trained):
    out, _, _ = trained
    sp = load_tokenizer(out / "tokenizer.model")
    text = "東京は日本の首都です 🤖🦜 ∮ Ωmega"
    ids = sp.encode(text)
    pieces = [sp.id_to_piece(i) for i in ids]
    assert 1 not in ids  # no <unk>
    assert "<0xF0>" in pieces and "<0xE6>" in pieces  # emoji and CJK lead bytes
    assert sp.decode(ids) == text


def test_sample_is_domain_balanced(trained):
    _, meta, stats = trained
    per = meta["sample_chars_per_domain"]
    assert set(per) == {"wiki", "recipes", "shakespeare", "dialog", "code"}
    assert set(meta["sample_chars_budget_per_domain"].values()) == {100_000}
    # each domain reaches its equal share (plus at most one document), none dominates
    longest = {d: max(map(len, t["text"].to_pylist())) for d, t in corpora.domains().items()}
    for d, chars in per.items():
        assert 100_000 <= chars <= 100_000 + longest[d], (d, chars)
    assert stats["tokenizer/sample_chars/dialog"] == per["dialog"]
    assert sum(meta["sample_docs_per_domain"].values()) == stats["kept"]


def test_bytes_per_token_per_domain_is_plausible(trained):
    _, meta, _ = trained
    bpt = meta["bytes_per_token"]
    assert set(bpt) == {"wiki", "recipes", "shakespeare", "dialog", "code"}
    for d, v in bpt.items():
        assert 1.5 < v < 6.0, (d, v)
        assert v == pytest.approx(meta["eval_bytes_per_domain"][d] / meta["eval_tokens_per_domain"][d], abs=1e-3)
        assert meta["eval_docs_per_domain"][d] >= 1


def test_larger_vocab_compresses_the_same_held_out_docs_better(tmp_path):
    tables = {"wiki": _batches(corpora.wiki())}
    small = train_tokenizer(tables, TokenizerConfig(**{**SMALL, "vocab_size": 600}), tmp_path / "a", Counter())
    big = train_tokenizer(tables, TokenizerConfig(**{**SMALL, "vocab_size": 4000}), tmp_path / "b", Counter())
    assert small["eval_docs_per_domain"] == big["eval_docs_per_domain"]
    assert big["bytes_per_token"]["wiki"] > small["bytes_per_token"]["wiki"] + 0.3


def test_sample_weights_shift_the_sample(tmp_path):
    cfg = TokenizerConfig(**{**SMALL, "vocab_size": 600, "sample_weights": {"wiki": 3, "dialog": 1}})
    meta = train_tokenizer({"wiki": [corpora.wiki()], "dialog": [corpora.dialog()]}, cfg, tmp_path, Counter())
    assert meta["sample_chars_budget_per_domain"] == {"wiki": 375_000, "dialog": 125_000}
    assert meta["sample_chars_per_domain"]["wiki"] > 2.5 * meta["sample_chars_per_domain"]["dialog"]


def test_training_is_deterministic(tmp_path):
    tables = lambda: {"dialog": [corpora.dialog()], "code": [corpora.code()]}  # noqa: E731
    cfg = TokenizerConfig(**{**SMALL, "vocab_size": 800, "sample_chars": 200_000})
    m1 = train_tokenizer(tables(), cfg, tmp_path, Counter())
    first = (tmp_path / "tokenizer.model").read_bytes()  # the model embeds its output path: same folder twice
    m2 = train_tokenizer(tables(), cfg, tmp_path, Counter())
    assert (tmp_path / "tokenizer.model").read_bytes() == first
    m1.pop("train_seconds"), m2.pop("train_seconds")
    assert m1 == m2


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"vocab_size": 100}, "vocab_size"),
        ({"sample_chars": 0}, "sample_chars"),
        ({"sample_weights": {"wiki": -1}}, "sample_weights.wiki"),
        ({"character_coverage": 0.5}, "character_coverage"),
        ({"model_type": "wordpiece"}, "model_type"),
        ({"eval_chars_per_domain": -1}, "eval_chars_per_domain"),
    ],
)
def test_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=f"tokenizer.{field}"):
        TokenizerConfig(**kw)


def test_unknown_sample_weight_domain_is_rejected(tmp_path):
    cfg = TokenizerConfig(**{**SMALL, "sample_weights": {"nope": 1.0}})
    with pytest.raises(ValueError, match="unknown domains"):
        train_tokenizer({"dialog": [corpora.dialog()]}, cfg, tmp_path, Counter())


def test_sample_is_disjoint_from_held_out_and_independent_of_batching():
    from plasma_pipeline.tokenizer.train import _sample_domain

    wiki = corpora.wiki()
    tr, ev = _sample_domain([wiki], 150_000, 30_000, 0, "wiki", Counter())
    assert not set(tr) & set(ev)
    assert sum(map(len, tr)) >= 150_000 and sum(map(len, ev)) >= 30_000
    reversed_batches = _batches(wiki, 97)[::-1]
    assert _sample_domain(reversed_batches, 150_000, 30_000, 0, "wiki", Counter()) == (tr, ev)
    assert _sample_domain([wiki], 150_000, 30_000, 1, "wiki", Counter())[0] != tr  # the seed matters
