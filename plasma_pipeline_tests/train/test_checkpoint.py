"""Checkpoints: safetensors + JSON only, exact resume, keep-last-K, atomic saves."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from plasma_pipeline.train.checkpoint import latest_checkpoint, list_checkpoints, sha256_file
from plasma_pipeline.train.config import TrainConfig
from plasma_pipeline.train.trainer import train


def losses(out_dir):
    rows = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def toy_streaming(shards):
    """A toy streaming engine on CPU with a 1 GiB staging budget and no speculative steps, and its loader."""
    import torch

    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.data import TokenLoader
    from plasma_pipeline.train.streaming import StreamingEngine

    cfg = TrainConfig(model="toy", data_dir=str(shards), batch_size=4, lr=3e-3, warmup=0, engine="streaming",
                      device="cpu", checkpoint_stage_gb=1.0, speculative_adam="never")
    return StreamingEngine(cfg.model_config(), cfg, torch.device("cpu"), torch.float32, seq_len=32), \
        TokenLoader(shards, 4, 0)


def write_and_compare(snap, out, engine, want_w, want_o, step):
    """Write the snapshot's checkpoint files to out; they must hold want_w / want_o at `step`, while the engine
    has moved on."""
    import torch
    from safetensors.torch import load_file

    from plasma_pipeline.train import checkpoint as ck

    out.mkdir()
    ck._write_units(snap, out)
    got_w, got_o = load_file(out / "model.safetensors"), load_file(out / "optimizer.safetensors")
    for k, v in want_w.items():
        assert torch.equal(got_w[k], v), k
    for k, v in want_o.items():
        if k != "step":
            assert torch.equal(got_o[k], v), k
    assert int(got_o["step"]) == step
    assert not torch.equal(engine.state_dict()["model.norm.weight"], want_w["model.norm.weight"])


def cfg(data, out, engine, **kw):
    base = dict(model="toy", data_dir=str(data), out_dir=str(out), steps=12, batch_size=4, lr=3e-3, warmup=2,
                engine=engine, device="cpu", val_batches=1, keep_last=2)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("engine,kw", [("resident", {}), ("streaming", {}),
                                       ("streaming", {"grad_clip": 0.3, "speculative_adam": "always"})])
def test_exact_resume(tmp_path, sft_shards, engine, kw):
    train(cfg(sft_shards, tmp_path / "straight", engine, **kw))
    halted = train(cfg(sft_shards, tmp_path / "resumed", engine, halt_at_step=6, **kw))
    assert halted["halted"] and latest_checkpoint(tmp_path / "resumed").name == "step-000006"
    summary = train(cfg(sft_shards, tmp_path / "resumed", engine, **kw))
    assert summary["steps_this_run"] == 6
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert all(a[s] == b[s] for s in a), (a, b)  # identical, not merely close
    assert sha256_file(tmp_path / "straight/final/model.safetensors") == summary["weights_sha256"]


def test_resume_detects_a_different_run(tmp_path, shards):
    """Control: resuming with other data order (seed) gives other losses, so the test above can fail."""
    train(cfg(shards, tmp_path / "a", "resident"))
    train(cfg(shards, tmp_path / "b", "resident", halt_at_step=6))
    train(cfg(shards, tmp_path / "b", "resident", seed=1))
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert any(a[s] != b[s] for s in range(7, 13))


@pytest.mark.parametrize("background", [False, True])
def test_checkpoint_contents_and_keep_last(tmp_path, shards, background):
    out = tmp_path / "run"
    train(cfg(shards, out, "streaming", save_every=2, keep_last=3, checkpoint_background=background))
    steps = [s for s, _ in list_checkpoints(out)]
    assert steps == [8, 10, 12]
    ck = latest_checkpoint(out)
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "model.safetensors", "optimizer.safetensors",
                                                    "state.json"]
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == 12 and set(state["data"]) >= {"epoch", "file_cursor", "row_cursor"}
    assert "torch" in state["rng"] and state["config"]["engine"] == "streaming"
    with safe_open(ck / "optimizer.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "step" in keys and "model.layers.0.self_attn.q_proj.weight.exp_avg_sq" in keys
    with safe_open(ck / "model.safetensors", "pt") as f:
        assert "model.embed_tokens.weight" in set(f.keys())
    assert not list((out / "checkpoints").glob(".tmp*"))
    assert (out / "final/model.safetensors").is_file() and (out / "final/config.json").is_file()


def test_background_saves_are_logged_once_written_with_their_copies_prepared_ahead(tmp_path, shards):
    """Each background save appears in metrics.jsonl (and so in the run log) once written, with its time and
    copies; the trainer touched those copies' memory before the save started (prepared_units)."""
    out = tmp_path / "run"
    train(cfg(shards, out, "streaming", save_every=4, checkpoint_background=True, checkpoint_stage_gb=1.0))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    saves = [r for r in rows if r.get("event") == "checkpoint"]
    assert [r["step"] for r in saves] == [4, 8]
    assert [r["checkpoint"].rsplit("/", 1)[-1] for r in saves] == ["step-000004", "step-000008"]
    assert all(r["background"] and r["save_s"] >= 0 and r["prepared_units"] >= 1 for r in saves), saves
    assert rows[-1]["event"] == "final"


def test_partial_checkpoint_is_ignored(tmp_path, shards):
    out = tmp_path / "run"
    train(cfg(shards, out, "resident", halt_at_step=4))
    partial = out / "checkpoints" / "step-000009"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")  # no state.json: a crash mid-save
    assert latest_checkpoint(out).name == "step-000004"


def test_init_from_final(tmp_path, shards, sft_shards):
    train(cfg(shards, tmp_path / "base", "resident"))
    s = train(cfg(sft_shards, tmp_path / "sft", "streaming", init_from=str(tmp_path / "base/final"), steps=3))
    assert s["step"] == 3
    fresh = train(cfg(sft_shards, tmp_path / "fresh", "streaming", steps=3))
    assert s["final_loss"] != fresh["final_loss"]


def test_background_save_is_the_state_at_its_step(shards, tmp_path):
    """A checkpoint written from the streaming engine's host memory while it keeps training holds exactly the
    state at the step it was asked for, loads with safetensors and passes the hash check."""
    import torch

    from plasma_pipeline.train import checkpoint as ck
    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.data import TokenLoader
    from plasma_pipeline.train.streaming import StreamingEngine

    cfg = TrainConfig(model="toy", data_dir=str(shards), batch_size=4, lr=3e-3, warmup=0, engine="streaming",
                      device="cpu", speculative_adam="always")

    def engine_after(steps):
        e = StreamingEngine(cfg.model_config(), cfg, torch.device("cpu"), torch.float32, seq_len=32)
        ld = TokenLoader(shards, 4, 0)
        for _ in range(steps):
            e.train_step(ld.next_batch(), 1e-3)
        return e, ld

    e, ld = engine_after(2)
    handle = ck.save_checkpoint_async(tmp_path, e.step, e, {"step": e.step}, cfg.model_config().to_dict(), 2)
    for _ in range(2):  # training goes on while the writer runs
        e.train_step(ld.next_batch(), 1e-3)
    path = handle.result()
    assert ck.verify_checkpoint(path) is None
    weights, optim, state = ck.load_checkpoint(path)
    ref, _ = engine_after(2)
    assert state["step"] == 2 and int(optim["step"]) == 2
    want_w, want_o = ref.state_dict(), ref.optimizer_state_dict()
    assert weights.keys() == want_w.keys() and optim.keys() == want_o.keys()
    for k in want_w:
        assert torch.equal(weights[k], want_w[k]), k
    for k in want_o:
        assert torch.equal(optim[k], want_o[k]), k
    assert not torch.equal(weights["model.norm.weight"], e.state_dict()["model.norm.weight"])  # e moved on
    e.close()
    ref.close()


def test_the_optimizer_copies_units_the_writer_has_not_reached_instead_of_waiting(shards, tmp_path):
    """A background save's snapshot taken, then a whole step before the writer starts: every unit is copied on
    the optimizer's way (it does not wait for the disk), and the checkpoint written afterwards holds the
    state of the snapshot's step, not the step that ran meanwhile. Without a staging budget the same step
    waits for the writer (here: it would never start), so it is run on a thread with a deadline."""
    import threading

    import torch

    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.data import TokenLoader
    from plasma_pipeline.train.streaming import StreamingEngine

    def engine(stage_gb):
        cfg = TrainConfig(model="toy", data_dir=str(shards), batch_size=4, lr=3e-3, warmup=0, engine="streaming",
                          device="cpu", checkpoint_stage_gb=stage_gb)
        e = StreamingEngine(cfg.model_config(), cfg, torch.device("cpu"), torch.float32, seq_len=32)
        ld = TokenLoader(shards, 4, 0)
        e.train_step(ld.next_batch(), 1e-3)
        return e, ld, cfg

    e, ld, cfg = engine(1.0)
    want_w = {k: v.clone() for k, v in e.state_dict().items()}
    want_o = {k: v.clone() for k, v in e.optimizer_state_dict().items()}
    snap = e.snapshot_units(copy_ahead=False)  # the optimizer's own copies (the copier thread is tested below)
    e.train_step(ld.next_batch(), 1e-3)
    e.sync()  # the step's host AdamW has run on every unit, the writer not at all
    assert snap.staged_units == len(e.specs) and snap.gate_wait_s == 0.0
    write_and_compare(snap, tmp_path / "ckpt", e, want_w, want_o, step=1)
    e.close()

    e, ld, cfg = engine(1e-9)  # a budget smaller than any unit: the optimizer must wait for the writer
    snap = e.snapshot_units()  # the copier thread too finds no room
    t = threading.Thread(target=lambda: (e.train_step(ld.next_batch(), 1e-3), e.sync()), daemon=True)
    t.start()
    t.join(timeout=3)
    assert t.is_alive() and snap.staged_units == 0  # held at the first unit the writer has not released
    snap.release_all()
    t.join(timeout=30)
    assert not t.is_alive()
    e.close()


def test_the_optimizer_copies_the_next_unit_while_the_writer_holds_one(shards):
    """The writer is slower than the optimizer and takes each next unit as soon as it has written one. If the
    optimizer only waited at the unit the writer holds, the writer would take the next unit just before the
    optimizer got there, and the two would go on in lockstep at the disk's pace, copying nothing (the H200 run at
    1.2b: 2.7 s of waits in one step, 0 units copied). So while it waits it copies the unit after, and passes the
    writer for good. The copies hold the snapshot's state."""
    import threading
    import time

    import torch

    e, ld = toy_streaming(shards)
    e.train_step(ld.next_batch(), 1e-3)
    e.sync()
    n = len(e.specs)
    assert n >= 3
    want = {k: v.clone() for k, v in e.state_dict().items()}
    want_m = {k: v.clone() for k, v in e.optimizer_state_dict().items()}
    snap = e.snapshot_units(copy_ahead=False)
    snap.take(0)  # the writer holds unit 0
    step = threading.Thread(target=lambda: (e.train_step(ld.next_batch(), 1e-3), e.sync()), daemon=True)
    step.start()
    deadline = time.monotonic() + 30
    while snap.staged_units < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert snap.staged_units == 1, "the optimizer waited at unit 0 without copying unit 1"
    assert step.is_alive()  # still held at unit 0
    snap.release(0)
    w1, m1, v1 = snap.take(1)  # the writer's next unit: the copy, so it does not hold the optimizer back
    step.join(timeout=30)
    assert not step.is_alive(), "the optimizer was held by the writer past unit 0"
    assert snap.staged_units == n - 1 and snap.gate_wait_s > 0
    for k, t in w1.items():
        assert torch.equal(t, want[k]), k
        assert torch.equal(m1[k], want_m[f"{k}.exp_avg"]) and torch.equal(v1[k], want_m[f"{k}.exp_avg_sq"]), k
    assert not all(torch.equal(e.state_dict()[k], want[k]) for k in w1)  # the live unit moved on
    snap.release_all()
    e.close()


def test_a_copier_thread_copies_the_units_before_the_next_step_reaches_them(shards, tmp_path):
    """The copier thread copies every unit before the next step's host AdamW reaches it (on the GPU: while the
    next step computes), so that optimizer neither copies nor waits, and the checkpoint written later holds
    the state at the snapshot's step, not the state after the next step. (On CPU a step's AdamW has landed when
    train_step returns, so the copier's wait for AdamW steps queued before the snapshot is the GPU's case.)"""
    import time

    ref, lr = toy_streaming(shards)
    e, ld = toy_streaming(shards)
    for _ in range(2):
        ref.train_step(lr.next_batch(), 1e-3)
    ref.sync()
    want_w, want_o = ref.state_dict(), ref.optimizer_state_dict()
    e.train_step(ld.next_batch(), 1e-3)
    e.train_step(ld.next_batch(), 1e-3)
    snap = e.snapshot_units()
    n = len(e.specs)
    deadline = time.monotonic() + 30
    while snap.ahead_units < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert snap.ahead_units == n
    e.train_step(ld.next_batch(), 1e-3)
    e.sync()
    assert snap.stage_s == 0.0 and snap.gate_wait_s == 0.0 and snap.staged_units == n
    write_and_compare(snap, tmp_path / "ckpt", e, want_w, want_o, step=2)
    e.close()
    ref.close()


def test_copies_go_into_buffers_touched_ahead_of_the_snapshot(shards, tmp_path):
    """prepare_snapshot() allocates and touches the copies on a thread before the save starts (a copy into fresh
    memory runs at page-fault speed); the snapshot's copier then copies into exactly those buffers, and the
    checkpoint still holds the state at the snapshot's step."""
    import time

    e, ld = toy_streaming(shards)
    e.train_step(ld.next_batch(), 1e-3)
    e.prepare_snapshot()
    prepared = e._prepared
    prepared._thread.join(timeout=30)
    n = len(e.specs)
    ptrs = {b.data_ptr() for ui in range(n) for b in prepared._ready[ui]}
    assert prepared.bytes == e.snapshot_bytes() and len(ptrs) == 3 * n
    e.train_step(ld.next_batch(), 1e-3)  # training goes on while the buffers wait
    want_w = {k: v.clone() for k, v in e.state_dict().items()}
    want_o = {k: v.clone() for k, v in e.optimizer_state_dict().items()}
    snap = e.snapshot_units()
    assert e._prepared is None
    deadline = time.monotonic() + 30
    while snap.ahead_units < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert snap.prepared_units == n
    assert {t.data_ptr() for ui in range(n) for t in snap._staged[ui]} == ptrs
    e.train_step(ld.next_batch(), 1e-3)
    e.sync()
    write_and_compare(snap, tmp_path / "ckpt", e, want_w, want_o, step=2)
    e.close()
