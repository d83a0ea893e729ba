"""Stage 7 on real text: exact per-domain budgets, epochs and cap, packing, val hold-out, determinism."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from plasma_pipeline.mix import MixConfig, build_token_shards, is_val_doc
from plasma_pipeline.schema import TOKEN_SCHEMA
from plasma_pipeline.tokenizer import BOS_ID, EOS_ID, PAD_ID
from plasma_pipeline_tests.mix.conftest import iters, mix_domains

SEQ = 64


def run(tok_path, cfg, tables=None, **kw):
    tables = mix_domains() if tables is None else tables
    train, val, stats = [], [], Counter()
    meta = build_token_shards(iters(tables), tok_path, cfg, train.append, val.append, stats, **kw)
    return meta, train, val, stats


def never_called():
    raise AssertionError("a zero-weight domain was read")


@pytest.fixture(scope="module")
def available(tok_path):
    """Train tokens per domain (after the val hold-out), from a tiny probe run."""
    meta, _, _, _ = run(tok_path, MixConfig(weights={d: 1 for d in mix_domains()}, total_tokens=4, seq_len=SEQ,
                                            val_fraction=0.05))
    return {d: m["available_tokens"] for d, m in meta["domains"].items()}


@pytest.fixture(scope="module")
def budgets(available):
    # wiki downsampled to ~half, recipes upsampled x1.6 (needs a 2nd epoch), dialog wants x3 but is capped at 2
    return {"wiki": available["wiki"] // 2, "recipes": int(available["recipes"] * 1.6), "dialog": 3 * available["dialog"]}


def cfg_for(budgets, **kw):
    base = dict(weights=dict(budgets), total_tokens=sum(budgets.values()), seq_len=SEQ, val_fraction=0.05,
                max_epochs=2.0, rows_per_shard=1)
    return MixConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def unshuffled(tok_path, budgets):
    """rows_per_shard=1: rows come out in stream order, so documents can be cut back out of the stream."""
    it = iters(mix_domains())
    it["shakespeare"] = never_called  # weight 0 (absent from weights): must not be read
    train, val, stats = [], [], Counter()
    meta = build_token_shards(it, tok_path, cfg_for(budgets), train.append, val.append, stats)
    return meta, train, val, stats


def doc_index(sp):
    """token tuple (without BOS/EOS) -> [(domain, id)], for every document of the mix corpora."""
    idx = defaultdict(list)
    for d, t in mix_domains().items():
        ids, texts = t["id"].to_pylist(), t["text"].to_pylist()
        for i, enc in zip(ids, sp.encode(texts)):
            idx[tuple(enc)].append((d, i))
    return idx


def chunks_of(stream):
    """Split a token stream at BOS into chunks (each starts with BOS)."""
    starts = np.flatnonzero(stream == BOS_ID)
    assert starts[0] == 0, "the stream must start with BOS"
    return np.split(stream, starts[1:])


def attribute(chunks, idx):
    """(domain, ids, complete?) per chunk: the ids of all documents with exactly that text (duplicates exist);
    a truncated chunk (no EOS) is matched as a prefix of a document."""
    out = []
    for c in chunks:
        if c[-1] == EOS_ID and tuple(c[1:-1].tolist()) in idx:
            refs = idx[tuple(c[1:-1].tolist())]
            assert len({d for d, _ in refs}) == 1
            out.append((refs[0][0], frozenset(i for _, i in refs), True))
            continue
        body = tuple(c[1:].tolist())
        hits = {ref for k, refs in idx.items() if k[: len(body)] == body and len(k) + 2 > len(c) for ref in refs}
        assert len({d for d, _ in hits}) == 1, f"truncated chunk of {len(c)} tokens matches {len(hits)} documents"
        out.append((next(iter(hits))[0], frozenset(i for _, i in hits), False))
    return out


def test_exact_budgets_per_domain_from_the_shards(unshuffled, budgets, available, sp):
    meta, train, _, stats = unshuffled
    stream = np.concatenate([np.asarray(r, np.int32) for t in train for r in t.column("input_ids").to_pylist()])
    pad = meta["pad_tokens"]
    assert 0 <= pad < SEQ + 1 and (pad == 0 or (stream[-pad:] == PAD_ID).all())
    stream = stream[: len(stream) - pad]
    chunks = chunks_of(stream)
    got = Counter()
    uses = Counter()
    for c, (d, ids, complete) in zip(chunks, attribute(chunks, doc_index(sp))):
        got[d] += len(c)
        uses[(d, ids)] += 1
    capped = int(2.0 * available["dialog"])
    assert dict(got) == {"wiki": budgets["wiki"], "recipes": budgets["recipes"], "dialog": capped}
    assert meta["tokens_per_domain_requested"] == budgets
    assert meta["tokens_per_domain_achieved"] == dict(got)
    assert meta["total_tokens_achieved"] == len(stream)
    # epochs: wiki docs at most once, every recipe once or twice, every dialog exactly twice (the cap, 2.0)
    per = defaultdict(list)
    for (d, _), n in uses.items():
        per[d].append(n)
    assert max(per["wiki"]) == 1
    assert set(per["recipes"]) == {1, 2} and len(per["recipes"]) == meta["domains"]["recipes"]["docs_available"]
    assert set(per["dialog"]) >= {2}  # texts repeated across chatterbot files show up 2 x k times
    assert meta["domains"]["dialog"]["unique_docs_used"] == meta["domains"]["dialog"]["docs_available"]
    assert meta["domains"]["recipes"]["full_epochs"] == 1 and meta["domains"]["recipes"]["epochs"] == pytest.approx(1.6, abs=1e-3)
    # the capped domain is reported, with a warning counter
    assert meta["capped_domains"] == ["dialog"] and meta["domains"]["dialog"]["capped"]
    assert meta["domains"]["dialog"]["achieved_tokens"] < meta["domains"]["dialog"]["requested_tokens"]
    assert stats["warning/epoch_cap/dialog"] == 1 and stats["warning/epoch_cap"] == 1
    assert meta["skipped_domains"] == ["shakespeare"]
    for d in budgets:
        assert stats[f"tokens/train/{d}"] == got[d]


def test_val_is_held_out_by_document_and_pure_per_domain(unshuffled, sp):
    meta, train, val, _ = unshuffled
    idx = doc_index(sp)
    train_stream = np.concatenate([np.asarray(r) for t in train for r in t.column("input_ids").to_pylist()])
    val_cfg = cfg_for({"x": 1})
    train_refs = [ids for _, ids, _ in attribute(chunks_of(train_stream[: len(train_stream) - meta["pad_tokens"]]), idx)]
    # each train chunk is the text of at least one non-val document
    assert train_refs and all(any(not is_val_doc(i, val_cfg) for i in ids) for ids in train_refs)
    train_docs = {i for ids in train_refs for i in ids if not is_val_doc(i, val_cfg)}
    val_docs = set()
    rows = [(np.asarray(r), dom) for t in val for r, dom in zip(t.column("input_ids").to_pylist(), t.column("domain").to_pylist())]
    assert len(rows) == meta["rows_val"] > 0
    for row, dom in rows:
        for c in np.split(row, np.flatnonzero(row == BOS_ID)):
            if len(c) > 2 and c[0] == BOS_ID and c[-1] == EOS_ID:  # a complete document inside one row
                refs = idx[tuple(c[1:-1].tolist())]
                assert refs, "val row holds a token sequence that is no document"
                assert {d for d, _ in refs} == {dom}, "val rows hold one domain only"
                assert any(is_val_doc(i, val_cfg) for _, i in refs)
                val_docs.update(i for _, i in refs if is_val_doc(i, val_cfg))
    assert len(val_docs) > 20 and not val_docs & train_docs
    for d in ("wiki", "recipes", "dialog"):
        n_val_rows = sum(1 for _, dom in rows if dom == d)
        assert n_val_rows == meta["domains"][d]["val_rows"] > 0
        assert meta["val_tokens_per_domain"][d] == n_val_rows * (SEQ + 1)


def test_rows_are_exact_length_with_bos_eos_separators(tok_path, budgets, sp):
    meta, train, val, stats = run(tok_path, cfg_for(budgets, rows_per_shard=300))
    assert len(train) == meta["shards_train"] > 1
    assert all(t.schema == TOKEN_SCHEMA for t in train + val)
    rows = np.array([r for t in train for r in t.column("input_ids").to_pylist()], dtype=np.int32)
    assert rows.shape == (meta["rows_train"], SEQ + 1)
    assert rows.max() < sp.get_piece_size() and rows.min() >= 0
    n_docs = sum(m["docs_used"] for m in meta["domains"].values())
    assert (rows == BOS_ID).sum() == n_docs
    assert (rows == EOS_ID).sum() == n_docs - stats["docs/truncated"]
    assert 1 <= stats["docs/truncated"] <= 3  # at most the boundary document of each domain
    # after EOS comes BOS (next document), pad (end of data), or the end of the row
    r, c = np.nonzero(rows[:, :-1] == EOS_ID)
    assert set(rows[r, c + 1].tolist()) <= {BOS_ID, PAD_ID}
    # pads only at the end of one row
    assert (rows == PAD_ID).sum() == meta["pad_tokens"]
    # mixed rows are shuffled: consecutive rows do not come in long same-domain runs
    labels = [d for t in train for d in t.column("domain").to_pylist()]
    assert set(labels) == {"wiki", "recipes", "dialog"}
    runs = sum(1 for a, b in zip(labels, labels[1:]) if a != b)
    assert runs > len(labels) / 4


def test_same_seed_same_shards_other_seed_other_shards(tok_path, budgets):
    cfg = cfg_for(budgets, rows_per_shard=500)
    m1, t1, v1, _ = run(tok_path, cfg)
    m2, t2, v2, _ = run(tok_path, cfg)
    assert m1 == m2
    assert len(t1) == len(t2) and all(a.equals(b) for a, b in zip(t1, t2))
    assert all(a.equals(b) for a, b in zip(v1, v2))
    m3, t3, _, _ = run(tok_path, cfg_for(budgets, rows_per_shard=500, seed=1))
    # another seed: another val split (so another cap for dialog), same exact budgets for the uncapped domains
    for d in ("wiki", "recipes"):
        assert m3["tokens_per_domain_achieved"][d] == m1["tokens_per_domain_achieved"][d] == budgets[d]
    assert not pa.concat_tables(t3).equals(pa.concat_tables(t1))


def test_changing_weights_changes_only_per_domain_counts(tok_path, available):
    total = 60_000
    a = run(tok_path, MixConfig(weights={"wiki": 2, "recipes": 1, "dialog": 1}, total_tokens=total, seq_len=SEQ,
                                val_fraction=0.05, rows_per_shard=1000))
    b = run(tok_path, MixConfig(weights={"wiki": 1, "recipes": 1, "dialog": 2}, total_tokens=total, seq_len=SEQ,
                                val_fraction=0.05, rows_per_shard=1000))
    (ma, _, va, _), (mb, _, vb, _) = a, b
    assert ma["tokens_per_domain_achieved"] == {"wiki": 30_000, "recipes": 15_000, "dialog": 15_000}
    assert mb["tokens_per_domain_achieved"] == {"wiki": 15_000, "recipes": 15_000, "dialog": 30_000}
    assert ma["rows_train"] == mb["rows_train"] == -(-total // (SEQ + 1))
    # the val split and the available tokens do not depend on the weights
    assert len(va) == len(vb) and all(x.equals(y) for x, y in zip(va, vb))
    for d in ("wiki", "recipes", "dialog"):
        assert ma["domains"][d]["available_tokens"] == mb["domains"][d]["available_tokens"] == available[d]
    assert mb["domains"]["dialog"]["epochs"] == pytest.approx(2 * ma["domains"]["dialog"]["epochs"], rel=1e-6)


def test_val_cap_and_unknown_domain(tok_path):
    meta, _, val, stats = run(tok_path, MixConfig(weights={"wiki": 1, "dialog": 1}, total_tokens=5000, seq_len=SEQ,
                                                  val_fraction=0.2, val_max_tokens_per_domain=300))
    for d in ("wiki", "dialog"):
        assert meta["domains"][d]["val_tokens"] + meta["domains"][d]["val_tail_tokens_dropped"] == 300
        assert meta["domains"][d]["val_rows"] == 300 // (SEQ + 1)
    assert stats["dropped/val_over_cap"] > 0
    with pytest.raises(ValueError, match="unknown domains"):
        run(tok_path, MixConfig(weights={"wiki": 1, "arxiv": 1}, total_tokens=100, seq_len=SEQ))


def test_a_small_domain_still_gets_one_val_document(tok_path):
    """Real dialog documents whose id hashes all miss val_fraction: the lowest-hash one is held out anyway."""
    from plasma_pipeline.mix.build import is_val_doc

    table = mix_domains()["dialog"].slice(0, 4)
    cfg = MixConfig(weights={"dialog": 1.0}, total_tokens=2_000, seq_len=32, val_fraction=0.0001)
    assert not any(is_val_doc(i, cfg) for i in table.column("id").to_pylist())
    train, val, stats = [], [], Counter()
    meta = build_token_shards(iters({"dialog": table}), tok_path, cfg, train.append, val.append, stats)
    assert meta["domains"]["dialog"]["val_docs"] == 1
    assert sum(t.num_rows for t in val) >= 1
    assert stats["val/min_one_doc_domains"] == 1
    assert meta["domains"]["dialog"]["docs_available"] == 3  # the val document is not trained on
