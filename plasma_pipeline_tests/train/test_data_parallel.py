"""Data parallel under torchrun (gloo, CPU, fp32): the same global batch gives the single-process loss curve,
and a run resumes across world sizes (1 -> 2 -> 1) onto the uninterrupted curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plasma_pipeline.train.config import TrainConfig
from plasma_pipeline.train.data import TokenLoader
from plasma_pipeline.train.distributed import DataParallel
from plasma_pipeline.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def conf(data, out, engine: str, **kw) -> dict:
    # SFT masks give the two ranks different target counts: a per-rank mean would show in the loss.
    return {"model": "toy", "data_dir": str(data), "out_dir": str(out), "steps": STEPS, "batch_size": 8,
            "micro_batch": 2, "lr": 1e-2, "warmup": 2, "engine": engine, "device": "cpu", "dtype": "fp32",
            "val_batches": 1, "seed": 3, **kw}


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def torchrun(tmp_path: Path, c: dict, nproc: int = 2) -> str:
    cfg = tmp_path / f"run-{nproc}.json"
    cfg.write_text(json.dumps(c))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                        str(nproc), "-m", "plasma_pipeline.train", "--config", str(cfg)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-4000:]
    return p.stdout + p.stderr


def test_ranks_take_disjoint_slices_of_the_global_batch(sft_shards):
    batch = TokenLoader(sft_shards, 8, 0).next_batch()
    parts = [DataParallel(rank=r, world=2).shard(batch) for r in range(2)]
    assert np.array_equal(np.concatenate([p.inputs.numpy() for p in parts]), batch.inputs.numpy())
    assert all(p.inputs.shape[0] == 4 and p.n_targets == batch.n_targets for p in parts)
    assert sum(int(p.mask.sum()) for p in parts) == batch.n_targets  # the slices' own targets add up
    with pytest.raises(ValueError, match="batch_size 8 does not split over 3 ranks"):
        DataParallel(rank=0, world=3).shard(batch)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["resident", "streaming"])
def test_torchrun_matches_single_process_across_world_sizes(tmp_path, sft_shards, engine):
    ref = tmp_path / "single"
    train(TrainConfig.from_dict(conf(sft_shards, ref, engine)))
    want = losses(ref)
    assert [s for s, _ in want] == list(range(1, STEPS + 1)) and want[-1][1] < want[0][1]  # it learns

    run = tmp_path / "moved"
    train(TrainConfig.from_dict(conf(sft_shards, run, engine, halt_at_step=2)))  # steps 1-2 on one process
    out = torchrun(tmp_path, conf(sft_shards, run, engine, halt_at_step=4))  # 3-4 on two ranks, resumed 1 -> 2
    assert out.count("resuming from") == 1, out[-4000:]  # rank 0 reports; rank 1 is silent
    ck = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ck == ["step-000002", "step-000004"], ck  # rank 0 alone wrote, no partial or per-rank copies
    summary = train(TrainConfig.from_dict(conf(sft_shards, run, engine)))  # 5-6 on one process, resumed 2 -> 1
    got = losses(run)
    assert [s for s, _ in got] == [s for s, _ in want]  # one record per step: rank 1 logged nothing
    rel = max(abs(a - b) / abs(b) for (_, a), (_, b) in zip(got, want))
    assert rel < 1e-5, (rel, got, want)
    assert summary["resumed_from_step"] == 4 and summary["step"] == STEPS
