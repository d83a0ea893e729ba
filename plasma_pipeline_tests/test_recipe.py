import re
from pathlib import Path

import pytest
import yaml

from plasma_pipeline.recipe import REPO_ROOT, RecipeError, load_recipe
from plasma_pipeline_tests.conftest import tiny_recipe_dict

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
            r"sources\.local\.paths: glob '/nonexistent/dir/\*\.jsonl' matches no file",
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


def _write_dict(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        # Types the YAML got wrong: caught at load, not minutes later inside the trainer or a stage.
        (lambda r: r["pretrain"].update(steps="many"), "pretrain.steps", r"Input should be a valid integer, got 'many'"),
        (lambda r: r["sft"].update(lr="fast"), "sft.lr", r"Input should be a valid number, got 'fast'"),
        # A quoted number is a string: rejected, naming the field (never a '<' comparison crash in StoreConfig).
        (lambda r: r["store"].update(keep_versions="3"), "store.keep_versions",
         r"Input should be a valid integer, got '3' \(a quoted number is a string in YAML"),
        (lambda r: r["store"].update(keep_versions=0), "store.keep_versions", r"must be >= 1, got 0"),
        (lambda r: r["sources"]["wiki"]["score"].update(min_quality="high"), "sources.wiki.score.min_quality",
         r"Input should be a valid number, got 'high'"),
        (lambda r: r["mix"].update(total_tokens=7.0e5), "mix.total_tokens", r"valid integer, got 700000\.0"),
        (lambda r: r["mix"]["weights"].update(wiki=True), "mix.weights.wiki", r"valid number, got True"),
        # Trainer ranges and choices (TrainConfig's Literal hints and __post_init__).
        (lambda r: r["pretrain"].update(steps=0), "pretrain.steps", r"must be >= 1, got 0"),
        (lambda r: r["sft"].update(batch_size=-2), "sft.batch_size", r"must be >= 1, got -2"),
        (lambda r: r["sft"].update(warmup=-1), "sft.warmup", r"must be >= 0, got -1"),
        (lambda r: r["pretrain"].update(lr=0.0), "pretrain.lr", r"must be a finite number > 0"),
        (lambda r: r["pretrain"].update(keep_last=0), "pretrain.keep_last", r"must be >= 1"),
        (lambda r: r["pretrain"].update(dtype="fp16"), "pretrain.dtype", r"Input should be 'auto', 'bf16', 'fp32'"),
        (lambda r: r["pretrain"].update(speculative_adam="maybe"), "pretrain.speculative_adam",
         r"Input should be 'auto', 'always' or 'never', got 'maybe'"),
        (lambda r: r["sft"].update(engine="gpu"), "sft.engine", r"Input should be 'resident' or 'streaming'"),
        (lambda r: r["sft"].update(device="tpu"), "sft.device", r"expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        (lambda r: r["pretrain"].update(data_dir="/tmp/x"), "pretrain.data_dir", r"set by the pipeline"),
        # Model shape: named shape + overrides through train.config.model_config.
        (lambda r: r.update(model={"name": "toy", "n_heads": 3}), "model.n_heads", r"bad head layout"),
        (lambda r: r["model"].update(n_kv_heads=3), "model.n_kv_heads", r"not divisible by n_kv_heads=3"),
        (lambda r: r["model"].update(dim="128"), "model.dim", r"Input should be a valid integer, got '128'"),
        (lambda r: r["model"].update(dimm=128), "model.dimm", r"unknown key \(allowed: .*n_heads"),
        # Sequence lengths must fit the model (its max_seq_len defaults to mix.seq_len, as in train_config).
        (lambda r: r["sft_shards"].update(seq_len=256), "sft_shards.seq_len",
         r"256 is longer than the model takes \(the model's max_seq_len is 128, taken from mix\.seq_len"),
        (lambda r: r["model"].update(max_seq_len=64), "mix.seq_len", r"128 is longer than the model takes"),
        # Cross-section: classifier sources must be recipe sources.
        (lambda r: r["classifiers"].update(toxicity={"clean_sources": ["wiki", "reddit"]}),
         "classifiers.toxicity.clean_sources", r"unknown source 'reddit' \(sources: .*wiki"),
        # Unknown keys at any depth, through nested dataclasses and lists of them.
        (lambda r: r["classifiers"]["toxicity"].update(bogus=1), "classifiers.toxicity.bogus",
         r"unknown key \(allowed: .*clean_sources"),
        (lambda r: r["classifiers"]["quality"].update(epoch="10"), "classifiers.quality.epoch",
         r"Input should be a valid integer, got '10'"),
        (lambda r: r["sources"]["wiki"]["clean"].update(languages=[False]), "sources.wiki.clean.languages.0",
         r"Input should be a valid string, got False"),  # YAML `[no]` is a bool
        (lambda r: r["classifiers"].update(sentiment={}), "classifiers.sentiment",
         r"unknown key \(allowed: quality, toxicity\)"),
        (lambda r: r["instructions"].update(datasets=[{"name": "chats", "data_files": ["a.jsonl"], "nme": 1}]),
         "instructions.datasets.0.nme", r"unknown key \(allowed: .*messages_field"),
        (lambda r: r["sources"]["wiki"].update(kind="ftp"), "sources.wiki.kind", r"expected one of hf, local, offline"),
        (lambda r: r["sources"]["wiki"].update(langs=["de-de"]), "sources.wiki.langs", r"unknown language 'de-de'"),
        (lambda r: r["sources"]["wiki"].update(max_docs="10"), "sources.wiki.max_docs", r"valid integer, got '10'"),
        (lambda r: r["dedup"].update(bands=3), "dedup.num_perm", r"must equal dedup\.bands \* dedup\.rows"),
        (lambda r: r.pop("mix"), "mix", r"required, but missing"),
        (lambda r: r.update(store=5), "store", r"expected a mapping, got int"),
    ],
)
def test_bad_values_name_file_and_dotted_field(tmp_path, mutate, field, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert re.search(rf"^{re.escape(str(path))}: {re.escape(field)}: .*{message}", msg, re.M), msg
    assert "Traceback" not in msg and "not supported between" not in msg


def test_every_problem_is_reported_once_per_line(tmp_path):
    def mutate(r):
        r["pretrain"].update(steps="many")
        r["sft"].update(lr="fast")
        r["store"].update(keep_versions="3")
        r["mix"]["weights"].update(reddit=0.1)

    path = _write(tmp_path, mutate)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    lines = str(e.value).splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == [
        "mix.weights.reddit", "pretrain.steps", "sft.lr", "store.keep_versions"]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_null_sections_mean_defaults_and_strings_become_lists(tmp_path):
    def mutate(r):
        r.update(instructions=None, evaluation=None)
        r["classifiers"]["toxicity"] = None
        r["sources"]["wiki"]["score"] = None

    r = load_recipe(_write(tmp_path, mutate))
    assert r.instructions.max_per_generator == 5000 and r.evaluation.batch_size == 8
    assert r.sources["wiki"].score.min_quality == 0.0 and r.toxicity.clean_sources == []
    (tmp_path / "docs.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    r = load_recipe(_write(tmp_path, lambda r: r["sources"].update(
        mine={"kind": "local", "paths": str(tmp_path / "docs.jsonl")})))
    assert r.sources["mine"].collect.paths == [str(tmp_path / "docs.jsonl")]


def test_validated_train_sections_build_the_trainer_config(tmp_path):
    from plasma_pipeline.train.config import TrainConfig

    for recipe in (load_recipe(DEFAULT), load_recipe(REPO_ROOT / "recipes" / "plasma-1.1.yaml", check_paths=False),
                   load_recipe(_write_dict(tmp_path, tiny_recipe_dict(tmp_path / "store")))):
        model = dict(recipe.model)
        name = model.pop("name", "toy")
        model.setdefault("vocab_size", recipe.tokenizer.vocab_size)
        model.setdefault("max_seq_len", recipe.mix.seq_len)
        for section in (recipe.pretrain, recipe.sft):
            assert isinstance(section, dict)  # raw YAML settings: the pipeline writes run.json from them
            cfg = TrainConfig.from_dict({**section, "model": name, "model_overrides": model, "data_dir": "d"})
            assert cfg.model_config().max_seq_len >= recipe.sft_shards.seq_len


def test_an_exponent_without_a_dot_is_a_float_and_a_quoted_one_is_refused(tmp_path):
    path = _write(tmp_path, lambda r: r["sft"].update(lr=0.5))
    path.write_text(path.read_text().replace("lr: 0.5", "lr: 3e-4"))
    assert load_recipe(path).sft["lr"] == pytest.approx(3e-4)
    path.write_text(path.read_text().replace("lr: 3e-4", "lr: '3e-4'"))
    with pytest.raises(RecipeError, match=r"sft\.lr: .*a quoted number is a string"):
        load_recipe(path)
