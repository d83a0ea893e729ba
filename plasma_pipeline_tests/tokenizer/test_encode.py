"""SegmentEncoder: token for token what sp.encode gives, on real documents and on adversarial strings."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import sentencepiece as spm

from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS
from plasma_pipeline.tokenizer import TokenizerConfig, train_tokenizer
from plasma_pipeline.tokenizer.encode import SegmentEncoder, load_encoder, split_pair
from plasma_pipeline.tokenizer.model_proto import model_pb2
from plasma_pipeline_tests.tokenizer import corpora

pb = model_pb2()

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc")
    cfg = TokenizerConfig(vocab_size=2000, sample_chars=400_000, eval_chars_per_domain=10_000)
    train_tokenizer({d: [t] for d, t in corpora.domains().items()}, cfg, out, Counter())
    return out / "tokenizer.model"


def same_as_sp(enc: SegmentEncoder, sp, texts) -> None:
    toks, lens = enc.encode(texts)
    ref = sp.encode(list(texts) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else texts.to_pylist())
    assert lens.tolist() == [len(r) for r in ref]
    assert toks.dtype == np.int32 and toks.tolist() == [i for r in ref for i in r]


def test_real_documents_match_sentencepiece(model):
    sp = spm.SentencePieceProcessor(model_file=str(model))
    enc = SegmentEncoder(model)
    assert enc.why_plain is None  # our tokenizer's pieces never cross a split point
    for name, table in corpora.domains().items():
        for batch in (table.slice(i, 150) for i in range(0, table.num_rows, 150)):
            same_as_sp(enc, sp, batch.column("text"))  # Arrow input, as the mix workers pass it
    assert 0 < enc.stats["new_parts"] < enc.stats["parts"] // 4  # the cache works
    # a second pass is all cache hits and still exact
    misses = enc.stats["new_parts"]
    same_as_sp(enc, sp, corpora.wiki(300).column("text").to_pylist())
    assert enc.stats["new_parts"] == misses


ATOMS = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r", "the", "The", "ing", "tion", "a", "x", "1", "23", "456", ".",
         ",", "(", ")", "_", "-", "é", "ü", "東京", "🤖", "def", "    return", "self.", "\x00", "\x7f", "'", '"',
         "Ω", "ß", "ﬁ", "\u2028", "\u3000"]
ODD = ["\u2581", "\u2581\u2581", *CHAT_SPECIAL_TOKENS, "<|", "|>"]


@pytest.mark.parametrize("odd", [False, True], ids=["plain-text", "with-U+2581-and-chat-tokens"])
def test_adversarial_strings_match_sentencepiece(model, odd):
    sp = spm.SentencePieceProcessor(model_file=str(model))
    enc = SegmentEncoder(model, max_entries=400)  # small: the cache is emptied and rebuilt along the way
    rng = random.Random(7)
    pool = ATOMS + (ODD if odd else [])
    for _ in range(150):
        texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(1, 40))]
        texts += ["", " ", "   ", "a ", " a", "a  ", "\n", " \n "]
        same_as_sp(enc, sp, texts)
    assert enc.stats["resets"] > 0
    assert (enc.stats["plain_docs"] > 0) == odd


def test_models_that_break_the_split_points_are_encoded_plainly(model, tmp_path):
    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    normal = next(p for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL and len(p.piece) > 2)
    normal.piece = "x\u2581y"  # a space inside a piece: merges could cross words
    bad = tmp_path / "bad.model"
    bad.write_bytes(proto.SerializeToString())
    enc = SegmentEncoder(bad)
    assert enc.why_plain and "crosses a split point" in enc.why_plain
    sp = spm.SentencePieceProcessor(model_file=str(bad))
    same_as_sp(enc, sp, ["ax yb", "x y", corpora.wiki(5).column("text")[0].as_py()])

    # a piece across the letter / punctuation boundary only: words are then cut at spaces and newlines alone
    proto.ParseFromString(model.read_bytes())
    normal = next(p for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL and len(p.piece) > 2)
    normal.piece = "q.z"
    mixed = tmp_path / "mixed.model"
    mixed.write_bytes(proto.SerializeToString())
    enc = SegmentEncoder(mixed)
    assert enc.why_plain is None and not enc.script
    sp = spm.SentencePieceProcessor(model_file=str(mixed))
    same_as_sp(enc, sp, ["aq.zb", "q.z q.z.", "xq.", *corpora.code(3).column("text").to_pylist()])
    assert SegmentEncoder(model).script

    uni = tmp_path / "uni"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpora.wiki(400).column("text").to_pylist()),
                                   model_prefix=str(uni), model_type="unigram", vocab_size=500, minloglevel=2)
    enc = SegmentEncoder(f"{uni}.model")
    assert enc.why_plain == "model type is not BPE"
    same_as_sp(enc, spm.SentencePieceProcessor(model_file=f"{uni}.model"), corpora.wiki(50).column("text"))


def test_cutting_tokens_back_checks_its_offsets(model):
    """If the joined encoding of new parts could not be cut back at their byte offsets, each part is encoded
    alone (never expected for an eligible model; forced here by lying about the tokens' byte lengths)."""
    sp = spm.SentencePieceProcessor(model_file=str(model))
    enc = SegmentEncoder(model)
    enc.piece_bytes = enc.piece_bytes + 1
    same_as_sp(enc, sp, corpora.recipes(40).column("text"))


def test_split_points():
    import itertools

    from plasma_pipeline.tokenizer.encode import _CLASS_LETTER, _CROSSING_SCRIPT, _CROSSING_SPACE

    assert split_pair("a", " ") and split_pair(".", "\u2581") and split_pair("a", "\n") and split_pair("\n", " ")
    assert split_pair("a", ".") and split_pair("1", "x") and not split_pair("a", ".", script=False)
    assert not split_pair(" ", " ") and not split_pair(" ", "a") and not split_pair("a", "b")
    assert not split_pair("a", "é") and not split_pair("é", ".") and not split_pair("1", ".")
    # the model check (one regex per piece) agrees with split_pair on every pair of classes
    chars = [" ", "\u2581", "\n", "a", "Z", "1", ".", "_", "\t", "\x00", "\x7f", "é", "東", "🤖"]
    for a, b in itertools.product(chars, repeat=2):
        for script, rx in ((True, _CROSSING_SCRIPT), (False, _CROSSING_SPACE)):
            assert split_pair(a, b, script) == bool(rx.search((a + b).translate(_CLASS_LETTER))), (a, b, script)


def test_one_encoder_per_process_and_model(model):
    assert load_encoder(model) is load_encoder(str(model))
    assert load_encoder(model, num_threads=2) is not load_encoder(model)
