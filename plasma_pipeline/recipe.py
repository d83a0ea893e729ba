"""The recipe: one YAML file that declares a whole run, validated at load with errors that name file and field.

`PLASMA_RECIPE` picks the file (default `recipes/default.yaml`). Each stage's config is a dataclass owned by that
stage's module; this loader only maps YAML sections onto them, rejects unknown keys, and checks the
cross-section rules (mix names known sources, weights sane, local paths exist).

`slice_for(asset)` returns exactly the part of the recipe an asset depends on; the Dagster layer hashes it with the
stage's implementation version into the asset's code_version, so editing the mix marks only the mix and what is
downstream as changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plasma_pipeline.shards import StoreConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO_ROOT / "recipes" / "default.yaml"


class RecipeError(ValueError):
    """The recipe is invalid; the message names the file and the field."""


def recipe_path() -> Path:
    p = os.environ.get("PLASMA_RECIPE")
    if not p:
        return DEFAULT_RECIPE
    path = Path(p)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path


def _stage_classes() -> dict[str, type]:
    # Imported here so that importing the recipe module stays cheap and free of import cycles.
    from plasma_pipeline.classify import QualityClassifierConfig, ScoreConfig, ToxicityClassifierConfig
    from plasma_pipeline.clean import CleanConfig
    from plasma_pipeline.dedup import DedupConfig
    from plasma_pipeline.evaluate import EvalConfig
    from plasma_pipeline.instruct import InstructionsConfig, SFTShardConfig
    from plasma_pipeline.mix import MixConfig
    from plasma_pipeline.tokenizer import TokenizerConfig

    return {
        "clean": CleanConfig,
        "score": ScoreConfig,
        "quality": QualityClassifierConfig,
        "toxicity": ToxicityClassifierConfig,
        "dedup": DedupConfig,
        "tokenizer": TokenizerConfig,
        "mix": MixConfig,
        "instructions": InstructionsConfig,
        "sft_shards": SFTShardConfig,
        "evaluation": EvalConfig,
    }


@dataclass
class TrainSection:
    """Settings handed to the trainer (plasma_pipeline.train.TrainConfig) for one run; validated by the trainer."""

    # Named model shape (toy, plasma-1.0-235m, 1.2b, 2.4b, 7b) — shared by pretrain and SFT.
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Source:
    name: str
    # Collector kind and its own fields (see plasma_pipeline.collect).
    collect: Any
    clean: Any
    score: Any
    # Where this source's raw slice lives in the YAML, for code_version hashing.
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    path: Path
    name: str
    raw: dict[str, Any]
    store: StoreConfig
    sources: dict[str, Source]
    quality: Any
    toxicity: Any
    dedup: Any
    tokenizer: Any
    mix: Any
    model: dict[str, Any]
    pretrain: dict[str, Any]
    instructions: Any
    sft_shards: Any
    sft: dict[str, Any]
    evaluation: Any

    def slice_for(self, section: str, source: str | None = None) -> Any:
        """The YAML slice an asset depends on, as plain data."""
        if source is not None:
            src = self.raw["sources"][source]
            if section == "collect":
                return {k: v for k, v in src.items() if k not in ("clean", "score")}
            return src.get(section, {})
        if section in ("pretrain", "sft"):
            # Training depends on the model shape as well as its own settings.
            return {"model": self.raw.get("model", {}), section: self.raw.get(section, {})}
        if section in ("quality", "toxicity"):
            return self.raw.get("classifiers", {}).get(section, {})
        return self.raw.get(section, {})

    def fingerprint(self, section: str, source: str | None = None, impl_version: str = "1") -> str:
        blob = json.dumps({"impl": impl_version, "slice": self.slice_for(section, source)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _build(cls: type, data: Any, where: str, file: Path) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrapping the class's own ValueErrors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{file}: {where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in names:
            raise RecipeError(f"{file}: {where}.{key}: unknown key (allowed: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints.get(key), value, f"{where}.{key}", file)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{file}: {where}: {e}") from e


def _coerce(hint: Any, value: Any, where: str, file: Path) -> Any:
    """Nested dataclasses become objects; everything else is passed as YAML gave it."""
    if hint is not None and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value, where, file)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _build(arg, value, where, file)
    return value


TOP_LEVEL = {
    "name", "description", "store", "sources", "classifiers", "dedup", "tokenizer", "mix", "model", "pretrain",
    "instructions", "sft_shards", "sft", "evaluation",
}


def load_recipe(path: str | Path | None = None, check_paths: bool = True) -> Recipe:
    from plasma_pipeline.collect import build_source_config, validate_source

    file = Path(path) if path is not None else recipe_path()
    if not file.exists():
        raise RecipeError(f"recipe file {file} does not exist (set PLASMA_RECIPE to a recipe YAML)")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{file}: not valid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise RecipeError(f"{file}: not UTF-8 text: {e}") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"{file}: the recipe must be a mapping at the top level")
    for key in raw:
        if key not in TOP_LEVEL:
            raise RecipeError(f"{file}: {key}: unknown key (allowed: {', '.join(sorted(TOP_LEVEL))})")
    C = _stage_classes()

    sources_raw = raw.get("sources")
    if not sources_raw or not isinstance(sources_raw, dict):
        raise RecipeError(f"{file}: sources: at least one source is required")
    sources: dict[str, Source] = {}
    for name, spec in sources_raw.items():
        where = f"sources.{name}"
        if not isinstance(spec, dict):
            raise RecipeError(f"{file}: {where}: expected a mapping")
        if not str(name).replace("_", "").replace("-", "").isalnum():
            raise RecipeError(f"{file}: {where}: source names may use letters, digits, '-' and '_' only")
        collect_spec = {k: v for k, v in spec.items() if k not in ("clean", "score")}
        try:
            collect_cfg = build_source_config(collect_spec)
        except (ValueError, TypeError, KeyError) as e:
            raise RecipeError(f"{file}: {where}: {e}") from e
        if check_paths:
            try:
                validate_source(name, collect_cfg)
            except (ValueError, FileNotFoundError) as e:
                raise RecipeError(f"{file}: {where}: {e}") from e
        sources[name] = Source(
            name=name,
            collect=collect_cfg,
            clean=_build(C["clean"], spec.get("clean"), f"{where}.clean", file),
            score=_build(C["score"], spec.get("score"), f"{where}.score", file),
            raw=spec,
        )

    classifiers = raw.get("classifiers") or {}
    for key in classifiers:
        if key not in ("quality", "toxicity"):
            raise RecipeError(f"{file}: classifiers.{key}: unknown key (allowed: quality, toxicity)")
    quality = _build(C["quality"], classifiers.get("quality"), "classifiers.quality", file)
    for fld in ("positive_sources", "negative_sources"):
        for s in getattr(quality, fld, []) or []:
            if s not in sources:
                raise RecipeError(f"{file}: classifiers.quality.{fld}: unknown source {s!r} (sources: {', '.join(sources)})")

    mix_raw = raw.get("mix") or {}
    weights = mix_raw.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise RecipeError(f"{file}: mix.weights: a mapping of source name → weight is required")
    for s, w in weights.items():
        if s not in sources:
            raise RecipeError(f"{file}: mix.weights.{s}: unknown source {s!r} (sources: {', '.join(sources)})")
        if not isinstance(w, (int, float)) or isinstance(w, bool):
            raise RecipeError(f"{file}: mix.weights.{s}: weight must be a number, got {w!r}")
        if w < 0:
            raise RecipeError(f"{file}: mix.weights.{s}: weight must be >= 0, got {w}")
    if sum(weights.values()) <= 0:
        raise RecipeError(f"{file}: mix.weights: all weights are zero; at least one source needs a positive weight")

    for sec in ("model", "pretrain", "sft"):
        if sec in raw and not isinstance(raw[sec], dict):
            raise RecipeError(f"{file}: {sec}: expected a mapping")
    _check_train_keys(raw, file)

    return Recipe(
        path=file,
        name=str(raw.get("name", file.stem)),
        raw=raw,
        store=_build(StoreConfig, raw.get("store"), "store", file),
        sources=sources,
        quality=quality,
        toxicity=_build(C["toxicity"], classifiers.get("toxicity"), "classifiers.toxicity", file),
        dedup=_build(C["dedup"], raw.get("dedup"), "dedup", file),
        tokenizer=_build(C["tokenizer"], raw.get("tokenizer"), "tokenizer", file),
        mix=_build(C["mix"], mix_raw, "mix", file),
        model=dict(raw.get("model") or {}),
        pretrain=dict(raw.get("pretrain") or {}),
        instructions=_build(C["instructions"], raw.get("instructions"), "instructions", file),
        sft_shards=_build(C["sft_shards"], raw.get("sft_shards"), "sft_shards", file),
        sft=dict(raw.get("sft") or {}),
        evaluation=_build(C["evaluation"], raw.get("evaluation"), "evaluation", file),
    )


def _check_train_keys(raw: dict, file: Path) -> None:
    """Reject unknown trainer keys at load time rather than minutes later inside the training subprocess."""
    from plasma_pipeline.train.config import TrainConfig, MODEL_CONFIGS, ModelConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # Set by the pipeline itself, not by the recipe.
    managed = {"data_dir", "out_dir", "init_from", "model", "model_overrides"}
    for sec in ("pretrain", "sft"):
        for key in raw.get(sec) or {}:
            if key not in train_fields or key in managed:
                allowed = sorted(train_fields - managed)
                raise RecipeError(f"{file}: {sec}.{key}: unknown key (allowed: {', '.join(allowed)})")
    model = raw.get("model") or {}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for key in model:
        if key != "name" and key not in model_fields:
            raise RecipeError(f"{file}: model.{key}: unknown key (allowed: name, {', '.join(sorted(model_fields))})")
    name = model.get("name", "toy")
    if name not in MODEL_CONFIGS:
        raise RecipeError(f"{file}: model.name: unknown model {name!r} (known: {', '.join(MODEL_CONFIGS)})")
