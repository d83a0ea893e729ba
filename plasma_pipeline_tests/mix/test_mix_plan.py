"""Budget planning and packing helpers of stage 7 (no tokenizer needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plasma_pipeline.mix import MixConfig, RowPacker, majority_domain, plan_mix, rows_to_table, split_budget
from plasma_pipeline.schema import TOKEN_SCHEMA


def test_split_budget_sums_exactly_with_awkward_weights():
    out = split_budget({"a": 1, "b": 1, "c": 1}, 1000)
    assert sum(out.values()) == 1000 and sorted(out.values()) == [333, 333, 334]
    out = split_budget({"a": 0.45, "b": 0.15, "c": 0.1, "d": 0.15, "e": 0.05}, 10_000_001)
    assert sum(out.values()) == 10_000_001
    assert out["a"] == pytest.approx(0.45 / 0.9 * 10_000_001, abs=1)


def test_plan_downsample_upsample_and_cap():
    cfg = MixConfig(weights={"big": 1, "mid": 1, "small": 1}, total_tokens=3000, max_epochs=2.5)
    p = plan_mix({"big": 5000, "mid": 600, "small": 100, "unused": 50}, cfg)
    assert (p["big"].requested_tokens, p["big"].achieved_tokens, p["big"].full_epochs) == (1000, 1000, 0)
    assert p["big"].partial_tokens == 1000 and not p["big"].capped
    assert (p["mid"].achieved_tokens, p["mid"].full_epochs, p["mid"].partial_tokens) == (1000, 1, 400)
    assert p["mid"].epochs_needed == pytest.approx(1000 / 600)
    assert p["small"].capped and p["small"].achieved_tokens == 250 and p["small"].epochs == 2.5
    assert (p["small"].full_epochs, p["small"].partial_tokens) == (2, 50)
    assert p["unused"].requested_tokens == 0 and p["unused"].achieved_tokens == 0 and not p["unused"].capped


def test_plan_empty_domain_is_capped_and_unknown_domain_rejected():
    cfg = MixConfig(weights={"a": 1, "b": 1}, total_tokens=100)
    p = plan_mix({"a": 0, "b": 1000}, cfg)
    assert p["a"].capped and p["a"].achieved_tokens == 0 and math.isinf(p["a"].epochs_needed)
    assert p["a"].as_dict()["epochs_needed"] is None
    with pytest.raises(ValueError, match="unknown domains"):
        plan_mix({"a": 10}, cfg)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"weights": {}}, "weights"),
        ({"weights": {"a": -1}}, "weights.a"),
        ({"weights": {"a": 0, "b": 0}}, "weights"),
        ({"weights": {"a": "x"}}, "weights.a"),
        ({"weights": {"a": 1}, "total_tokens": 0}, "total_tokens"),
        ({"weights": {"a": 1}, "seq_len": 0}, "seq_len"),
        ({"weights": {"a": 1}, "val_fraction": 1.0}, "val_fraction"),
        ({"weights": {"a": 1}, "max_epochs": 0}, "max_epochs"),
        ({"weights": {"a": 1}, "rows_per_shard": 0}, "rows_per_shard"),
        ({"weights": {"a": 1}, "val_max_tokens_per_domain": -5}, "val_max_tokens_per_domain"),
    ],
)
def test_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=f"mix.{field}"):
        MixConfig(**kw)


def test_packer_cuts_exact_rows_and_keeps_the_tail():
    pk = RowPacker(5)
    pk.add(np.arange(7, dtype=np.int32), 0)
    pk.add(np.arange(100, 106, dtype=np.int32), 1)
    rows, doms = pk.rows(force=True)
    assert rows.tolist() == [[0, 1, 2, 3, 4], [5, 6, 100, 101, 102]]
    assert doms.tolist() == [[0] * 5, [0, 0, 1, 1, 1]]
    tail, tail_dom = pk.tail()
    assert tail.tolist() == [103, 104, 105] and tail_dom.tolist() == [1, 1, 1] and pk.pending == 0


def test_majority_label_ignores_pad_and_breaks_ties_low():
    doms = np.array([[0, 1, 1, -1, -1], [1, 1, 0, 0, -1], [-1, -1, -1, 2, 0]])
    assert majority_domain(doms, 3).tolist() == [1, 0, 0]


def test_rows_to_table_matches_token_schema():
    t = rows_to_table(np.arange(12).reshape(3, 4), ["a", "b", "a"])
    assert t.schema == TOKEN_SCHEMA
    assert t.column("input_ids").to_pylist()[2] == [8, 9, 10, 11]
