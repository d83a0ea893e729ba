"""The variants a search tries: the recipe's mix, the listed weight sets, and seeded Dirichlet samples.

Every variant is a full share vector over the recipe's domains (missing domains get 0), normalised to sum 1. The
samples are a pure function of (recipe shares, seed, concentration, n), so a variant's name always means the
same mixture until one of those changes; its fingerprint (`variant_version`) is what Dagster compares to tell
which partitions a recipe edit touched.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from plasma_pipeline.mix_search.config import RECIPE_VARIANT, SAMPLE_PREFIX, MixSearchConfig

# Shares are rounded so a variant's weights read cleanly in a recipe and hash the same across platforms.
DIGITS = 4


def shares(weights: dict[str, float], domains: list[str]) -> dict[str, float]:
    s = float(sum(weights.get(d, 0.0) for d in domains))
    return {d: float(weights.get(d, 0.0)) / s for d in domains}


def _rounded(v: dict[str, float]) -> dict[str, float]:
    """Shares rounded to DIGITS decimals, still summing to 1 (the largest share absorbs the rounding)."""
    out = {d: round(x, DIGITS) for d, x in v.items()}
    top = max(out, key=lambda d: (out[d], d))
    out[top] = round(1.0 - sum(x for d, x in out.items() if d != top), DIGITS)
    return out


def sample_mixtures(centre: dict[str, float], n: int, concentration: float, seed: int) -> np.ndarray:
    """(n, domains) Dirichlet(concentration x centre) draws; domains with share 0 in the centre stay at 0."""
    domains = list(centre)
    alpha = np.array([centre[d] for d in domains], dtype=np.float64) * concentration
    live = alpha > 0
    out = np.zeros((n, len(domains)))
    if n:
        out[:, live] = np.random.default_rng([seed, 0x4D49]).dirichlet(alpha[live], size=n)
    return out


def variant_weights(cfg: MixSearchConfig, recipe_weights: dict[str, float], domains: list[str]) -> dict[str, dict[str, float]]:
    """{variant name: shares over `domains`}, in partition order: recipe, listed variants, samples."""
    centre = shares(recipe_weights, domains)
    out: dict[str, dict[str, float]] = {}
    if cfg.include_recipe_mix:
        out[RECIPE_VARIANT] = _rounded(centre)
    for name, w in cfg.variants.items():
        out[name] = _rounded(shares(w, domains))
    draws = sample_mixtures(centre, cfg.sample.n, cfg.sample.concentration, cfg.sample.seed)
    width = max(2, len(str(max(cfg.sample.n - 1, 0))))
    for i, row in enumerate(draws):
        out[f"{SAMPLE_PREFIX}{i:0{width}d}"] = _rounded(dict(zip(domains, row.tolist())))
    return out


def variant_version(weights: dict[str, float]) -> str:
    """Fingerprint of one variant's mixture: its Dagster data version (per partition)."""
    blob = json.dumps(sorted(weights.items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
