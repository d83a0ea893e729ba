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


def budget_gb(pred, **kw) -> float:
    """The smallest GPU budget (GiB) under which the toy run's plan satisfies pred."""
    cfg = model_config("toy", n_layers=4)
    for b in range(1_000_000, 40_000_000, 50_000):
        try:
            if pred(make_plan(cfg, 8, 32, 4, b, micro_batch=3, cuda=False, compiled=False, **kw)):
                return b / GiB
        except PlanError:
            pass
    raise AssertionError("no such budget")


@pytest.mark.parametrize("kw", [
    {"activations": "recompute"},
    {"activations": "offload", "grad_ring_slots": 1},  # boundaries through pinned host memory, a one-slot ring
    "partial",  # a budget that keeps some of the four blocks and recomputes the others
    "host_stash",  # ... that keeps none, offloads, and moves the gradient stash to the host
])
def test_no_recompute_equals_recompute(shards, kw):
    """Keeping the graph (weights swapped out of it by saved-tensor hooks) is bit-for-bit the recompute path."""
    if kw == "partial":
        kw = {"gpu_memory_gb": budget_gb(lambda p: 0 < p.n_keep < 4)}
    elif kw == "host_stash":
        kw = {"gpu_memory_gb": budget_gb(lambda p: p.grad_stash == "host")}
    keep, ks, kw_ = run(shards, activations="keep")
    other, os_, ow = run(shards, **kw)
    assert keep.plan.n_keep == 4 and other.plan.n_keep < 4
    if other.plan.grad_stash == "host":
        assert other.hstash is not None and other.act_host is not None
    elif "gpu_memory_gb" in kw:
        assert 0 < other.plan.n_keep < 4
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
    assert forced.host_bytes - free.host_bytes == cfg.n_layers * (32 // forced.passes) * 1024 * cfg.dim * 2
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


def test_passes_sum_gradients_like_one_pass(shards):
    """A keep-everything plan that only fits by splitting the batch into passes trains like one pass."""
    one, s1, w1 = run(shards, activations="keep")
    three, s3, w3 = run(shards, activations="keep", gpu_memory_gb=budget_gb(lambda p: True, activations="keep"))
    assert (one.plan.passes, three.plan.passes, three.plan.n_keep) == (1, 3, 4)
    for a, b in zip(s1, s3):
        assert abs(a.loss - b.loss) <= 1e-6 * abs(a.loss)
    for k in w1:
        torch.testing.assert_close(w1[k], w3[k], atol=1e-6, rtol=1e-5, msg=k)
