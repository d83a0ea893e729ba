"""Resident and streaming engines are numerical twins on the CPU in fp32."""

from __future__ import annotations

import pytest
import torch

from plasma_pipeline.train.config import TrainConfig
from plasma_pipeline.train.data import TokenLoader
from plasma_pipeline.train.optim import lr_at
from plasma_pipeline.train.trainer import build_engine

STEPS = 20


def run_engine(engine: str, data_dir, **kw):
    cfg = TrainConfig(model="toy", data_dir=str(data_dir), steps=STEPS, batch_size=8, micro_batch=3, lr=3e-3,
                      warmup=3, engine=engine, device="cpu", **kw)
    e = build_engine(cfg, cfg.model_config(), torch.device("cpu"), torch.float32)
    loader = TokenLoader(data_dir, cfg.batch_size, cfg.seed)
    losses = [e.train_step(loader.next_batch(), lr_at(s + 1, cfg.lr, cfg.warmup, STEPS, 0.1)).loss for s in range(STEPS)]
    out = losses, e.state_dict(), e.optimizer_state_dict()
    e.close()
    return out


@pytest.mark.parametrize(
    "data,kw",
    [
        ("shards", {}),  # pretrain, untied, clipped steps (no speculation)
        ("sft_shards", {"model_overrides": {"tie_embeddings": True}}),  # SFT mask, tied embeddings
        ("shards", {"grad_clip": 100.0}),  # never clipped: speculative per-layer steps during backward
        ("sft_shards", {"grad_clip": 0.3, "speculative_adam": "always"}),  # speculation undone and redone
    ],
)
def test_engines_are_twins(request, data, kw):
    data_dir = request.getfixturevalue(data)
    la, wa, oa = run_engine("resident", data_dir, **kw)
    lb, wb, ob = run_engine("streaming", data_dir, **kw)
    assert la[-1] < la[0]  # it learns
    rel = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
    assert rel < 1e-4, rel
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-4, msg=k)
    assert oa.keys() == {k for k in ob if not k.startswith("streaming.")}
    assert int(oa["step"]) == int(ob["step"]) == STEPS


def test_different_engines_would_be_caught(shards):
    """The twin check can fail: a different lr in one engine is visible in the losses."""
    la, _, _ = run_engine("resident", shards)
    lb, _, _ = run_engine("streaming", shards, beta1=0.8)
    assert max(abs(x - y) / abs(x) for x, y in zip(la, lb)) > 1e-4
