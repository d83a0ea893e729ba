"""Stages 1-2 materialized in-process through Dagster on a small recipe over the real offline corpora."""

import dagster as dg
import pytest

from plasma_pipeline.defs import build_defs
from plasma_pipeline.recipe import load_recipe
from plasma_pipeline.shards import CorruptShardError

SOURCES = ("wiki", "dialog")


@pytest.fixture
def defs_and_store(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    defs = build_defs(recipe)
    keys = [dg.AssetKey([stage, s]) for s in SOURCES for stage in ("raw", "clean")]
    return defs, keys, tiny_recipe.parent / "store"


def _materialize(defs, keys, instance):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)


def test_raw_and_clean_materialize_in_process(defs_and_store):
    defs, keys, store = defs_and_store
    with dg.instance_for_test() as instance:
        result = _materialize(defs, keys, instance)
        assert result.success
        for key in keys:
            ev = instance.get_latest_materialization_event(key)
            md = ev.asset_materialization.metadata
            current = (store / key.to_user_string() / "CURRENT").read_text().strip()
            assert ev.asset_materialization.tags["dagster/data_version"] == current
            assert md["rows"].value > 0
            assert md["version"].value == current
        clean = instance.get_latest_materialization_event(dg.AssetKey(["clean", "wiki"])).asset_materialization
        raw = instance.get_latest_materialization_event(dg.AssetKey(["raw", "wiki"])).asset_materialization
        # French summaries are in raw/wiki and language ID drops them; every drop is counted under a rule.
        assert clean.metadata["rows"].value < raw.metadata["rows"].value
        assert clean.metadata["rows"].value + clean.metadata["dropped_total"].value == raw.metadata["rows"].value
        assert "dropped/lang" in clean.metadata["counters"].value
        checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert len(checks) == len(keys) and all(e.event_specific_data.passed for e in checks)

        # The same inputs and code give byte-identical shards: the data version does not move.
        before = (store / "clean" / "wiki" / "CURRENT").read_text()
        assert _materialize(defs, [dg.AssetKey(["clean", "wiki"])], instance).success
        assert (store / "clean" / "wiki" / "CURRENT").read_text() == before


def test_a_corrupt_raw_shard_fails_clean_with_the_shard_named(defs_and_store):
    defs, keys, store = defs_and_store
    with dg.instance_for_test() as instance:
        assert _materialize(defs, [dg.AssetKey(["raw", "dialog"])], instance).success
        current = (store / "raw" / "dialog" / "CURRENT").read_text().strip()
        shard = sorted((store / "raw" / "dialog" / "versions" / current).rglob("*.parquet"))[0]
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])  # a truncated file, as a killed copy would leave
        result = _materialize(defs, [dg.AssetKey(["clean", "dialog"])], instance)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        err = failure.event_specific_data.error
        text = err.message + "".join((c.message for c in [err.cause] if c))
        assert shard.name in text and ("CorruptShardError" in text or CorruptShardError.__name__ in err.cls_name)
        # Nothing was published for clean/dialog.
        assert not (store / "clean" / "dialog" / "CURRENT").exists()
