"""From mixtures to scores, RegMix style: fit per-domain bpb on the mixture shares, rank unseen mixtures.

Each model predicts every domain's bpb from the share vector; the objective is a fixed weighted mean of those,
so a prediction always comes with its per-domain scores.

- `linear`: least squares of bpb on the shares, without an intercept (the shares sum to 1, so a constant is
  already in their span); numpy lstsq, which also takes fewer variants than domains (minimum-norm solution).
- `lightgbm`: gradient-boosted trees per domain, added from `lightgbm_min_variants` finished variants (RegMix
  trains LightGBM on hundreds; with a dozen, trees are shallow and leaves hold two variants).

Fit quality is leave-one-out: each variant's objective is predicted by a model fitted without it, and the
Spearman rank correlation of predicted against measured objectives says whether the model orders mixtures
right, which is all a search needs. The model with the higher correlation ranks the candidates (ties: linear).

The suggestion: `candidates` mixtures drawn around the recipe's shares (the region the proxies covered, as
RegMix samples its search space from the same prior), kept when every domain's token budget at the recipe's
`total_tokens` fits its epoch cap, scored, and the mean of the `top_k` best taken (RegMix averages the top 100
so that one lucky prediction does not decide the mix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Fit:
    name: str
    predict: Any  # (m, domains) shares -> (m, scored domains) bpb
    cv_spearman: float | None = None
    cv_pvalue: float | None = None
    cv_pred: np.ndarray | None = None  # leave-one-out predicted objective per variant
    coefficients: dict[str, dict[str, float]] = field(default_factory=dict)  # linear: domain -> share -> coef


def fit_linear(X: np.ndarray, Y: np.ndarray) -> Any:
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)
    return lambda Z: np.asarray(Z, dtype=np.float64) @ B, B


def fit_lightgbm(X: np.ndarray, Y: np.ndarray, seed: int = 0) -> Any:
    import lightgbm as lgb

    params = {
        "objective": "regression", "learning_rate": 0.1, "num_leaves": 4, "min_data_in_leaf": 2,
        "min_sum_hessian_in_leaf": 0.0, "lambda_l2": 1.0, "verbosity": -1, "seed": seed,
        "deterministic": True, "num_threads": 1, "force_row_wise": True,
    }
    boosters = []
    for j in range(Y.shape[1]):
        data = lgb.Dataset(X, Y[:, j], params={"min_data_in_bin": 1, "verbosity": -1}, free_raw_data=False)
        boosters.append(lgb.train(params, data, num_boost_round=100))
    return lambda Z: np.column_stack([b.predict(np.asarray(Z, dtype=np.float64)) for b in boosters])


def _fitter(name: str, seed: int):
    if name == "linear":
        return lambda X, Y: fit_linear(X, Y)[0]
    return lambda X, Y: fit_lightgbm(X, Y, seed)


def loo_objective(name: str, X: np.ndarray, Y: np.ndarray, obj: np.ndarray, seed: int = 0) -> np.ndarray:
    """Leave-one-out predicted objective of every variant."""
    fit = _fitter(name, seed)
    n = len(X)
    out = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        out[i] = float((fit(X[keep], Y[keep])(X[i : i + 1]) @ obj)[0])
    return out


def spearman(pred: np.ndarray, actual: np.ndarray) -> tuple[float | None, float | None]:
    from scipy.stats import spearmanr

    if len(pred) < 3 or np.ptp(actual) == 0 or np.ptp(pred) == 0:
        return None, None
    r = spearmanr(pred, actual)
    return float(r.statistic), float(r.pvalue)


def fit_models(X: np.ndarray, Y: np.ndarray, obj: np.ndarray, domains: list[str], scored: list[str],
               lightgbm_min_variants: int, seed: int = 0) -> list[Fit]:
    """The linear model, plus LightGBM with enough variants, each with its leave-one-out rank correlation.

    X: (n, domains) shares; Y: (n, scored) measured bpb; obj: (scored,) objective weights."""
    names = ["linear"] + (["lightgbm"] if len(X) >= lightgbm_min_variants else [])
    fits = []
    actual = Y @ obj
    for name in names:
        if name == "linear":
            predict, B = fit_linear(X, Y)
            coefs = {s: {d: float(B[i, j]) for i, d in enumerate(domains)} for j, s in enumerate(scored)}
        else:
            predict, coefs = fit_lightgbm(X, Y, seed), {}
        f = Fit(name, predict, coefficients=coefs)
        if len(X) >= 3:
            f.cv_pred = loo_objective(name, X, Y, obj, seed)
            f.cv_spearman, f.cv_pvalue = spearman(f.cv_pred, actual)
        fits.append(f)
    return fits


def best_fit(fits: list[Fit]) -> Fit:
    return max(fits, key=lambda f: (-1.0 if f.cv_spearman is None else f.cv_spearman, f.name == "linear"))


def feasible(C: np.ndarray, max_share: np.ndarray) -> np.ndarray:
    """Rows of C whose every share is within what the epoch cap lets that domain supply."""
    return np.all(C <= max_share[None, :] + 1e-12, axis=1)


def suggest(fit: Fit, centre: np.ndarray, concentration: float, obj: np.ndarray, candidates: int, top_k: int,
            seed: int = 0, max_share: np.ndarray | None = None, extra: np.ndarray | None = None) -> dict:
    """The mean of the top_k candidates by predicted objective, with its predicted per-domain scores."""
    from plasma_pipeline.mix_search.variants import sample_mixtures

    C = sample_mixtures(dict(enumerate(centre.tolist())), candidates, concentration, seed + 1)
    if extra is not None and len(extra):
        C = np.vstack([C, extra])
    n_drawn = len(C)
    if max_share is not None:
        C = C[feasible(C, max_share)]
    if not len(C):
        raise ValueError("no candidate mixture fits the epoch caps (mix.max_epochs x available tokens)")
    pred = fit.predict(C) @ obj
    k = min(top_k, len(C))
    top = np.argsort(pred, kind="stable")[:k]
    mix = C[top].mean(axis=0)
    mix = mix / mix.sum()
    return {
        "shares": mix,
        "predicted_scores": fit.predict(mix[None, :])[0],
        "predicted_objective": float(fit.predict(mix[None, :])[0] @ obj),
        "candidates": n_drawn,
        "feasible_candidates": int(len(C)),
        "top_k": k,
    }
