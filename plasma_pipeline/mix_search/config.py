"""The recipe's `mix_search:` section: which mixtures to try, on what proxy model, and what "better" means.

mix_search:
  sample: {n: 9, seed: 0, concentration: 10.0}   # n mixtures from Dirichlet(concentration x recipe shares)
  variants:                                        # named weight sets, tried as they are
    code_heavy: {wiki: 0.2, recipes: 0.1, code: 0.5, dialog: 0.05, literature: 0.15}
  include_recipe_mix: true                         # the recipe's own mix.weights, as variant `recipe`
  model: {name: toy}                               # proxy shape: a named shape + overrides
  tokens_per_variant: 200000                       # train tokens of each proxy (its shards and its steps)
  batch_size: 16
  lr: 0.003
  objective: {kind: mean_bpb}                      # or {kind: targets, targets: {wiki: 1.0, code: 0.5}}

A present but empty `mix_search:` means all defaults. Stdlib dataclasses only (the recipe loader validates them
with pydantic); each `__post_init__` raises ValueError whose message starts with the field it is about.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

RECIPE_VARIANT = "recipe"
SAMPLE_PREFIX = "sample-"
# Variant names are Dagster partition keys and store folder names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Proxy fields the pipeline fills from the tokenizer and the mix (the rows it trains on).
MANAGED_MODEL_KEYS = ("vocab_size", "max_seq_len")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_weights(where: str, weights: Any) -> None:
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{where}: a non-empty mapping of domain -> weight is required")
    for d, w in weights.items():
        if not _finite(w) or w < 0:
            raise ValueError(f"{where}.{d}: weight must be a finite number >= 0, got {w!r}")
    if sum(weights.values()) <= 0:
        raise ValueError(f"{where}: all weights are zero; at least one domain needs a positive weight")


@dataclass
class SampleConfig:
    """Mixtures drawn from a Dirichlet centred on the recipe's shares (RegMix samples its proxies the same way)."""

    n: int = 9  # mixtures drawn (0 = only the listed variants)
    seed: int = 0
    concentration: float = 10.0  # alpha = concentration x recipe share: larger stays closer to the recipe's mix

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n: must be >= 0, got {self.n}")
        if not _finite(self.concentration) or self.concentration <= 0:
            raise ValueError(f"concentration: must be a finite number > 0, got {self.concentration!r}")


@dataclass
class ObjectiveConfig:
    """What the search minimises: mean val bits-per-byte over every domain, or a weighted mean over targets."""

    kind: Literal["mean_bpb", "targets"] = "mean_bpb"
    targets: dict[str, float] = field(default_factory=dict)  # domain -> weight (kind: targets)

    def __post_init__(self) -> None:
        if self.kind == "targets":
            check_weights("targets", self.targets)
        elif self.targets:
            raise ValueError("targets: only used with kind: targets (kind is mean_bpb)")

    def weights(self, domains: list[str]) -> dict[str, float]:
        """Normalised weight of each domain's bpb in the objective."""
        raw = dict(self.targets) if self.kind == "targets" else {d: 1.0 for d in domains}
        s = float(sum(raw.values()))
        return {d: raw.get(d, 0.0) / s for d in domains}


@dataclass
class MixSearchConfig:
    variants: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> weights (missing domain: 0)
    sample: SampleConfig = field(default_factory=SampleConfig)
    include_recipe_mix: bool = True  # the recipe's mix.weights as variant `recipe` (the baseline)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "toy"})  # proxy shape: name + overrides
    tokens_per_variant: int = 200_000  # train tokens per proxy; steps = tokens / (batch_size x seq_len)
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 10
    engine: Literal["resident", "streaming"] = "resident"
    seed: int = 0  # proxy init and data order (the same for every variant: only the mix differs)
    val_max_rows: int = 48  # rows of the fixed val set scored per domain
    lightgbm_min_variants: int = 10  # LightGBM joins the linear model from this many finished variants
    candidates: int = 100_000  # mixtures scored by the regression when looking for the best one
    top_k: int = 100  # the suggestion is the mean of the best top_k candidates (RegMix: robust to fit noise)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        for name, w in self.variants.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"variants: {name!r}: variant names use letters, digits, '-' and '_' "
                                 "(at most 64, first a letter or digit)")
            if name == RECIPE_VARIANT or name.startswith(SAMPLE_PREFIX):
                raise ValueError(f"variants.{name}: {RECIPE_VARIANT!r} and {SAMPLE_PREFIX}* name the variants "
                                 "the search adds itself; pick another name")
            check_weights(f"variants.{name}", w)
        if not self.variants and not self.sample.n and not self.include_recipe_mix:
            raise ValueError("variants: no variants to try (no variants listed, sample.n is 0 and "
                             "include_recipe_mix is false)")
        if not isinstance(self.model.get("name", "toy"), str):
            raise ValueError(f"model.name: expected a string, got {self.model.get('name')!r}")
        for key in MANAGED_MODEL_KEYS:
            if key in self.model:
                raise ValueError(f"model.{key}: set by the pipeline (from the tokenizer and mix.seq_len), "
                                 "not the recipe")
        for name in ("tokens_per_variant", "batch_size", "val_max_rows", "candidates", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lightgbm_min_variants < 2:
            raise ValueError(f"lightgbm_min_variants: must be >= 2, got {self.lightgbm_min_variants}")
        if self.warmup < 0:
            raise ValueError(f"warmup: must be >= 0, got {self.warmup}")
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr: must be a finite number > 0, got {self.lr!r}")
        if self.top_k > self.candidates:
            raise ValueError(f"top_k: must be <= candidates ({self.candidates}), got {self.top_k}")

    def steps(self, seq_len: int) -> int:
        return max(1, -(-self.tokens_per_variant // (self.batch_size * seq_len)))


def cross_check(section: Any, sources: list[str], seq_len: int | None, vocab: int | None, add) -> None:
    """Rules that need the rest of the recipe: domains are known sources, the proxy shape builds.

    `section` is the raw `mix_search` mapping; `add(loc, message)` records a problem at a dotted location."""
    from plasma_pipeline.train.config import MODEL_CONFIGS, ModelConfig, model_config

    if not isinstance(section, dict):
        return
    known = ", ".join(sources)
    named = [(("variants", v), w) for v, w in (section.get("variants") or {}).items() if isinstance(w, dict)]
    obj = section.get("objective")
    if isinstance(obj, dict) and isinstance(obj.get("targets"), dict):
        named.append((("objective", "targets"), obj["targets"]))
    for loc, weights in named:
        for d in weights:
            if d not in sources:
                add(("mix_search", *loc, d), f"unknown source {d!r} (sources: {known})")
    model = section.get("model")
    if not isinstance(model, dict) or any(k in model for k in MANAGED_MODEL_KEYS):
        return  # reported by the section's own validation
    name = model.get("name", "toy")
    if name not in MODEL_CONFIGS:
        add(("mix_search", "model", "name"), f"unknown model {name!r} (known: {', '.join(MODEL_CONFIGS)})")
        return
    overrides = {k: v for k, v in model.items() if k != "name"}
    fields = set(ModelConfig.__dataclass_fields__)
    for k in overrides:
        if k not in fields:
            add(("mix_search", "model", k), f"unknown key (allowed: {', '.join(sorted(fields - {'name'}))})")
            return
    effective = {**overrides, **({"vocab_size": vocab} if vocab else {}), **({"max_seq_len": seq_len} if seq_len else {})}
    try:
        model_config(name, **effective)
    except (ValueError, TypeError) as e:
        msg = str(e)
        m = re.match(r"([A-Za-z_]\w*): (.*)", msg, re.S)
        if m and m.group(1) in fields:
            add(("mix_search", "model", m.group(1)), m.group(2))
        else:
            add(("mix_search", "model"), msg)
