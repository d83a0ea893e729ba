"""Shared fixtures: a tiny recipe over the real offline corpora, with its own store and Dagster instance."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from plasma_pipeline.recipe import REPO_ROOT

SOURCES = REPO_ROOT / "data" / "sources"


def tiny_recipe_dict(store_root: Path) -> dict:
    """The default recipe shrunk to seconds per stage; same sources, same code paths."""
    raw = yaml.safe_load((REPO_ROOT / "recipes" / "default.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["name"] = "tiny"
    raw["store"] = {"root": str(store_root), "keep_versions": 2, "max_rows_per_shard": 150, "processes": 2}
    s = raw["sources"]
    s["wiki"]["max_docs"] = 400
    s["wiki"]["langs"] = ["en-us", "fr-fr"]
    s["recipes"]["max_docs"] = 150
    s["code"]["max_files"] = 40
    s["dialog"]["max_docs"] = 40
    s["literature"]["max_files"] = 2
    raw["tokenizer"] = {"vocab_size": 700, "sample_chars": 300_000, "eval_chars_per_domain": 20_000}
    raw["mix"].update(total_tokens=30_000, seq_len=64, val_fraction=0.05, val_max_tokens_per_domain=2_000)
    raw["model"] = {"name": "toy"}
    raw["pretrain"].update(steps=6, batch_size=4, warmup=2, save_every=3, log_every=1)
    raw["sft_shards"] = {"seq_len": 64}
    raw["sft"].update(steps=4, batch_size=4, warmup=1, save_every=2, log_every=1)
    raw["instructions"] = {"max_per_generator": 60}
    raw["evaluation"] = {"max_new_tokens": 8, "prompts_per_domain": 1, "val_max_rows": 16}
    return raw


def project_instance(tmp: Path) -> dict:
    """A Dagster home with the project's dagster.yaml and a tiny recipe under `tmp`, and the env that selects both."""
    import os

    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tmp / "store")))
    env = {**os.environ, "DAGSTER_HOME": str(home), "PLASMA_RECIPE": str(recipe), "PYTHONUNBUFFERED": "1"}
    return {"home": home, "recipe": recipe, "env": env, "store": tmp / "store"}


@pytest.fixture(scope="session")
def offline_sources() -> Path:
    if not (SOURCES / "site").exists():
        pytest.fail(f"offline corpora missing under {SOURCES}: run `make setup` (scripts/fetch_sources.py)")
    return SOURCES


@pytest.fixture
def tiny_recipe(tmp_path, offline_sources) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path / "store")))
    return p
