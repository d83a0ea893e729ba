"""What a practitioner sees: per-kind metadata, the stale plan with reasons, selection syntax, versions and lineage."""

import base64
import io

import dagster as dg
import pytest
import yaml

from plasma_pipeline.defs import build_defs
from plasma_pipeline.defs.common import GROUP_NAMES, _to_metadata
from plasma_pipeline.defs.metadata import INLINE_MD_CHARS, drop_rules, drops_markdown, embed_images
from plasma_pipeline.defs.stale import format_plan, keys_from_strings, stale_plan
from plasma_pipeline.recipe import load_recipe

RAW, CLEAN = dg.AssetKey(["raw", "dialog"]), dg.AssetKey(["clean", "dialog"])


def test_drop_rules_are_the_non_zero_ones_largest_first_with_characters():
    stats = {"kept": 5, "dropped/lang": 3, "dropped/short": 7, "dropped/toxic": 0, "chars_dropped/short": 120,
             "chars_dropped/lang": 900, "chars_removed/c4_javascript": 40, "docs_in": 15}
    assert drop_rules(stats) == [("short", 7, 120), ("lang", 3, 900), ("c4_javascript", 0, 40)]
    many = {f"dropped/rule{i:02d}": 100 - i for i in range(40)}
    md = drops_markdown(drop_rules(many))
    assert len(md) < INLINE_MD_CHARS  # the UI shows it inline, not behind "Show Markdown"
    assert md.splitlines()[2].startswith("| rule00 | 100 |") and "30 more rules" in md


def test_zero_and_empty_stage_metadata_is_left_out_of_the_plots():
    assert _to_metadata(0) is None and _to_metadata(0.0) is None and _to_metadata("") is None
    assert _to_metadata(3).value == 3 and _to_metadata(False).value is False


def test_report_images_are_inlined_as_data_uris(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.figure(figsize=(1, 1)).savefig(buf, format="png")
    (tmp_path / "loss.png").write_bytes(buf.getvalue())
    md = embed_images("a\n![loss curves](loss.png)\n![gone](missing.png)", tmp_path)
    uri = md.split("(data:image/png;base64,")[1].split(")")[0]
    assert base64.b64decode(uri) == buf.getvalue() and "![gone](missing.png)" in md


@pytest.fixture
def materialized(tiny_recipe):
    defs = build_defs(load_recipe(tiny_recipe))
    with dg.instance_for_test() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance, asset_selection=[RAW, CLEAN]).success
        yield defs, instance, tiny_recipe


def test_data_pages_show_rows_drops_and_a_readable_sample(materialized):
    defs, instance, _ = materialized
    md = instance.get_latest_materialization_event(CLEAN).asset_materialization.metadata
    assert {"rows", "bytes", "drops", "kept_share", "sample", "inputs"} <= set(md)
    assert not {"shards", "dropped_total"} & set(md) and "no counters" not in str(md)
    png = base64.b64decode(md["drops_plot"].value.split("base64,")[1].rstrip(")"))
    assert png.startswith(b"\x89PNG")
    assert 0 < md["kept_share"].value < 1
    sample = md["sample"].value.splitlines()
    assert sample[0] == "| id | text |" and len(sample) >= 3 and len(sample[2]) > 60


def test_status_names_the_changed_slice_and_everything_downstream(materialized):
    defs, instance, recipe = materialized
    raw = yaml.safe_load(recipe.read_text())
    raw["sources"]["dialog"]["clean"]["min_words"] = 1
    recipe.write_text(yaml.safe_dump(raw))
    plan = {i["key"].to_user_string(): i for i in stale_plan(instance, build_defs(load_recipe(recipe)))}
    assert plan["clean/dialog"]["state"] == "stale"
    assert "recipe slice `sources.dialog.clean` changed" in plan["clean/dialog"]["why"]
    assert plan["scored/dialog"]["state"] == "missing" and "clean/dialog" in plan["scored/dialog"]["why"]
    assert {"deduped", "base_model", "chat_model", "evaluation"} <= set(plan) and "raw/dialog" not in plan
    lines = format_plan(list(plan.values()), include_training=False)
    assert any(line.startswith("stale") and "clean/dialog" in line for line in lines)
    assert any("base_model" in line and "--with-training" in line for line in lines)


def test_select_takes_dagster_selection_syntax(materialized):
    defs, _, _ = materialized
    down = [k.to_user_string() for k in keys_from_strings(["raw/dialog+"], defs)]
    assert down == ["raw/dialog", "clean/dialog"]
    assert "evaluation" in [k.to_user_string() for k in keys_from_strings(["raw/dialog++++++++++++"], defs)]
    assert [k.to_user_string() for k in keys_from_strings(["group:05_dedup"], defs)] == ["deduped"]
    with pytest.raises(ValueError, match="nosuch"):
        keys_from_strings(["nosuch"], defs)


def test_groups_sort_in_pipeline_order():
    assert list(GROUP_NAMES) == sorted(GROUP_NAMES) and GROUP_NAMES[0] == "01_collect" and len(GROUP_NAMES) == 12


def test_versions_and_lineage(materialized):
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.versions_cli import lineage_lines, versions_table

    defs, instance, recipe = materialized
    store = store_for(load_recipe(recipe))
    table = versions_table(store, "clean/dialog")
    clean_id = store.current("clean/dialog").id
    raw_id = store.current("raw/dialog").id
    assert table[0].split()[:2] == ["version", "created"] and clean_id in table[1] and "current" in table[1]
    assert f"raw/dialog@{raw_id[:8]}" in table[1]
    lines = lineage_lines(store, "clean/dialog", clean_id, instance, defs.resolve_asset_graph())
    assert lines[0].startswith(f"clean/dialog@{clean_id}") and "recipe slice sources.dialog.clean @ " in lines[0]
    assert lines[1].startswith(f"└─ raw/dialog@{raw_id}") and "a raw source" in lines[1]


def test_a_big_model_is_not_scored_on_a_cpu_only_step(tmp_path):
    import json

    import torch

    from plasma_pipeline.defs.metadata import _too_big_for_this_host
    from plasma_pipeline.train.config import ModelConfig

    def model_dir(name, **shape):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(ModelConfig(name=name, **shape).to_dict()))
        return d

    big = model_dir("big", vocab_size=32000, dim=2048, n_layers=24, n_heads=16, n_kv_heads=8, ffn_dim=8192)
    small = model_dir("small", vocab_size=700, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    assert _too_big_for_this_host(big) == (not torch.cuda.is_available())
    assert not _too_big_for_this_host(small)


def test_materialize_shows_a_bar_of_assets_done(tiny_recipe, monkeypatch, capsys):
    from plasma_pipeline.defs.stale import run_selection

    monkeypatch.setenv("PLASMA_PROGRESS", "1")
    defs = build_defs(load_recipe(tiny_recipe))
    with dg.instance_for_test() as instance:
        run_selection(defs.resolve_implicit_global_asset_job_def(), instance, [RAW, CLEAN])
    bar = capsys.readouterr().err
    assert "assets:" in bar and bar.rstrip().endswith("]") and "100%" in bar and "2.00/2.00" in bar  # counted from the run's own materialization events
