from pathlib import Path

import pytest
import yaml

from plasma_pipeline.recipe import REPO_ROOT, RecipeError, load_recipe

DEFAULT = REPO_ROOT / "recipes" / "default.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT.read_text())
    mutate(raw)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_default_and_plasma_recipes_load():
    r = load_recipe(DEFAULT)
    assert set(r.sources) == {"wiki", "recipes", "code", "dialog", "literature"}
    hub = load_recipe(REPO_ROOT / "recipes" / "plasma-1.1.yaml")
    assert {s: type(v.collect).__name__ for s, v in hub.sources.items()} == {
        s: "HFSourceConfig" for s in ("fineweb_edu", "wikipedia", "stackexchange", "code", "arxiv")
    }
    w = hub.mix.weights
    assert [w[s] for s in ("fineweb_edu", "wikipedia", "stackexchange", "code", "arxiv")] == [45, 15, 10, 15, 5]


def test_plasma_recipe_env_selects_the_file(monkeypatch):
    monkeypatch.setenv("PLASMA_RECIPE", "recipes/plasma-1.1.yaml")
    assert load_recipe().name == "plasma-1.1"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.update(colour="blue"), r"colour: unknown key"),
        (lambda r: r["sources"]["wiki"]["clean"].update(min_wordz=3), r"sources\.wiki\.clean\.min_wordz: unknown key"),
        (lambda r: r["dedup"].update(bandz=3), r"dedup\.bandz: unknown key"),
        (lambda r: r["pretrain"].update(stepz=3), r"pretrain\.stepz: unknown key"),
        (lambda r: r["mix"]["weights"].update(reddit=0.3), r"mix\.weights\.reddit: unknown source 'reddit'"),
        (lambda r: r["mix"]["weights"].update(wiki=-0.1), r"mix\.weights\.wiki: weight must be >= 0"),
        (lambda r: r["mix"].update(weights={k: 0 for k in r["mix"]["weights"]}), r"mix\.weights: all weights are zero"),
        (
            lambda r: r["sources"].update(local={"kind": "local", "paths": ["/nonexistent/dir/*.jsonl"], "clean": {}}),
            r"sources\.local: .*nonexistent",
        ),
        (lambda r: r["classifiers"]["quality"].update(positive_sources=["nope"]), r"classifiers\.quality\.positive_sources: unknown source 'nope'"),
        (lambda r: r["model"].update(name="13b"), r"model\.name: unknown model '13b'"),
    ],
)
def test_bad_recipes_name_file_and_field(tmp_path, mutate, field):
    path = _write(tmp_path, mutate)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert str(path) in msg
    import re

    assert re.search(field, msg), msg


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("sources: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)
    p.write_bytes(b"name: \xff\xfe broken\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(p)


def test_code_version_slices_are_independent(tmp_path):
    from plasma_pipeline.defs.common import code_version

    base = load_recipe(DEFAULT)
    changed = load_recipe(_write(tmp_path, lambda r: r["sources"]["wiki"]["clean"].update(min_words=33)))
    differs = {
        (sec, src)
        for sec in ("collect", "clean", "score")
        for src in base.sources
        if code_version(base, sec, src) != code_version(changed, sec, src)
    }
    assert differs == {("clean", "wiki")}
    for sec in ("dedup", "tokenizer", "mix", "pretrain", "sft"):
        assert code_version(base, sec) == code_version(changed, sec)
