"""The trainer launched through the recipe's `launcher:`: a real local Dask cluster (worker processes started here)
runs base_model's trainer, its logs and metrics come back to Dagster, and the model equals the local launcher's.

Upstream of base_model (tokenizer, pretrain_shards) is published into each store directly with the store's own
writer from a real SentencePiece model and real token shards, so only the training step runs through Dagster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from plasma_pipeline.defs import build_defs
from plasma_pipeline.defs.common import store_for
from plasma_pipeline.defs.launch import PipesDaskClient
from plasma_pipeline.launch.dask_worker import WORKER_PYTHON
from plasma_pipeline.recipe import REPO_ROOT, load_recipe
from plasma_pipeline_tests.conftest import tiny_recipe_dict
from plasma_pipeline_tests.evaluate.fixtures import write_token_shards
from plasma_pipeline_tests.infer.toy import train_sp

distributed = pytest.importorskip("distributed")

BASE = dg.AssetKey("base_model")


@pytest.fixture(scope="module")
def cluster():
    # Worker processes (not threads), as on a GPU host: the task, its queue traffic and the trainer's parentage
    # are those of a separate worker process.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  worker_dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, offline_sources):
    root = tmp_path_factory.mktemp("launch_inputs")
    sp = train_sp(root, vocab_size=600, n_docs=400)
    shards = write_token_shards(root / "shards", sp, train_rows=24, val_rows=4)
    return sp, shards


def _project(root: Path, inputs, launcher: dict | None) -> Path:
    """A tiny recipe whose store already holds a tokenizer and pretrain_shards version."""
    root.mkdir()
    raw = tiny_recipe_dict(root / "store")
    raw["pretrain"].update(steps=3, batch_size=4, warmup=1, save_every=100, log_every=1, engine="resident")
    if launcher is not None:
        raw["pretrain"]["launcher"] = launcher
    recipe_file = root / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    store = store_for(load_recipe(recipe_file))
    sp, shards = inputs
    with store.writer("tokenizer") as w:
        (w.dir / "tokenizer.model").write_bytes(sp.read_bytes())
        w.publish()
    with store.writer("pretrain_shards") as w:
        for split in ("train", "val"):
            for f in sorted((shards / split).glob("*.parquet")):
                w.write(pq.read_table(f), split)
        w.publish()
    return recipe_file


def _materialize_base_model(recipe_file: Path, instance):
    defs = build_defs(load_recipe(recipe_file))
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[BASE], raise_on_error=False)


def _messages(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


def test_base_model_trains_on_the_dask_cluster_like_the_local_subprocess(tmp_path, inputs, cluster):
    local = _project(tmp_path / "local", inputs, None)
    remote = _project(tmp_path / "dask", inputs, {"kind": "dask", "address": cluster.scheduler_address})
    with dg.instance_for_test() as instance:
        res_local = _materialize_base_model(local, instance)
        res_dask = _materialize_base_model(remote, instance)
        assert res_local.success and res_dask.success, [str(e) for e in res_dask.all_events if e.is_failure]

        # Every line the trainer logged through Pipes reached Dagster's event log, as from the local trainer:
        # the two runs' logs are the same lines (numbers and paths aside) plus the Dask client's own one.
        def lines(run_id: str, root: Path) -> Counter:
            return Counter(re.sub(r"\d+", "N", m.replace(str(root), "ROOT")) for m in _messages(instance, run_id))

        seen_local, seen_dask = lines(res_local.run_id, tmp_path / "local"), lines(res_dask.run_id, tmp_path / "dask")
        submitted = [m for m in seen_dask if "trainer submitted to the Dask cluster" in m]
        assert len(submitted) == 1
        assert seen_dask - Counter(submitted) == seen_local
        assert any("successfully opened dagster pipes" in m for m in seen_dask)
        assert sum(n for m, n in seen_dask.items() if "loss" in m) >= 3  # a line per step at least

        mats = {r.run_id: r.asset_materializations_for_node("base_model")[0] for r in (res_local, res_dask)}
        md_local, md_dask = mats[res_local.run_id].metadata, mats[res_dask.run_id].metadata
        assert set(md_dask) == set(md_local)
        # The trainer's own materialization report (Pipes) reached the step and joined the published metadata.
        summary_local, summary_dask = _trainer_summary(md_local), _trainer_summary(md_dask)
        assert summary_dask["steps_this_run"] == 3 and len(summary_dask["weights_sha256"]) == 64
        assert summary_dask["weights_sha256"] == summary_local["weights_sha256"]

    # Same inputs and trainer settings: the same model version, whichever client launched the trainer.
    v_local = (tmp_path / "local" / "store" / "base_model" / "CURRENT").read_text().strip()
    v_dask = (tmp_path / "dask" / "store" / "base_model" / "CURRENT").read_text().strip()
    assert v_local == v_dask
    assert mats[res_dask.run_id].tags["dagster/data_version"] == v_dask


def test_a_failing_remote_trainer_fails_the_step_with_its_error(tmp_path, cluster):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"model": "toy", "data_dir": str(tmp_path / "no_such_shards"),
                               "out_dir": str(tmp_path / "out"), "steps": 2, "device": "cpu"}))

    @dg.asset
    def base_model(context):
        client = PipesDaskClient(cluster.scheduler_address)
        return client.run(command=[WORKER_PYTHON, "-m", "plasma_pipeline.train", "--config", str(cfg)],
                          context=context).get_materialize_result()

    with dg.instance_for_test() as instance:
        res = dg.materialize([base_model], instance=instance, raise_on_error=False)
        assert not res.success
        failure = next(e for e in res.all_events if e.is_step_failure)
        err = failure.event_specific_data.error
        text = err.message + "".join(c.message for c in [err.cause] if c)
        assert "trainer on Dask worker" in text and "failed with code 1" in text
        # The trainer's own error (raised before it opened Pipes), from the end of its stderr on the worker.
        assert "FileNotFoundError: no train/*.parquet under" in text and "no_such_shards" in text


UP = "stand-in trainer is up"


def _stand_in_trainer(tmp_path: Path, pipes: bool = False) -> tuple[str, Path, Path]:
    """A child that handles SIGINT as the trainer does (a second to checkpoint, then exit 130), leaving a marker;
    with `pipes`, it says it is up through Dagster Pipes and then waits."""
    ready, stopped = tmp_path / "ready", tmp_path / "got_sigint"
    wait = "time.sleep(120)"
    if pipes:
        wait = f"from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes() as p:\n    p.log.info({UP!r})\n    {wait}"
    code = (f"import signal, sys, time\n"
            f"def stop(*a):\n    time.sleep(1); open({str(stopped)!r}, 'w').write('x'); sys.exit(130)\n"
            f"signal.signal(signal.SIGINT, stop)\nopen({str(ready)!r}, 'w').write('x')\n{wait}\n")
    return code, ready, stopped


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout_s} s"
        time.sleep(0.1)


def test_an_interrupted_step_stops_its_remote_trainer_and_waits_for_it(tmp_path, cluster):
    """A trainer's Pipes log reaches the event log while it runs; then the step is terminated (SIGINT to its
    process, as from the UI): the Dask client cancels the task, the worker forwards SIGINT to the trainer, and the
    step ends only after the trainer has exited."""
    code, ready, stopped = _stand_in_trainer(tmp_path, pipes=True)

    @dg.asset
    def base_model(context):
        client = PipesDaskClient(cluster.scheduler_address, termination_timeout_s=10)
        return client.run(command=[WORKER_PYTHON, "-c", code], context=context).get_materialize_result()

    with dg.instance_for_test() as instance:
        def streamed() -> bool:
            return any(UP in m for r in instance.get_runs() for m in _messages(instance, r.run_id))

        def terminate() -> None:
            deadline = time.monotonic() + 60
            while not streamed() and time.monotonic() < deadline:
                time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)  # what `dagster` receives when a run is terminated

        threading.Thread(target=terminate, daemon=True).start()
        res = dg.materialize([base_model], instance=instance, raise_on_error=False)
        assert streamed()  # and the stand-in was still running then: it only stops on SIGINT
    assert not res.success
    err = next(e for e in res.all_events if e.is_step_failure).event_specific_data.error
    assert err.cls_name == "DagsterExecutionInterruptedError"
    assert stopped.exists()  # the trainer had checkpointed and exited when the step ended


def test_a_remote_trainer_whose_step_process_died_gets_sigint(tmp_path, cluster):
    """The step process killed outright (kill -9, OOM): its Dask client is gone, the scheduler releases the task,
    and the trainer is stopped as if its step had been terminated: no orphan trainer holds the GPU."""
    code, ready, stopped = _stand_in_trainer(tmp_path)
    step = (f"import time, distributed\nfrom plasma_pipeline.launch.dask_worker import WORKER_PYTHON, run_trainer\n"
            f"c = distributed.Client({cluster.scheduler_address!r})\n"
            f"f = c.submit(run_trainer, [WORKER_PYTHON, '-c', {code!r}], {{}}, None, 'plasma-pipes-orphan', pure=False)\n"
            f"time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", step], cwd=REPO_ROOT)
    try:
        _wait_for(ready, 60)
        proc.kill()
    finally:
        proc.wait()
    _wait_for(stopped, 15)


def _trainer_summary(metadata) -> dict:
    """The trainer's Pipes materialization as the asset passed it on: one JSON entry or `trainer/<field>` entries."""
    out: dict = {}
    for key, value in metadata.items():
        if key.startswith("trainer/"):
            out[key.removeprefix("trainer/")] = value.value
        elif key.startswith("trainer") and isinstance(value.value, dict):
            out.update(value.value)
    return out

