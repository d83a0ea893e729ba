"""The `mix_search` section is validated at load with the rest of the recipe; `--apply` writes a new file only."""

import re

import pytest
import yaml

from plasma_pipeline.mix_search.cli import apply_suggestion
from plasma_pipeline.recipe import REPO_ROOT, RecipeError, load_recipe

DEFAULT = REPO_ROOT / "recipes" / "default.yaml"


def _recipe(tmp_path, section) -> "Path":
    raw = yaml.safe_load(DEFAULT.read_text())
    raw["mix_search"] = section
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_absent_section_means_no_search_and_empty_means_defaults(tmp_path):
    assert load_recipe(DEFAULT).mix_search is None
    cfg = load_recipe(_recipe(tmp_path, None)).mix_search
    assert cfg.sample.n == 9 and cfg.objective.kind == "mean_bpb" and cfg.model == {"name": "toy"}


@pytest.mark.parametrize("section, field", [
    ({"sample": {"concentration": 0}}, r"mix_search\.sample\.concentration: must be a finite number > 0"),
    ({"sample": {"n": "8"}}, r"mix_search\.sample\.n: Input should be a valid integer"),
    ({"variants": {"more_code": {"code": 2, "reddit": 1}}}, r"mix_search\.variants\.more_code\.reddit: unknown source"),
    ({"variants": {"neg": {"code": -1}}}, r"mix_search\.variants\.neg\.code: weight must be a finite number >= 0"),
    ({"variants": {"bad name": {"code": 1}}}, r"mix_search\.variants: 'bad name': variant names use"),
    ({"objective": {"kind": "targets", "targets": {"klingon": 1}}}, r"mix_search\.objective\.targets\.klingon: unknown source"),
    ({"objective": {"kind": "best"}}, r"mix_search\.objective\.kind: Input should be 'mean_bpb' or 'targets'"),
    ({"model": {"name": "toy", "dim": 66}}, r"mix_search\.model\.n_heads: bad head layout"),
    ({"model": {"name": "huge"}}, r"mix_search\.model\.name: unknown model 'huge'"),
    ({"model": {"vocab_size": 9}}, r"mix_search\.model\.vocab_size: set by the pipeline"),
    ({"tokens_per_variant": 0}, r"mix_search\.tokens_per_variant: must be >= 1"),
    ({"top_k": 10, "candidates": 5}, r"mix_search\.top_k: must be <= candidates"),
    ({"batchsize": 4}, r"mix_search\.batchsize: unknown key \(allowed: .*batch_size"),
])
def test_bad_sections_name_the_file_and_field(tmp_path, section, field):
    path = _recipe(tmp_path, section)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(path) in str(e.value)
    assert re.search(field, str(e.value)), str(e.value)


def test_apply_writes_a_new_valid_recipe_and_never_the_current_one(tmp_path):
    current = _recipe(tmp_path, {})
    before = current.read_bytes()
    weights = {"wiki": 0.5, "recipes": 0.1, "code": 0.3, "dialog": 0.02, "literature": 0.08}
    with pytest.raises(ValueError, match="that is the current recipe"):
        apply_suggestion(current, weights, current)
    new = apply_suggestion(current, weights, tmp_path / "new.yaml", note="from a test")
    assert current.read_bytes() == before
    r = load_recipe(new)
    assert r.mix.weights == weights and r.mix.total_tokens == load_recipe(current).mix.total_tokens
    assert new.read_text().startswith("# Written by `plasma mix-search --apply`")
    with pytest.raises(ValueError, match="exists"):
        apply_suggestion(current, weights, new)
    assert apply_suggestion(current, {**weights, "code": 0.4}, new, force=True) == new
