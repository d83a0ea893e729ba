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
        assert clean.metadata["rows"].value + clean.metadata["dropped"].value == raw.metadata["rows"].value
        assert clean.metadata["drops"].value.startswith("| rule | documents | characters |")
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


def test_manifest_check_rehashes_the_stored_version_on_demand(defs_and_store):
    defs, keys, store = defs_and_store
    key = dg.AssetKey(["raw", "dialog"])
    job = defs.resolve_job_def("verify_store")

    def evaluations(result):
        return [e.event_specific_data for e in result.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.asset_key == key]
    with dg.instance_for_test() as instance:
        assert _materialize(defs, [key], instance).success
        assert [e.passed for e in evaluations(job.execute_in_process(instance=instance))] == [True]
        current = (store / "raw" / "dialog" / "CURRENT").read_text().strip()
        shard = sorted((store / "raw" / "dialog" / "versions" / current).rglob("*.parquet"))[0]
        data = bytearray(shard.read_bytes())
        data[len(data) // 3] ^= 0x01  # one flipped bit, same size
        shard.write_bytes(bytes(data))
        evals = evaluations(job.execute_in_process(instance=instance, raise_on_error=False))
        assert [e.passed for e in evals] == [False]
        assert shard.name in evals[0].description and "manifest hash" in evals[0].description


def test_each_step_reads_the_parent_version_dagster_recorded_and_lists_it(defs_and_store):
    defs, keys, store = defs_and_store
    raw_key, clean_key = dg.AssetKey(["raw", "dialog"]), dg.AssetKey(["clean", "dialog"])
    with dg.instance_for_test() as instance:
        assert _materialize(defs, [raw_key], instance).success
        recorded = (store / "raw" / "dialog" / "CURRENT").read_text().strip()
        # Someone else publishes raw/dialog behind Dagster's back: CURRENT moves, the recorded version does not.
        from plasma_pipeline.shards import ShardStore, StoreConfig
        import pyarrow as pa

        side = ShardStore(StoreConfig(keep_versions=5), root=store)
        with side.writer("raw/dialog") as w:
            w.write(pa.table({"id": ["x"], "text": ["a side publish"], "source": ["dialog"]}))
            w.publish()
        assert (store / "raw" / "dialog" / "CURRENT").read_text().strip() != recorded
        assert _materialize(defs, [clean_key], instance).success
        md = instance.get_latest_materialization_event(clean_key).asset_materialization.metadata
        assert md["input_versions"].value == {"raw/dialog": recorded}
        clean_id = md["version"].value
        manifest = side.version("clean/dialog", clean_id).manifest
        assert manifest["inputs"] == {"raw/dialog": recorded}
