"""The executor seam: the tiny recipe's data stages with `executor: {kind: dask}` on a local multi-process Dask
cluster started here publish byte-identical versions to the local executor's, and their per-shard work ran as
Dask tasks."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from plasma_pipeline.defs import build_defs
from plasma_pipeline.recipe import load_recipe
from plasma_pipeline_tests.conftest import tiny_recipe_dict

SOURCES = ("wiki", "recipes", "dialog")
DATA_ASSETS = (
    *(f"{stage}/{s}" for stage in ("raw", "clean", "scored") for s in SOURCES),
    "quality_classifier", "toxicity_classifier", "deduped", "tokenizer", "pretrain_shards",
)
# the per-shard functions of clean/score, dedup signatures and survivors, mix tokenising and packing (Dask's task
# prefixes drop the leading underscore)
TASKS = ("compute_and_write", "signatures_job", "survivors_job", "keyed_part", "train_shard_files")


def _recipe(tmp_path, name: str, executor: dict | None):
    raw = tiny_recipe_dict(tmp_path / name / "store")
    raw["sources"] = {s: raw["sources"][s] for s in SOURCES}
    raw["mix"]["weights"] = {s: w for s, w in raw["mix"]["weights"].items() if s in SOURCES}
    raw["classifiers"]["toxicity"] = {"clean_sources": ["wiki", "recipes"]}
    if executor is not None:
        raw["executor"] = executor
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_recipe(path), tmp_path / name / "store"


def _materialize(recipe, store) -> dict[str, str]:
    defs = build_defs(recipe)
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey.from_user_string(a) for a in DATA_ASSETS]
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
        failures = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
        assert result.success, failures
    return {a: (store / a / "CURRENT").read_text().strip() for a in DATA_ASSETS}


@pytest.mark.slow
def test_data_stages_on_a_local_dask_cluster_publish_the_local_executors_versions(tmp_path, offline_sources):
    distributed = pytest.importorskip("distributed")

    local = _materialize(*_recipe(tmp_path, "local", None))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = _materialize(*_recipe(tmp_path, "dask", {"kind": "dask", "address": cluster.scheduler_address}))
        with distributed.Client(cluster.scheduler_address) as client:
            prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert dask == local
    assert set(TASKS) <= set(prefixes), prefixes
