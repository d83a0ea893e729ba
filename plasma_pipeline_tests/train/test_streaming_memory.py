"""Streaming engine memory: activation placements are the same function, the planner's math, the bounded rings."""

from __future__ import annotations

import pytest
import torch

from plasma_pipeline.train.config import TrainConfig, model_config
from plasma_pipeline.train.data import TokenLoader
from plasma_pipeline.train.optim import lr_at
from plasma_pipeline.train.plan import GiB, PlanError, make_plan, unit_numels
from plasma_pipeline.train.streaming import StreamingEngine

STEPS = 6


def run(data_dir, **kw):
    cfg = TrainConfig(model="toy", data_dir=str(data_dir), steps=STEPS, batch_size=8, micro_batch=3, lr=3e-3,
                      warmup=2, engine="streaming", device="cpu",
                      model_overrides={"n_layers": 4}, **kw)  # > 2 blocks: buffers are refilled before backward
    e = StreamingEngine(cfg.model_config(), cfg, torch.device("cpu"), torch.float32, seq_len=32)
    loader = TokenLoader(data_dir, cfg.batch_size, cfg.seed)
    stats = [e.train_step(loader.next_batch(), lr_at(s + 1, cfg.lr, cfg.warmup, STEPS, 0.1)) for s in range(STEPS)]
    w = {k: v.clone() for k, v in e.state_dict().items()}
    e.close()
    return e, stats, w


@pytest.mark.parametrize("kw", [
    {"activations": "recompute"},
    {"activations": "offload", "grad_ring_slots": 1},  # boundaries through pinned host memory, a one-slot ring
    {"gpu_memory_gb": 7.0e6 / 2**30},  # a budget that keeps two of the four blocks
    {"gpu_memory_gb": 3.0e6 / 2**30},  # ... that keeps none and moves the gradient stash to the host
])
def test_no_recompute_equals_recompute(shards, kw):
    """Keeping the graph (weights swapped out of it by saved-tensor hooks) is bit-for-bit the recompute path."""
    keep, ks, kw_ = run(shards, activations="keep")
    other, os_, ow = run(shards, **kw)
    assert keep.plan.n_keep == 4 and other.plan.n_keep < 4
    if kw.get("gpu_memory_gb", 1) < 4e-3:
        assert other.plan.grad_stash == "host" and other.hstash is not None
    assert [s.loss for s in ks] == [s.loss for s in os_]
    for k in kw_:
        assert torch.equal(kw_[k], ow[k]), k
    assert ks[-1].extra["kept_gb"] > 0 and os_[-1].extra["kept_gb"] < ks[-1].extra["kept_gb"]


def test_ring_bounds_host_memory(shards):
    e, stats, _ = run(shards, activations="keep", grad_ring_slots=2)
    n = e.cfg.num_params()
    outer, layer = unit_numels(e.cfg)
    assert e.ring.nbytes == 2 * layer * 4 and outer > layer  # fp32 on the CPU; the outer unit goes in pieces
    assert e.ring.max_in_use <= 2 and e.pipe.copied_bytes == 0  # CPU: slot copies are synchronous
    assert e.hstash is None and e.act_host is None
    assert e.host_model_bytes() == 12 * n + e.ring.nbytes  # master + two moments + the ring, nothing else
    assert stats[-1].loss < stats[0].loss


def test_plan_math_and_choices():
    cfg = model_config("5.9b")
    n = cfg.num_params()
    outer, layer = unit_numels(cfg)
    free = make_plan(cfg, 32, 1024, 2, None)
    assert (free.n_keep, free.grad_stash) == (cfg.n_layers, "gpu")  # unbounded: keep everything, no recompute
    assert free.host_bytes == 12 * n + 3 * layer * 2 + 3 * GiB
    tight = make_plan(cfg, 32, 1024, 2, 24 * GiB)
    assert tight.gpu_bytes <= 24 * GiB and tight.n_keep < cfg.n_layers
    assert tight.step_s >= free.step_s
    tighter = make_plan(cfg, 32, 1024, 2, 12 * GiB)
    assert tighter.grad_stash == "host" and tighter.host_bytes > 12 * n  # the stash moved to the host
    forced = make_plan(cfg, 32, 1024, 2, None, activations="offload", micro_batch=4)
    assert (forced.n_keep, forced.boundaries, forced.micro_batch) == (0, "host", 4)
    assert forced.host_bytes - free.host_bytes == cfg.n_layers * 32 * 1024 * cfg.dim * 2
    assert "expected step" in tight.summary() and "GiB" in tight.summary()


def test_plan_that_cannot_fit_fails_before_any_work(shards, monkeypatch):
    with pytest.raises(PlanError, match=r"gpu_memory_gb: 5\.9b .* cannot fit 2\.0 GiB.*needs \d+\.\d GiB"):
        make_plan(model_config("5.9b"), 64, 1024, 2, 2 * GiB)
    allocated = []
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: allocated.append(a) or (_ for _ in ()).throw(AssertionError))
    cfg = TrainConfig(model="toy", data_dir=str(shards), batch_size=8, engine="streaming", device="cpu",
                      gpu_memory_gb=1e-6)
    with pytest.raises(PlanError, match="gpu_memory_gb: toy"):
        StreamingEngine(cfg.model_config(), cfg, torch.device("cpu"), torch.float32, seq_len=32)
    assert not allocated
