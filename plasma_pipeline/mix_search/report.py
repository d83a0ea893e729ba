"""The search's report: per-domain val bpb of every variant, the regressions, their fit, the suggested mix.

`build_report(rows, ...)` writes report.md, bpb.png, fit.png and suggestion.json into a folder and returns the
summary. Each row is one finished variant: its name, its achieved token shares (what it trained on: a domain
short of documents can fall below its weight at the epoch cap), and its per-domain bits-per-byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from plasma_pipeline.mix_search.config import RECIPE_VARIANT, MixSearchConfig
from plasma_pipeline.mix_search.regression import best_fit, fit_models, suggest
from plasma_pipeline.mix_search.variants import DIGITS, shares as share_of
from plasma_pipeline.shards import atomic_write_text

MIN_FOR_REGRESSION = 3


def min_variants(domains: list[str]) -> int:
    """Finished variants a regression needs: more than there are domains (the linear model has one coefficient
    per domain; with fewer variants it interpolates them exactly and predicts nothing), and at least 3."""
    return max(MIN_FOR_REGRESSION, len(domains) + 1)


def objective_of(bpb: dict[str, float], obj_weights: dict[str, float]) -> float:
    return float(sum(w * bpb[d] for d, w in obj_weights.items() if w))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bpb(rows: list[dict], domains: list[str], objective: list[float], path: Path) -> Path:
    """Grouped bars: per-domain bpb of every variant, variants ordered by objective; the objective as a line."""
    plt = _plt()
    order = np.argsort(objective, kind="stable")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.2))
    width = 0.8 / max(1, len(domains))
    x = np.arange(len(rows))
    for j, d in enumerate(domains):
        ax.bar(x + (j - (len(domains) - 1) / 2) * width, [rows[i]["bpb"][d] for i in order], width, label=d)
    ax.plot(x, [objective[i] for i in order], "k.-", lw=1.2, label="objective")
    ax.set_xticks(x, [rows[i]["name"] for i in order], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("val bits per byte")
    ax.set_title("per-domain val bpb per variant (best objective first)")
    lo = min(min(r["bpb"][d] for d in domains) for r in rows)
    ax.set_ylim(bottom=max(0.0, lo * 0.9))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(6, len(domains) + 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_fit(names: list[str], actual: np.ndarray, fits: list, path: Path) -> Path:
    """Leave-one-out predicted vs measured objective, one marker set per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for f in fits:
        if f.cv_pred is None:
            continue
        rho = "n/a" if f.cv_spearman is None else f"{f.cv_spearman:.2f}"
        ax.scatter(actual, f.cv_pred, s=22, label=f"{f.name} (Spearman {rho})")
    lo, hi = float(min(actual)), float(max(actual))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    for n, a in zip(names, actual):
        ax.annotate(n, (a, a), fontsize=6, alpha=0.6)
    ax.set_xlabel("measured objective (bpb)")
    ax.set_ylabel("leave-one-out predicted objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _f(x: float | None, nd: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def build_report(rows: list[dict], domains: list[str], cfg: MixSearchConfig, recipe_weights: dict[str, float],
                 out_dir: Path, max_share: dict[str, float] | None = None, missing: list[str] = ()) -> dict[str, Any]:
    """Write the report into out_dir; returns {markdown, suggestion, fits, ...}.

    `max_share`: per domain, the largest share of the recipe's total_tokens its documents can supply within the
    epoch cap (candidates above it are not suggested). report.md (also returned as `markdown`) links bpb.png and
    fit.png beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError("no finished variant to report on")
    obj_w = cfg.objective.weights(domains)
    obj = np.array([obj_w[d] for d in domains])
    X = np.array([[r["shares"][d] for d in domains] for r in rows])
    Y = np.array([[r["bpb"][d] for d in domains] for r in rows])
    actual = Y @ obj
    names = [r["name"] for r in rows]
    plot_bpb(rows, domains, actual.tolist(), out_dir / "bpb.png")
    centre = share_of(recipe_weights, domains)
    c = np.array([centre[d] for d in domains])

    fits, best, sug = [], None, None
    if len(rows) >= min_variants(domains):
        fits = fit_models(X, Y, obj, domains, domains, cfg.lightgbm_min_variants, cfg.seed)
        best = best_fit(fits)
        caps = None if max_share is None else np.array([max_share.get(d, 1.0) for d in domains])
        sug = suggest(best, c, cfg.sample.concentration, obj, cfg.candidates, cfg.top_k, cfg.sample.seed,
                      caps, extra=X)
        plot_fit(names, actual, fits, out_dir / "fit.png")

    def img(name: str, alt: str) -> str:
        return f"![{alt}]({name})"

    L = ["# Mixture search", ""]
    kind = cfg.objective.kind
    L += [f"Objective: {'mean val bpb over all domains' if kind == 'mean_bpb' else 'weighted val bpb: ' + ', '.join(f'{d} {w:g}' for d, w in cfg.objective.targets.items())} "
          f"(lower is better). {len(rows)} variant(s) finished"
          + (f"; not finished: {', '.join(missing)}" if missing else "") + ".", ""]
    L += ["## Per-domain val bpb per variant", "",
          "Shares are the tokens each proxy trained on (the epoch cap can hold a small domain below its weight).", "",
          "| variant | " + " | ".join(f"share {d}" for d in domains) + " | " + " | ".join(f"bpb {d}" for d in domains)
          + " | objective |",
          "|---|" + "---:|" * (2 * len(domains) + 1)]
    for i in np.argsort(actual, kind="stable"):
        r = rows[i]
        L.append(f"| {r['name']} | " + " | ".join(f"{r['shares'][d]:.3f}" for d in domains) + " | "
                 + " | ".join(f"{r['bpb'][d]:.4f}" for d in domains) + f" | **{actual[i]:.4f}** |")
    L += ["", img("bpb.png", "per-domain val bpb per variant"), ""]
    suggestion: dict[str, Any] | None = None
    if fits:
        L += ["## Regression from shares to bpb", "",
              "Leave-one-out: each variant predicted by a model fitted without it; Spearman rank correlation of "
              "predicted vs measured objective.", "",
              "| model | CV Spearman | p-value | used for the suggestion |", "|---|---:|---:|---|"]
        for f in fits:
            L.append(f"| {f.name} | {_f(f.cv_spearman, 3)} | {_f(f.cv_pvalue, 3)} | {'yes' if f is best else ''} |")
        if len(rows) < cfg.lightgbm_min_variants:
            L += ["", f"LightGBM needs {cfg.lightgbm_min_variants} finished variants (lightgbm_min_variants); "
                      f"{len(rows)} finished."]
        L += ["", img("fit.png", "leave-one-out predicted vs measured objective"), ""]
        lin = next(f for f in fits if f.name == "linear")
        L += ["Linear coefficients (bpb of a domain if all tokens came from one source; lower = that source "
              "helps):", "", "| bpb of \\ share of | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
        for s in domains:
            L.append(f"| {s} | " + " | ".join(f"{lin.coefficients[s][d]:.3f}" for d in domains) + " |")
        shares_s = {d: float(x) for d, x in zip(domains, sug["shares"])}
        rounded = {d: round(x, DIGITS) for d, x in shares_s.items()}
        pred_recipe = best.predict(c[None, :])[0]
        suggestion = {
            "weights": rounded,
            "model": best.name,
            "cv_spearman": best.cv_spearman,
            "predicted_objective": sug["predicted_objective"],
            "predicted_scores": {d: float(x) for d, x in zip(domains, sug["predicted_scores"])},
            "recipe_weights": {d: round(centre[d], DIGITS) for d in domains},
            "recipe_predicted_objective": float(pred_recipe @ obj),
            "recipe_predicted_scores": {d: float(x) for d, x in zip(domains, pred_recipe)},
            "recipe_measured_objective": next((float(a) for n, a in zip(names, actual) if n == RECIPE_VARIANT), None),
            "candidates": sug["candidates"], "feasible_candidates": sug["feasible_candidates"], "top_k": sug["top_k"],
        }
        L += ["", "## Suggested mix", "",
              f"The mean of the {sug['top_k']} best of {sug['feasible_candidates']:,} feasible candidate mixtures "
              f"({sug['candidates']:,} drawn around the recipe's shares, concentration {cfg.sample.concentration:g}), "
              f"ranked by the {best.name} model.", "",
              "| domain | recipe share | suggested share | predicted bpb (recipe mix) | predicted bpb (suggested) |",
              "|---|---:|---:|---:|---:|"]
        for d in domains:
            L.append(f"| {d} | {centre[d]:.3f} | {rounded[d]:.3f} | {suggestion['recipe_predicted_scores'][d]:.4f} | "
                     f"{suggestion['predicted_scores'][d]:.4f} |")
        L.append(f"| **objective** | | | {suggestion['recipe_predicted_objective']:.4f} | "
                 f"**{suggestion['predicted_objective']:.4f}** |")
        L += ["", "Proxy-scale predictions: confirm by training the recipe's model on the suggested mix "
                  "(`plasma mix-search --apply NEW.yaml`, then materialize with `PLASMA_RECIPE=NEW.yaml`)."]
    else:
        L += ["", f"_No regression: it needs {min_variants(domains)} finished variants (more than the "
                  f"{len(domains)} domains); {len(rows)} finished._"]
    md = "\n".join(L) + "\n"
    atomic_write_text(out_dir / "report.md", md)
    result = {
        "markdown": md,
        "suggestion": suggestion,
        "variants": [{**r, "objective": float(a)} for r, a in zip(rows, actual)],
        "fits": [{"model": f.name, "cv_spearman": f.cv_spearman, "cv_pvalue": f.cv_pvalue} for f in fits],
        "objective_weights": obj_w,
        "missing": list(missing),
    }
    atomic_write_text(out_dir / "suggestion.json", json.dumps({k: v for k, v in result.items() if k != "markdown"},
                                                           indent=1, sort_keys=True))
    return result
