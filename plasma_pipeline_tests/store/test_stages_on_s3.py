"""The data stages of the tiny recipe with `store.root: s3://...`: the same stage code reads and writes through the
same store API, against the loopback S3 server."""

import dagster as dg
import pytest
import yaml

from plasma_pipeline.defs import build_defs
from plasma_pipeline.recipe import load_recipe
from plasma_pipeline.shards import ShardStore, StoreConfig
from plasma_pipeline_tests.conftest import tiny_recipe_dict

pytestmark = pytest.mark.slow

DATA_STAGES = ["quality_classifier", "toxicity_classifier", "deduped", "tokenizer", "pretrain_shards"]


def test_the_data_stages_of_the_tiny_recipe_run_on_an_s3_store(s3_root, tmp_path, offline_sources):
    raw = tiny_recipe_dict(tmp_path / "unused")
    raw["store"]["root"] = s3_root
    raw["store"]["lease_ttl_s"] = 10
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    defs = build_defs(recipe)
    keys = [dg.AssetKey([stage, s]) for s in recipe.sources for stage in ("raw", "clean", "scored")]
    keys += [dg.AssetKey(k) for k in DATA_STAGES]
    with dg.instance_for_test() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
        checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert len(checks) == len(keys) and all(e.event_specific_data.passed for e in checks)
        # A reader elsewhere (empty cache) finds each data version Dagster recorded, stored on S3 and intact.
        store = ShardStore(StoreConfig(cache_dir=str(tmp_path / "reader")), root=s3_root)
        for key in keys:
            ev = instance.get_latest_materialization_event(key)
            asset = key.to_user_string()
            assert store.remote.get(f"{store.rel(asset)}/CURRENT").decode().strip() == \
                ev.asset_materialization.tags["dagster/data_version"]
        pretrain = store.current("pretrain_shards")
        pretrain.verify()
        assert pretrain.rows > 0 and pretrain.inputs.keys() == {"deduped", "tokenizer"}
        assert not (tmp_path / "unused").exists()  # nothing went to a local store
