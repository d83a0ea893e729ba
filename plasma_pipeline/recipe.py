"""The recipe: one YAML file that declares a whole run, validated at load with errors that name file and field.

`PLASMA_RECIPE` picks the file (default `recipes/default.yaml`). Each stage's config is a stdlib dataclass owned
by that stage's module (stage libraries do not need pydantic). This loader validates the whole file with pydantic
v2 from those dataclasses' type hints: strict types (YAML's "3" is not an int, "high" is not a float), unknown
keys rejected at any depth, and each class's `__post_init__` run. The trainer's `TrainConfig` is validated for
`pretrain:` / `sft:`, and the model shape (`model.name` + overrides) through `train.config.model_config`. Then
the cross-section rules: mix and classifiers name known sources, sequence lengths fit the model, local paths
exist. Every problem found is reported, one line each, as `<file>: <dotted.field>: <message>`.

`slice_for(asset)` returns exactly the part of the recipe an asset depends on; the Dagster layer hashes it with the
stage's implementation version into the asset's code_version, so editing the mix marks only the mix and what is
downstream as changed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import re
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
    from plasma_pipeline.instruct.config import MessagesDatasetConfig
    from plasma_pipeline.mix import MixConfig
    from plasma_pipeline.mix_search.config import MixSearchConfig
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
        "dataset": MessagesDatasetConfig,
        "sft_shards": SFTShardConfig,
        "evaluation": EvalConfig,
        "mix_search": MixSearchConfig,
    }


@dataclass
class TrainSection:
    """Settings handed to the trainer (plasma_pipeline.train.TrainConfig) for one run; validated at load."""

    # Named model shape (toy, plasma-1.0-235m, 1.2b, 2.4b, 5.9b, llama3-8b, 9.3b) — shared by pretrain and SFT.
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
    # `launcher:` of the pretrain / sft sections (plasma_pipeline.launch.LauncherConfig), kept out of `pretrain` /
    # `sft` (the trainer's settings) and out of their code_version: where a run trains does not change the model.
    launchers: dict[str, Any] = field(default_factory=dict)
    # `executor:` (plasma_pipeline.executor.ExecutorConfig): where per-shard work runs; in no code_version (the
    # output does not depend on it)
    executor: Any = None
    mix_search: Any = None  # MixSearchConfig when the recipe has a `mix_search:` section (its assets exist then)

    def slice_for(self, section: str, source: str | None = None) -> Any:
        """The YAML slice an asset depends on, as plain data."""
        if source is not None:
            src = self.raw["sources"][source]
            if section == "collect":
                return {k: v for k, v in src.items() if k not in ("clean", "score")}
            return src.get(section, {})
        if section in ("pretrain", "sft"):
            # Training depends on the model shape as well as its own settings.
            settings = self.raw.get(section, {})
            # Not on where it trains (`launcher`) or on how many GPUs (`gpus`: a run resumes on any count).
            if isinstance(settings, dict) and ("launcher" in settings or "gpus" in settings):
                settings = {k: v for k, v in settings.items() if k not in ("launcher", "gpus")}
            return {"model": self.raw.get("model", {}), section: settings}
        if section in ("quality", "toxicity"):
            return self.raw.get("classifiers", {}).get(section, {})
        return self.raw.get(section, {})

    def fingerprint(self, section: str, source: str | None = None, impl_version: str = "1") -> str:
        blob = json.dumps({"impl": impl_version, "slice": self.slice_for(section, source)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- validation: pydantic over the stage dataclasses ----------------------------------------------------------

# Trainer fields the pipeline sets itself (train_assets.train_config); a recipe giving them is an error.
MANAGED_TRAIN_KEYS = ("data_dir", "out_dir", "init_from", "model", "model_overrides")
# Sections that are mappings; YAML `section:` with nothing after it (None) means "all defaults", as {} does.
_MAPPING_SECTIONS = (
    "store", "sources", "classifiers", "dedup", "tokenizer", "mix", "model", "pretrain", "instructions",
    "sft_shards", "sft", "evaluation", "executor", "mix_search",
)


@functools.cache
def _recipe_schema() -> type:
    """The whole file as one dataclass whose fields are the stage dataclasses (nested: classifiers.quality ...).

    `sources` and `model` are plain mappings here: a source's collector class depends on its kind/corpus and the
    model's fields on its named shape, so both are validated per entry in `load_recipe`."""
    from plasma_pipeline.executor import ExecutorConfig
    from plasma_pipeline.train.config import TrainConfig

    C = _stage_classes()
    classifiers = dataclasses.make_dataclass(
        "classifiers",
        [("quality", C["quality"], field(default_factory=C["quality"])),
         ("toxicity", C["toxicity"], field(default_factory=C["toxicity"]))],
    )

    def section(cls: type) -> tuple[type, Any]:
        return cls, field(default_factory=cls)

    return dataclasses.make_dataclass(
        "recipe",
        [
            ("name", str | None, field(default=None)),
            ("description", str, field(default="")),
            ("store", *section(StoreConfig)),
            ("executor", *section(ExecutorConfig)),
            ("sources", dict[str, dict[str, Any]], field(default_factory=dict)),
            ("classifiers", *section(classifiers)),
            ("dedup", *section(C["dedup"])),
            ("tokenizer", *section(C["tokenizer"])),
            ("mix", C["mix"]),  # required: MixConfig has no default weights
            ("model", dict[str, Any], field(default_factory=dict)),
            ("pretrain", *section(TrainConfig)),
            ("instructions", *section(C["instructions"])),
            ("sft_shards", *section(C["sft_shards"])),
            ("sft", *section(TrainConfig)),
            ("evaluation", *section(C["evaluation"])),
            ("mix_search", C["mix_search"] | None, field(default=None)),
        ],
        kw_only=True,
    )


def _dataclasses_in(tp: Any, seen: set[type]) -> None:
    """Every dataclass reachable from type `tp` through field hints, unions, lists and dicts."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp in seen:
            return
        seen.add(tp)
        for hint in typing.get_type_hints(tp).values():
            _dataclasses_in(hint, seen)
        return
    for arg in typing.get_args(tp):
        _dataclasses_in(arg, seen)


def _accept_mappings(schema: Any) -> None:
    """Let strict dataclass nodes take a mapping (strict mode would demand an instance); fields stay strict."""
    if isinstance(schema, dict):
        if schema.get("type") == "dataclass":
            schema["strict"] = False
        for v in schema.values():
            _accept_mappings(v)
    elif isinstance(schema, list):
        for v in schema:
            _accept_mappings(v)


@functools.cache
def _validator(cls: type):
    """A pydantic validator for dataclass `cls`: strict types, unknown keys forbidden at every nesting level.

    `__pydantic_config__` is how pydantic configures a stdlib dataclass; it is set from here so the stage modules
    stay free of pydantic. Strict mode on a dataclass would also refuse a plain mapping as its input, so the
    dataclass nodes of the generated core schema are relaxed to accept one (their fields stay strict)."""
    import pydantic
    import pydantic_core

    found: set[type] = set()
    _dataclasses_in(cls, found)
    for dc in found:
        dc.__pydantic_config__ = pydantic.ConfigDict(extra="forbid", strict=True)
    schema = copy.deepcopy(pydantic.TypeAdapter(cls).core_schema)
    _accept_mappings(schema)
    return pydantic_core.SchemaValidator(schema)


def _unwrap(tp: Any) -> Any:
    """The dataclass or container inside an Optional / Union hint."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if dataclasses.is_dataclass(a) or typing.get_origin(a) in (list, dict):
                return a
        return args[0] if args else tp
    return tp


def _type_at(root: type, path: tuple) -> Any:
    """The hint at `path` (field names, list indices, dict keys) below dataclass `root`, or None."""
    tp: Any = root
    for seg in path:
        tp = _unwrap(tp)
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp).get(seg) if isinstance(seg, str) else None
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
    return _unwrap(tp)


def _keys(cls: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    if not dataclasses.is_dataclass(cls):
        return []
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_YAML_EXPONENT = re.compile(r"[-+]?\d+[eE][-+]?\d+")


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that reads `3e-4` as a float, as YAML 1.2 and every practitioner do (YAML 1.1 wants a dot)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _number_hint(value: Any) -> str:
    """Why YAML gave a string or a float where a number or an integer was meant."""
    if isinstance(value, str):
        if _YAML_EXPONENT.fullmatch(value.strip()):
            return " (a quoted number is a string in YAML: write 3e-4 without quotes)"
        try:
            float(value)
        except ValueError:
            return ""
        return " (a quoted number is a string in YAML: drop the quotes)"
    if isinstance(value, float) and value.is_integer():
        return f" (write it as an integer: {int(value)})"
    return ""


class _Problems:
    """Collects `<file>: <dotted.field>: <message>` lines; `raise_if_any` turns them into one RecipeError."""

    def __init__(self, file: Path):
        self.file = file
        self.lines: list[str] = []

    def add(self, loc: tuple, message: str) -> None:
        where = ".".join(str(p) for p in loc) or "(top level)"
        self.lines.append(f"{self.file}: {where}: {message}")

    def add_value_error(self, loc: tuple, fields: list[str], message: str) -> None:
        """A stage's own ValueError: its message starts with a field name ("min_quality: must be ...", also
        "dedup.bands must be ..."); fold that field into the dotted location."""
        section = next((p for p in reversed(loc) if isinstance(p, str)), None)
        if section and message.startswith(f"{section}."):
            message = message[len(section) + 1:]
        m = re.match(r"([A-Za-z_]\w*)((?:\.[^\s:.]+)*)(?::\s*|\s+)(.*)", message, re.S)
        if m and m.group(1) in fields:
            sub = tuple(x for x in m.group(2).split(".") if x)
            self.add((*loc, m.group(1), *sub), m.group(3))
        else:
            self.add(loc, message)

    def validate(self, cls: type, data: Any, loc: tuple = (), hidden: dict[type, tuple[str, ...]] | None = None):
        """`cls` built from `data` by pydantic, or None with the problems recorded."""
        import pydantic_core

        try:
            return _validator(cls).validate_python(data)
        except pydantic_core.ValidationError as e:
            for err in e.errors(include_url=False):
                self._add_pydantic(cls, loc, err, hidden or {})
        except TypeError as e:  # a __post_init__ that raised TypeError (pydantic converts only ValueError)
            self.add(loc, str(e))
        return None

    def _add_pydantic(self, cls: type, loc: tuple, err: Any, hidden: dict[type, tuple[str, ...]]) -> None:
        eloc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
        where = (*loc, *eloc)
        if kind in ("unexpected_keyword_argument", "extra_forbidden"):
            parent = _type_at(cls, eloc[:-1])
            allowed = _keys(parent, hidden.get(parent, ()))
            self.add(where, "unknown key" + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""))
        elif kind == "value_error" and "error" in (err.get("ctx") or {}):
            self.add_value_error(where, _keys(_type_at(cls, eloc)), str(err["ctx"]["error"]))
        elif kind.startswith("missing"):
            self.add(where, "required, but missing")
        elif eloc and eloc[-1] == "[key]":
            self.add(where[:-1], f"key {err['msg'].removeprefix('Input ')}, got {_show(value)}")
        else:
            message = err["msg"]
            if kind.startswith("dataclass"):
                message = f"expected a mapping, got {type(value).__name__}"
            else:
                message += f", got {_show(value)}"
                if kind in ("int_type", "float_type", "int_from_float"):
                    message += _number_hint(value)
            self.add(where, message)

    def raise_if_any(self) -> None:
        if self.lines:
            raise RecipeError("\n".join(self.lines))


def _mapping(value: Any) -> Any:
    return {} if value is None else value


def load_recipe(path: str | Path | None = None, check_paths: bool = True) -> Recipe:
    """Load and validate a recipe; RecipeError lists every problem found, each naming the file and the field."""
    from plasma_pipeline.collect import config_class, validate_source
    from plasma_pipeline.train.config import TrainConfig

    file = Path(path) if path is not None else recipe_path()
    if not file.exists():
        raise RecipeError(f"recipe file {file} does not exist (set PLASMA_RECIPE to a recipe YAML)")
    try:
        raw = yaml.load(file.read_text(encoding="utf-8"), Loader=_RecipeLoader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{file}: not valid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise RecipeError(f"{file}: not UTF-8 text: {e}") from e
    except RecursionError:
        raise RecipeError(f"{file}: not valid YAML: nested too deep") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{file}: the recipe must be a mapping at the top level")
    problems = _Problems(file)
    C = _stage_classes()

    # --- structure and types of every section but sources and model ---
    data = {k: (_mapping(v) if k in _MAPPING_SECTIONS else v) for k, v in raw.items()}
    if isinstance(data.get("classifiers"), dict):
        data["classifiers"] = {k: _mapping(v) for k, v in data["classifiers"].items()}
    from plasma_pipeline.launch import LauncherConfig

    launchers: dict[str, Any] = {}
    for sec in ("pretrain", "sft"):
        if isinstance(data.get(sec), dict):
            data[sec] = dict(data[sec])
            launcher = problems.validate(LauncherConfig, _mapping(data[sec].pop("launcher", None)), (sec, "launcher"))
            launchers[sec] = launcher if launcher is not None else LauncherConfig()
            for key in MANAGED_TRAIN_KEYS:
                if key in data[sec]:
                    del data[sec][key]
                    problems.add((sec, key), "unknown key: set by the pipeline, not the recipe "
                                             f"(allowed: {', '.join(sorted(_keys(TrainConfig, MANAGED_TRAIN_KEYS)))})")
    # Chat datasets are mappings in InstructionsConfig (it builds them itself); check each entry's keys and types
    # here so a problem names its index, and leave them out of the section when one has a problem.
    datasets = _at(raw, ("instructions", "datasets"), list, None)
    if datasets:
        before = len(problems.lines)
        for i, spec in enumerate(datasets):
            problems.validate(C["dataset"], _mapping(spec), ("instructions", "datasets", i))
        if len(problems.lines) > before:
            data["instructions"] = {k: v for k, v in data["instructions"].items() if k != "datasets"}
    top = problems.validate(_recipe_schema(), data, hidden={TrainConfig: MANAGED_TRAIN_KEYS})

    # --- sources: collector (class picked by kind / corpus), clean and score ---
    sources_raw = raw.get("sources")
    if sources_raw is None or sources_raw == {}:
        problems.add(("sources",), "at least one source is required")
    if not isinstance(sources_raw, dict):
        sources_raw = {}  # a non-mapping was reported above
    sources: dict[str, Source] = {}
    for name, spec in sources_raw.items():
        loc = ("sources", name)
        if not isinstance(spec, dict):
            continue  # reported above
        if not str(name).replace("_", "").replace("-", "").isalnum():
            problems.add(loc, "source names may use letters, digits, '-' and '_' only")
        collect_spec = {k: v for k, v in spec.items() if k not in ("clean", "score")}
        collect_cfg = None
        try:
            cls = config_class(collect_spec)
        except ValueError as e:
            problems.add_value_error(loc, ["kind", "corpus"], str(e))
        else:
            collect_cfg = problems.validate(cls, collect_spec, loc)
        clean = problems.validate(C["clean"], _mapping(spec.get("clean")), (*loc, "clean"))
        score = problems.validate(C["score"], _mapping(spec.get("score")), (*loc, "score"))
        if collect_cfg is not None and check_paths:
            try:
                validate_source(name, collect_cfg)
            except (ValueError, FileNotFoundError) as e:
                problems.add_value_error(loc, _keys(type(collect_cfg)), str(e).removeprefix(f"source {name!r}: "))
        sources[name] = Source(name=name, collect=collect_cfg, clean=clean, score=score, raw=spec)

    # --- cross-section rules (read from the raw mapping, so they are reported alongside type errors) ---
    if sources_raw:
        known = ", ".join(map(str, sources_raw))
        named = [
            (("classifiers", "quality", "positive_sources"), list),
            (("classifiers", "quality", "negative_sources"), list),
            (("classifiers", "toxicity", "clean_sources"), list),
            (("mix", "weights"), dict),
        ]
        for loc, kind in named:
            for s in _at(raw, loc, kind, None) or ():
                if isinstance(s, str) and s not in sources_raw:
                    where = (*loc, s) if kind is dict else loc
                    problems.add(where, f"unknown source {s!r} (sources: {known})")
    _check_model(raw, problems, C)
    if "mix_search" in raw:
        from plasma_pipeline.mix_search.config import cross_check

        cross_check(_mapping(raw["mix_search"]), [str(s) for s in sources_raw or ()],
                    _at(raw, ("mix", "seq_len"), int, _default(C["mix"], "seq_len")),
                    _at(raw, ("tokenizer", "vocab_size"), int, _default(C["tokenizer"], "vocab_size")), problems.add)
    problems.raise_if_any()
    assert top is not None

    return Recipe(
        path=file,
        name=str(top.name if top.name is not None else file.stem),
        raw=raw,
        store=top.store,
        sources=sources,
        quality=top.classifiers.quality,
        toxicity=top.classifiers.toxicity,
        dedup=top.dedup,
        tokenizer=top.tokenizer,
        mix=top.mix,
        model=dict(raw.get("model") or {}),
        pretrain={k: v for k, v in (raw.get("pretrain") or {}).items() if k != "launcher"},
        instructions=top.instructions,
        sft_shards=top.sft_shards,
        sft={k: v for k, v in (raw.get("sft") or {}).items() if k != "launcher"},
        evaluation=top.evaluation,
        launchers={sec: launchers.get(sec, LauncherConfig()) for sec in ("pretrain", "sft")},
        executor=top.executor,
        mix_search=top.mix_search,
    )


def _at(raw: Any, path: tuple, kind: type, default: Any) -> Any:
    """raw[path[0]][path[1]]...: `default` when a step is absent (or null), None when a value has another type."""
    value = raw
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return default
        value = value[key]
    if kind is int and isinstance(value, bool):
        return None
    return value if isinstance(value, kind) else None


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _check_model(raw: dict, problems: _Problems, C: dict[str, type]) -> None:
    """model.name + overrides through train.config.model_config (ModelConfig.validate), with the vocab_size and
    max_seq_len the pipeline fills in when the recipe does not give them (defs.train_assets.train_config); then
    the pretraining and SFT rows must fit the model's max_seq_len."""
    from plasma_pipeline.train.config import MODEL_CONFIGS, ModelConfig, model_config

    model_raw = _mapping(raw.get("model"))
    if not isinstance(model_raw, dict):
        return  # reported by the top-level validation
    name = model_raw.get("name", "toy")
    if not isinstance(name, str) or name not in MODEL_CONFIGS:
        problems.add(("model", "name"), f"unknown model {name!r} (known: {', '.join(MODEL_CONFIGS)})")
        return
    overrides = {k: v for k, v in model_raw.items() if k != "name"}
    if problems.validate(ModelConfig, {**dataclasses.asdict(MODEL_CONFIGS[name]), **overrides}, ("model",)) is None:
        return
    mix_seq = _at(raw, ("mix", "seq_len"), int, _default(C["mix"], "seq_len"))
    sft_seq = _at(raw, ("sft_shards", "seq_len"), int, _default(C["sft_shards"], "seq_len"))
    vocab = _at(raw, ("tokenizer", "vocab_size"), int, _default(C["tokenizer"], "vocab_size"))
    effective = dict(overrides)
    if vocab is not None:
        effective.setdefault("vocab_size", vocab)
    if mix_seq is not None:
        effective.setdefault("max_seq_len", mix_seq)
    try:
        mcfg = model_config(name, **effective)
    except ValueError as e:
        problems.add_value_error(("model",), _keys(ModelConfig), str(e))
        return
    given = "max_seq_len" in overrides
    limit = (f"model.max_seq_len is {mcfg.max_seq_len}" if given else
             f"the model's max_seq_len is {mcfg.max_seq_len}, taken from mix.seq_len because model.max_seq_len "
             "is not set")
    if given and mix_seq is not None and mix_seq > mcfg.max_seq_len:
        problems.add(("mix", "seq_len"), f"{mix_seq} is longer than the model takes ({limit})")
    if sft_seq is not None and sft_seq > mcfg.max_seq_len:
        problems.add(("sft_shards", "seq_len"), f"{sft_seq} is longer than the model takes ({limit})")
