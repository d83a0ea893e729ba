"""The search's assets through Dagster on a two-source tiny recipe: real stages, real trainer, real instance.

One module-scoped instance: the inputs (collect ... tokenizer) are materialized once, then variants one by one."""

import dagster as dg
import pytest
import yaml

from plasma_pipeline.defs import build_defs
from plasma_pipeline.defs import mix_search_assets as msa
from plasma_pipeline.mix_search.cli import run_search
from plasma_pipeline.recipe import load_recipe
from plasma_pipeline_tests.conftest import tiny_recipe_dict

pytestmark = pytest.mark.slow

SEARCH = {
    "variants": {"custom": {"wiki": 0.3, "dialog": 0.7}},
    "sample": {"n": 1, "seed": 1, "concentration": 4.0},
    "tokens_per_variant": 2048, "batch_size": 4, "warmup": 1, "val_max_rows": 4,
    "lightgbm_min_variants": 3, "candidates": 500, "top_k": 10,
}


def _write(path, custom=None):
    raw = tiny_recipe_dict(path.parent / "store")
    for s in ("recipes", "code", "literature"):
        del raw["sources"][s]
        raw["mix"]["weights"].pop(s)
    raw["classifiers"]["quality"]["positive_sources"] = ["wiki"]
    raw["store"]["processes"] = 1  # no worker pools to start: the inputs are small
    search = yaml.safe_load(yaml.safe_dump(SEARCH))
    if custom:
        search["variants"]["custom"] = custom
    raw["mix_search"] = search
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    return recipe, build_defs(recipe)


@pytest.fixture(scope="module")
def search(tmp_path_factory, offline_sources):
    path = tmp_path_factory.mktemp("mix_search") / "recipe.yaml"
    recipe, defs = _write(path)
    with dg.instance_for_test() as instance:
        yield {"path": path, "recipe": recipe, "defs": defs, "instance": instance}


def _count(instance, key, partition):
    return len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=100).records)


def _not_fresh(instance, defs):
    return {k: v for k, v in msa.statuses(instance, defs).items() if v != "FRESH"}


def test_partitions_materialize_independently(search):
    inst, defs = search["instance"], search["defs"]
    assert set(msa.variants_of(search["recipe"])) == {"recipe", "custom", "sample-00"}
    run_search(search["recipe"], defs, inst, only=["custom"])
    status = msa.statuses(inst, defs)
    assert status["mix_search/proxy_model[custom]"] == "FRESH"
    assert status["mix_search/proxy_model[recipe]"] == status["mix_search/proxy_shards[recipe]"] == "MISSING"
    out = run_search(search["recipe"], defs, inst, only=["recipe"])
    assert out == {"failed": [], "ran": ["recipe"]}
    assert _count(inst, msa.MODEL, "custom") == 1  # the other variant did not run again
    assert _not_fresh(inst, defs) == {"mix_search/proxy_shards[sample-00]": "MISSING",
                                      "mix_search/proxy_model[sample-00]": "MISSING"}
    md = inst.get_latest_materialization_event(msa.REPORT).asset_materialization.metadata
    assert md["variants_done"].value == 2 and "| custom |" in md["report"].value
    # Each proxy is scored on the one val set, whose version its manifest records.
    store = search["path"].parent / "store"
    val = (store / "mix_search" / "val_set" / "CURRENT").read_text().strip()
    for p in ("custom", "recipe"):
        folder = store / "mix_search" / "proxy_model" / p
        manifest = folder / "versions" / (folder / "CURRENT").read_text().strip() / "manifest.json"
        assert yaml.safe_load(manifest.read_text())["metadata"]["val_set_version"] == val


def test_editing_one_variant_makes_only_its_partition_then_the_report_stale(search):
    inst = search["instance"]
    recipe, defs = _write(search["path"], custom={"wiki": 0.6, "dialog": 0.4})
    msa.observe_variants(inst, defs)
    assert _not_fresh(inst, defs) == {"mix_search/proxy_shards[custom]": "STALE",
                                      "mix_search/proxy_shards[sample-00]": "MISSING",
                                      "mix_search/proxy_model[sample-00]": "MISSING"}
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=inst, asset_selection=[msa.SHARDS], partition_key="custom").success
    assert _not_fresh(inst, defs) == {"mix_search/proxy_model[custom]": "STALE",
                                      "mix_search/proxy_shards[sample-00]": "MISSING",
                                      "mix_search/proxy_model[sample-00]": "MISSING"}
    assert job.execute_in_process(instance=inst, asset_selection=[msa.MODEL], partition_key="custom").success
    assert _not_fresh(inst, defs) == {"mix_search/report": "STALE",
                                      "mix_search/proxy_shards[sample-00]": "MISSING",
                                      "mix_search/proxy_model[sample-00]": "MISSING"}
    assert _count(inst, msa.MODEL, "recipe") == 1
    # The last variant, then the report with a regression over all three.
    out = run_search(recipe, defs, inst)
    assert out["ran"] == ["sample-00"] and not _not_fresh(inst, defs)
    md = inst.get_latest_materialization_event(msa.REPORT).asset_materialization.metadata
    assert md["variants_done"].value == 3
    assert set(md["suggested_weights"].value) == {"wiki", "dialog"}
    assert "](data:image/png;base64," in md["report"].value
