"""Per-domain token budgets: requested = weight / sum(weights) x total_tokens, capped by max_epochs x available."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from plasma_pipeline.mix.config import MixConfig


@dataclass(frozen=True)
class DomainPlan:
    domain: str
    weight: float
    available_tokens: int  # train tokens of one epoch (val documents excluded), BOS/EOS included
    requested_tokens: int  # weight share of total_tokens (largest-remainder rounding: shares sum to the total)
    achieved_tokens: int  # min(requested, floor(max_epochs x available))
    epochs_needed: float  # requested / available (inf when nothing is available)
    full_epochs: int  # complete passes over the domain
    partial_tokens: int  # tokens of the last, partial pass (a seeded sample of documents)
    capped: bool  # achieved < requested: the epoch cap (or an empty domain) binds

    @property
    def epochs(self) -> float:
        return self.achieved_tokens / self.available_tokens if self.available_tokens else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["epochs"] = round(self.epochs, 6)
        d["epochs_needed"] = self.epochs_needed if math.isfinite(self.epochs_needed) else None
        return d


def split_budget(weights: dict[str, float], total: int) -> dict[str, int]:
    """Integer shares of `total` proportional to `weights` that sum to `total` exactly (largest remainder)."""
    s = float(sum(weights.values()))
    raw = {d: total * w / s for d, w in weights.items()}
    out = {d: int(math.floor(v)) for d, v in raw.items()}
    left = total - sum(out.values())
    for d in sorted(raw, key=lambda d: (-(raw[d] - out[d]), d))[:left]:
        out[d] += 1
    return out


def plan_mix(available_tokens_per_domain: dict[str, int], cfg: MixConfig) -> dict[str, DomainPlan]:
    """Plan every domain of `available_tokens_per_domain`; domains missing from cfg.weights get weight 0."""
    unknown = sorted(set(cfg.weights) - set(available_tokens_per_domain))
    if unknown:
        raise ValueError(
            f"mix.weights: unknown domains {unknown} (available: {sorted(available_tokens_per_domain)})"
        )
    weights = {d: float(cfg.weights.get(d, 0.0)) for d in sorted(available_tokens_per_domain)}
    requested = split_budget(weights, cfg.total_tokens)
    plans = {}
    for d, w in weights.items():
        avail = int(available_tokens_per_domain[d])
        if avail < 0:
            raise ValueError(f"available tokens of {d!r} must be >= 0, got {avail}")
        req = requested[d]
        achieved = min(req, int(math.floor(cfg.max_epochs * avail)))
        full = achieved // avail if avail else 0
        plans[d] = DomainPlan(
            domain=d,
            weight=w,
            available_tokens=avail,
            requested_tokens=req,
            achieved_tokens=achieved,
            epochs_needed=(req / avail) if avail else (0.0 if req == 0 else math.inf),
            full_epochs=full,
            partial_tokens=achieved - full * avail,
            capped=achieved < req,
        )
    return plans
