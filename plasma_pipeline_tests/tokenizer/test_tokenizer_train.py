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


def test_training_is_deterministic_in_any_folder(tmp_path):
    tables = lambda: {"dialog": [corpora.dialog()], "code": [corpora.code()]}  # noqa: E731
    cfg = TokenizerConfig(**{**SMALL, "vocab_size": 800, "sample_chars": 200_000})
    m1 = train_tokenizer(tables(), cfg, tmp_path / "a", Counter())
    m2 = train_tokenizer(tables(), cfg, tmp_path / "b", Counter(), work_dir=tmp_path)
    # the model records its training paths: pinned, so the same sample gives the same bytes (and version id)
    assert (tmp_path / "a/tokenizer.model").read_bytes() == (tmp_path / "b/tokenizer.model").read_bytes()
    for m in (m1, m2):
        m.pop("train_seconds"), m.pop("model_path")
    assert m1 == m2
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob("plasma-tok-*"))  # work dir cleaned


def test_crlf_line_ends_train_the_same_model_as_lf(tmp_path):
    """SentencePiece's sentence iterator dropped a line's trailing CRs; its file reader keeps them, so the sample
    writer drops them: a CRLF corpus gives the tokenizer it always gave."""
    import pyarrow as pa

    dialog = corpora.dialog()
    crlf = dialog.set_column(1, "text", pa.array([t.replace("\n", "\r\n") for t in dialog["text"].to_pylist()]))
    cfg = TokenizerConfig(**{**SMALL, "vocab_size": 600, "sample_chars": 1_000_000})  # all of it, CRs or not
    train_tokenizer({"dialog": [dialog]}, cfg, tmp_path / "lf", Counter())
    train_tokenizer({"dialog": [crlf]}, cfg, tmp_path / "crlf", Counter())
    assert (tmp_path / "lf/tokenizer.vocab").read_text() == (tmp_path / "crlf/tokenizer.vocab").read_text()


def test_sentencepiece_reads_the_streamed_sample_file(trained):
    from plasma_pipeline.tokenizer.model_proto import model_pb2
    pb = model_pb2()

    out, meta, stats = trained
    proto = pb.ModelProto()
    proto.ParseFromString((out / "tokenizer.model").read_bytes())
    assert list(proto.trainer_spec.input) == ["sample.txt"]
    # it loads exactly the lines of the capped sample, nothing resampled
    assert proto.trainer_spec.input_sentence_size == meta["sample_lines"] == stats["tokenizer/sample_lines"] > 1000
    chars = sum(meta["sample_chars_per_domain"].values())
    assert chars <= meta["sample_file_bytes"] <= 1.2 * chars  # one line per line of text, mostly ASCII
    assert not list(out.glob("*.txt"))  # the sample lives in the work dir, not in the published folder


def test_sampling_memory_does_not_grow_with_the_sample(tmp_path):
    """The kept documents' texts are on disk: Python memory holds a few tuples per document, not the texts."""
    import tracemalloc

    import pyarrow as pa

    from plasma_pipeline.tokenizer.train import _sample_domain

    words = corpora.wiki(400).column("text").to_pylist()

    def stream(n_tables=40, docs=500):
        for k in range(n_tables):
            texts = [words[(k * docs + i) % len(words)] * 3 for i in range(docs)]
            yield pa.table({"id": [f"d{k}-{i}" for i in range(docs)], "text": texts})

    total = sum(t.column("text").nbytes for t in stream())  # about 30 MB of text
    tracemalloc.start()
    train, held = _sample_domain(stream(), total // 2, 100_000, 0, "wiki", Counter(), tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept = sum(x[4] for x in train.heap)
    assert kept >= total // 2 > 10_000_000
    assert peak < kept / 2, (peak, kept)  # the texts kept are not in memory (held there, they would be > kept)
    assert sum(map(len, train.texts())) == kept


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


def test_sample_is_disjoint_from_held_out_and_independent_of_batching(tmp_path):
    from plasma_pipeline.tokenizer.train import _sample_domain

    def sample(tables, seed=0):
        tr, ev = _sample_domain(tables, 150_000, 30_000, seed, "wiki", Counter(), tmp_path)
        return list(tr.texts()), list(ev.texts())

    wiki = corpora.wiki()
    tr, ev = sample([wiki])
    assert not set(tr) & set(ev)
    assert sum(map(len, tr)) >= 150_000 and sum(map(len, ev)) >= 30_000
    reversed_batches = _batches(wiki, 97)[::-1]
    assert sample(reversed_batches) == (tr, ev)
    assert sample([wiki], seed=1)[0] != tr  # the seed matters
