"""The regression and the variants, on synthetic scores: no training, milliseconds."""

import numpy as np
import pytest

from plasma_pipeline.mix_search.config import MixSearchConfig, SampleConfig
from plasma_pipeline.mix_search.regression import best_fit, fit_models, suggest
from plasma_pipeline.mix_search.report import build_report
from plasma_pipeline.mix_search.variants import sample_mixtures, variant_version, variant_weights

DOMAINS = ["code", "dialog", "wiki"]
# bpb of each scored domain (rows) as a function of the share of each source (columns): a known linear relation.
TRUE_B = np.array([[1.2, 2.6, 2.2],
                   [2.4, 1.5, 2.0],
                   [2.5, 2.3, 1.4]]).T  # (shares, scored)


def _synthetic(n: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = sample_mixtures({"code": 0.3, "dialog": 0.2, "wiki": 0.5}, n, 8.0, seed)
    Y = X @ TRUE_B + rng.normal(0, noise, size=(n, 3))
    return X, Y


def test_linear_regression_recovers_a_known_relation_and_ranks_it():
    X, Y = _synthetic(24, noise=0.002)
    obj = np.full(3, 1 / 3)
    fits = fit_models(X, Y, obj, DOMAINS, DOMAINS, lightgbm_min_variants=10)
    lin = next(f for f in fits if f.name == "linear")
    got = np.array([[lin.coefficients[s][d] for s in DOMAINS] for d in DOMAINS])
    np.testing.assert_allclose(got, TRUE_B, atol=0.05)
    assert lin.cv_spearman > 0.95
    assert [f.name for f in fits] == ["linear", "lightgbm"]
    # The objective is linear with per-source cost TRUE_B.mean(axis=1) = (2.03, 2.13, 1.87): wiki helps most, so the
    # suggestion moves share to wiki, and the model predicts it beats the centre.
    centre = np.array([0.3, 0.2, 0.5])
    s = suggest(best_fit(fits), centre, 8.0, obj, candidates=5000, top_k=50)
    assert s["shares"][2] > centre[2] and s["shares"][1] < centre[1]
    assert s["predicted_objective"] < float(centre @ TRUE_B @ obj)
    np.testing.assert_allclose(s["predicted_scores"] @ obj, s["predicted_objective"])


def test_shuffled_scores_do_not_rank():
    X, Y = _synthetic(16, noise=0.002)
    Y = Y[np.random.default_rng(3).permutation(len(Y))]
    lin = fit_models(X, Y, np.full(3, 1 / 3), DOMAINS, DOMAINS, lightgbm_min_variants=99)[0]
    assert lin.cv_spearman < 0.5


def test_lightgbm_joins_from_the_configured_variant_count():
    X, Y = _synthetic(9, noise=0.01)
    assert [f.name for f in fit_models(X, Y, np.full(3, 1 / 3), DOMAINS, DOMAINS, 10)] == ["linear"]
    assert [f.name for f in fit_models(X, Y, np.full(3, 1 / 3), DOMAINS, DOMAINS, 9)] == ["linear", "lightgbm"]


def test_suggestion_respects_the_epoch_caps():
    X, Y = _synthetic(12, noise=0.002)
    fit = fit_models(X, Y, np.full(3, 1 / 3), DOMAINS, DOMAINS, 99)[0]
    s = suggest(fit, np.array([0.3, 0.2, 0.5]), 8.0, np.full(3, 1 / 3), 4000, 40, max_share=np.array([1, 1, 0.55]))
    assert s["shares"][2] <= 0.55 + 1e-9 and s["feasible_candidates"] < s["candidates"]


def test_variants_are_seeded_and_one_edit_changes_one_fingerprint():
    cfg = MixSearchConfig(variants={"codey": {"code": 3, "wiki": 1}}, sample=SampleConfig(n=3, seed=7))
    recipe = {"code": 0.2, "dialog": 0.0, "wiki": 0.8}
    a = variant_weights(cfg, recipe, DOMAINS)
    assert list(a) == ["recipe", "codey", "sample-00", "sample-01", "sample-02"]
    assert a == variant_weights(cfg, recipe, DOMAINS)
    assert all(abs(sum(w.values()) - 1) < 1e-9 for w in a.values())
    assert all(w["dialog"] == 0 for n, w in a.items() if n.startswith("sample-"))  # zero in the centre stays zero
    assert a["codey"] == {"code": 0.75, "dialog": 0.0, "wiki": 0.25}
    cfg.variants["codey"] = {"code": 1, "wiki": 1}
    b = variant_weights(cfg, recipe, DOMAINS)
    changed = [n for n in a if variant_version(a[n]) != variant_version(b[n])]
    assert changed == ["codey"]


def test_report_tables_every_variant_and_embeds_its_plots(tmp_path):
    X, Y = _synthetic(10, noise=0.01)
    rows = [{"name": f"v{i}", "shares": dict(zip(DOMAINS, x)), "bpb": dict(zip(DOMAINS, y))}
            for i, (x, y) in enumerate(zip(X.tolist(), Y.tolist()))]
    cfg = MixSearchConfig(candidates=2000, top_k=20)
    out = build_report(rows, DOMAINS, cfg, {"code": 0.3, "dialog": 0.2, "wiki": 0.5}, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert all(f"| v{i} |" in md for i in range(10)) and "](bpb.png)" in md and "](fit.png)" in md
    assert out["markdown"] == md
    assert (tmp_path / "bpb.png").read_bytes()[:4] == b"\x89PNG"
    assert set(out["suggestion"]["weights"]) == set(DOMAINS)
    assert {f["model"] for f in out["fits"]} == {"linear", "lightgbm"}


def test_no_more_variants_than_domains_give_a_table_and_no_suggestion(tmp_path):
    # Three variants fit three coefficients exactly: a "fit" that predicts nothing is not offered.
    X, Y = _synthetic(3, noise=0.01)
    rows = [{"name": f"v{i}", "shares": dict(zip(DOMAINS, x)), "bpb": dict(zip(DOMAINS, y))}
            for i, (x, y) in enumerate(zip(X.tolist(), Y.tolist()))]
    out = build_report(rows, DOMAINS, MixSearchConfig(), {"code": 1.0}, tmp_path)
    assert out["suggestion"] is None and "needs 4 finished variants" in out["markdown"]
    assert "| v2 |" in out["markdown"]
    with pytest.raises(ValueError, match="no finished variant"):
        build_report([], DOMAINS, MixSearchConfig(), {"code": 1.0}, tmp_path)
