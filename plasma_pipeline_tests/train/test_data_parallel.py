"""Data parallel under torchrun (gloo, CPU, fp32): the same global batch gives the single-process loss curve,
and a run resumes across world sizes (1 -> 2 -> 1) onto the uninterrupted curve."""


import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
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


@pytest.mark.slow
def test_gpus_in_the_run_config_launches_torchrun_through_pipes(tmp_path, shards):
    """`gpus: 2` makes the assets' launch seam start two ranks; only rank 0 reports, and its materialization
    says so; a config every rank rejects fails the step."""
    from plasma_pipeline.defs.launch import launch_trainer

    def asset_for(c: dict, seen: dict):
        (tmp_path / "run.json").write_text(json.dumps(c))

        @dg.asset
        def base_model(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
            inv = launch_trainer(context, None, pipes, str(tmp_path / "run.json"), extras={})
            seen["messages"] = inv.get_custom_messages()
            return inv.get_materialize_result()

        return base_model

    seen: dict = {}
    c = {**conf(shards, tmp_path / "out", "resident"), "steps": 3, "gpus": 2, "val_batches": 2}
    res = dg.materialize([asset_for(c, seen)], resources={"pipes": dg.PipesSubprocessClient()})
    assert res.success
    meta = res.asset_materializations_for_node("base_model")[0].metadata
    assert meta["world_size"].value == 2 and meta["step"].value == 3
    assert meta["data_parallel"].value == "ddp"  # the resident engine under torchrun is DDP, not a hand-rolled reduce
    # Each rank scored half of the val batches; the summed numbers are the single process's, domain by domain.
    final = [json.loads(l) for l in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()][-1]
    single = train(TrainConfig.from_dict({**c, "gpus": 1, "out_dir": str(tmp_path / "single")}))
    from plasma_pipeline.train.data import val_batches

    vals = val_batches(shards, c["batch_size"], c["val_batches"])
    assert len(vals) == 2  # one for each rank
    # Means cannot tell a split val pass from every rank scoring everything; the row count can.
    assert final["val_rows"] == single["val_rows"] == sum(b.inputs.shape[0] for b in vals)
    val_keys = sorted(k for k in single if k.startswith("val_loss"))
    assert val_keys == ["val_loss", "val_loss/synthetic"]
    for k in val_keys:
        assert abs(final[k] - single[k]) <= 1e-5 * abs(single[k]), (k, final[k], single[k])
    assert [m["step"] for m in seen["messages"] if isinstance(m, dict) and "loss" in m] == [1, 2, 3]

    bad = {**c, "out_dir": str(tmp_path / "bad"), "model_overrides": {"n_layers": -1}}
    res = dg.materialize([asset_for(bad, {})], resources={"pipes": dg.PipesSubprocessClient()},
                         raise_on_error=False)
    assert not res.success



def test_gpus_in_the_recipe_reaches_the_run_config_but_not_the_work_dir_key(tmp_path):
    """A run keyed without `gpus` resumes on another GPU count in the same work dir."""
    import yaml

    from plasma_pipeline.defs.train_assets import train_config
    from plasma_pipeline.recipe import load_recipe

    def recipe(gpus: int, batch_size: int = 16):
        raw = yaml.safe_load((REPO / "recipes" / "default.yaml").read_text())
        raw["pretrain"]["batch_size"] = batch_size
        if gpus:
            raw["pretrain"]["gpus"] = gpus
        p = tmp_path / f"gpus-{gpus}-{batch_size}.yaml"
        p.write_text(yaml.safe_dump(raw))
        return load_recipe(p, check_paths=False)

    one, two = recipe(0), recipe(2)
    assert train_config(two, "pretrain", tmp_path, tmp_path, 512)["gpus"] == 2
    assert "gpus" not in train_config(one, "pretrain", tmp_path, tmp_path, 512)
    assert two.fingerprint("pretrain") == one.fingerprint("pretrain")
    assert recipe(2, batch_size=32).fingerprint("pretrain") != two.fingerprint("pretrain")  # other settings count


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_one_checkpoint(tmp_path, shards):
    """SIGTERM to the launcher (as when the step process dies): torchrun passes it on, the ranks agree on the
    step boundary, rank 0 writes one intact checkpoint, and the launcher exits 143 like a single trainer."""
    import signal
    import time

    from plasma_pipeline.train.checkpoint import list_checkpoints, verify_checkpoint

    out = tmp_path / "out"
    (tmp_path / "run.json").write_text(json.dumps({**conf(shards, out, "resident"), "steps": 100000,
                                                  "val_batches": 0}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    p = subprocess.Popen([sys.executable, "-m", "plasma_pipeline.train.ranks", "2", "--config",
                          str(tmp_path / "run.json")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else ""
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-3000:]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "terminated"
    (step, path), = list_checkpoints(out)
    assert step == last["step"] and verify_checkpoint(path) is None


@pytest.mark.slow
def test_streaming_ranks_of_one_host_share_one_master_and_split_its_adamw(tmp_path, sft_shards):
    single = train(TrainConfig.from_dict(conf(sft_shards, tmp_path / "single", "streaming")))
    assert single["host_master"] == "one per process"
    run = tmp_path / "two"
    torchrun(tmp_path, conf(sft_shards, run, "streaming"))
    final = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["event"] == "final" and final["host_master"] == "one per node, 2 ranks each step 1/2"
    # rank 0 stepped half of every unit, not all of it: the node's host AdamW runs once per parameter
    assert abs(final["host_adam_elements"] - single["host_adam_elements"] / 2) <= 0.01 * single["host_adam_elements"]
    rel = max(abs(a - b) / abs(b) for (_, a), (_, b) in zip(losses(run), losses(tmp_path / "single")))
    assert rel < 1e-5, rel
