"""The loader: deterministic order, exact resume from a saved position, SFT masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from plasma_pipeline.train.data import TokenLoader, read_shard, row_length, val_batches


def take(loader, n):
    return [loader.next_batch() for _ in range(n)]


def test_same_seed_same_order_other_seed_other_order(shards):
    a = take(TokenLoader(shards, 5, seed=1), 6)
    b = take(TokenLoader(shards, 5, seed=1), 6)
    c = take(TokenLoader(shards, 5, seed=2), 6)
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, b))
    assert not all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, c))


def test_resume_from_position_continues_exactly(shards):
    straight = take(TokenLoader(shards, 7, seed=0), 25)  # 3 files x 24 rows: crosses files and epochs
    first = TokenLoader(shards, 7, seed=0)
    take(first, 11)
    resumed = TokenLoader(shards, 7, seed=0)
    resumed.load_state_dict(first.state_dict())
    for x, y in zip(straight[11:], take(resumed, 14)):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert resumed.pos.epoch >= 2


def test_epoch_visits_every_row_once(shards):
    loader = TokenLoader(shards, 8, seed=0)
    rows = torch.cat([b.inputs for b in take(loader, 9)])  # 72 rows = one epoch
    all_rows = np.concatenate([read_shard(f)[0] for f in sorted((shards / "train").glob("*.parquet"))])[:, :-1]
    got = sorted(map(tuple, rows.tolist()))
    assert got == sorted(map(tuple, all_rows.tolist()))


def test_inputs_targets_shift_and_sft_mask(sft_shards):
    ids, mask = read_shard(sorted((sft_shards / "train").glob("*.parquet"))[0])
    b = TokenLoader(sft_shards, 4, seed=0).next_batch()
    assert b.inputs.shape == (4, 32) and b.mask.shape == (4, 32)
    assert torch.equal(b.inputs[:, 1:], b.targets[:, :-1])
    # the mask is loss_mask[1:]: find each batch row in the shard and compare
    for r in range(4):
        full = torch.cat([b.inputs[r], b.targets[r, -1:]]).numpy()
        match = [i for i in range(len(ids)) if np.array_equal(ids[i], full)]
        if match:
            assert np.array_equal(b.mask[r].numpy(), mask[match[0], 1:].astype(np.float32))
    assert b.n_targets == int(b.mask.sum())
    assert row_length(sft_shards) == 33


def test_val_batches_fixed(shards):
    a, b = val_batches(shards, 4, 3), val_batches(shards, 4, 3)
    assert len(a) == 3 and all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, b))


def test_ragged_rows_rejected(tmp_path):
    (tmp_path / "train").mkdir()
    pq.write_table(pa.table({"input_ids": pa.array([[1, 2, 3], [1, 2]], type=pa.list_(pa.int32())),
                             "domain": ["a", "b"]}), tmp_path / "train" / "x.parquet")
    with pytest.raises(ValueError, match="packed"):
        read_shard(tmp_path / "train" / "x.parquet")


def test_pad_targets_of_the_last_pretrain_row_are_masked():
    """Stage 7 pads the final train row with id 0; those positions must not count in the loss."""
    from plasma_pipeline.train.data import PAD_ID, to_batch

    ids = np.array([[1, 17, 18, 19, 2, 1, 20, 2, PAD_ID, PAD_ID], [1, 5, 6, 7, 8, 9, 10, 11, 12, 2]], dtype=np.int64)
    b = to_batch(ids, None)
    assert b.mask is not None
    assert b.mask[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert b.mask[1].tolist() == [1] * 9
    assert to_batch(ids[1:], None).mask is None  # rows without padding keep the cheap unmasked path


def test_val_sample_covers_every_domain_and_reports_each(tmp_path):
    """Val shards are written domain by domain: the sample must not be the first domain's rows only."""
    from plasma_pipeline.train.data import val_batches as vb

    (tmp_path / "val").mkdir()
    rows = [[d * 10 + i] * 9 for d in range(3) for i in range(6)]
    doms = [name for name in ("code", "web", "wiki") for _ in range(6)]
    pq.write_table(pa.table({"input_ids": pa.array(rows, type=pa.list_(pa.int32())), "domain": doms}),
                   tmp_path / "val" / "part-00000.parquet")
    batches = vb(tmp_path, 2, 3)
    assert [b.domain for b in batches] == ["code", "web", "wiki"]
    assert {int(b.inputs[0, 0]) // 10 for b in batches} == {0, 1, 2}

    import torch

    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.trainer import build_engine, evaluate

    cfg = TrainConfig(model="toy", engine="resident", device="cpu")
    engine = build_engine(cfg, cfg.model_config(), torch.device("cpu"), torch.float32)
    out = evaluate(engine, batches)
    per = {b.domain: engine.eval_loss(b) for b in batches}
    assert {k: out[f"val_loss/{k}"] for k in per} == pytest.approx(per)
    assert out["val_loss"] == pytest.approx(sum(per.values()) / 3)  # equal rows per domain
