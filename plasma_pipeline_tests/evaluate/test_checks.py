"""The bits-per-byte regression check."""

from plasma_pipeline.evaluate.checks import bpb_regressed


def _m(**bpb):
    return {d: {"bits_per_byte": v, "loss": 1.0, "tokens": 10, "bytes": 20} for d, v in bpb.items()}


def test_fails_when_a_domain_worsens_past_threshold():
    passed, details = bpb_regressed(_m(wiki=1.10, code=0.90), _m(wiki=1.00, code=0.95), 0.05)
    assert not passed
    assert details["regressed"] == ["wiki"]
    assert abs(details["domains"]["wiki"]["relative_change"] - 0.10) < 1e-9
    assert details["domains"]["code"]["regressed"] is False


def test_passes_within_threshold_and_on_improvement():
    assert bpb_regressed(_m(wiki=1.04, code=0.80), _m(wiki=1.00, code=0.95), 0.05)[0]
    assert bpb_regressed(_m(wiki=1.049), _m(wiki=1.0), 0.05)[0]
    assert not bpb_regressed(_m(wiki=1.051), _m(wiki=1.0), 0.05)[0]


def test_no_previous_or_new_domain_passes():
    passed, details = bpb_regressed(_m(wiki=3.0), None, 0.05)
    assert passed and "no previous" in details["note"]
    passed, details = bpb_regressed(_m(wiki=1.0, math=9.0), _m(wiki=1.0), 0.05)
    assert passed and details["domains"]["math"]["previous"] is None


def _lin(tok="t1", tok_sha="a" * 64, val=None, model="m1", weights="w" * 64):
    val = val if val is not None else {"pretrain_val": {"asset": "pretrain_shards", "version": "p1", "sha256": "s1"}}
    return {"model_asset": "base_model", "model_version": model, "weights_sha256": weights,
            "tokenizer_version": tok, "tokenizer_sha256": tok_sha, "val_data": val}


def test_comparable_lineage():
    from plasma_pipeline.evaluate.checks import comparable, same_model

    assert comparable(_lin(), _lin(model="m0", weights="v" * 64)) == (True, [])
    ok, why = comparable(_lin(tok="t2", tok_sha="b" * 64), _lin())
    assert not ok and why == ["tokenizer changed (prev t1, now t2)"]
    ok, why = comparable(_lin(val={"pretrain_val": {"asset": "pretrain_shards", "version": "p2", "sha256": "s2"}}), _lin())
    assert not ok and why == ["pretrain_val data changed (prev pretrain_shards p1, now p2)"]
    # a new version id whose val split has the same bytes (e.g. only the train split changed) stays comparable
    assert comparable(_lin(val={"pretrain_val": {"version": "p2", "sha256": "s1"}}), _lin())[0]
    ok, why = comparable(_lin(tok=None, tok_sha=None), _lin())
    assert not ok and why == ["tokenizer version unknown"]
    assert comparable(_lin(), None) == (False, ["the previous evaluation recorded no lineage (older metrics.json format)"])
    assert comparable(_lin(), _lin(), 64, 128) == (False, ["val_max_rows changed (prev 64, now 128)"])
    assert same_model(_lin(), _lin()) and not same_model(_lin(), _lin(model="m0", weights="v" * 64))


def test_bpb_check_no_comparable_baseline_passes():
    from plasma_pipeline.evaluate.checks import bpb_check

    metrics = {"pretrain_val": {"domains": _m(wiki=3.58), "overall": _m(all=3.58)["all"]}}
    prev_metrics = {"pretrain_val": {"domains": _m(wiki=2.39), "overall": _m(all=2.39)["all"]}}
    prev = {"metrics": {"base": prev_metrics}, "lineage": {"base": _lin(model="m0", weights="v" * 64)}}
    passed, desc, details = bpb_check("base", metrics, _lin(tok="t2", tok_sha="b" * 64), prev, 0.05)
    assert passed and details["baseline"] == "new" and details["regressed"] == []
    assert desc == ("base model: no comparable baseline: tokenizer changed (prev t1, now t2); this evaluation "
                    "establishes a new baseline")
    passed, desc, details = bpb_check("base", metrics, _lin(), prev, 0.05)  # same lineage, another model: judged
    assert not passed and details["baseline"] == "previous" and "pretrain_val/wiki" in details["regressed"]
    passed, desc, details = bpb_check("chat", metrics, _lin(), prev, 0.05)
    assert passed and "the previous evaluation has no chat model" in desc


def test_manifest_lineage_falls_back_to_inputs():
    from plasma_pipeline.evaluate.lineage import manifest_lineage

    mf = {"metadata": {}, "inputs": {"sft_shards": "s1", "tokenizer": "t1", "base_model": "b1"}}
    assert manifest_lineage(mf, "chat") == {"tokenizer_version": "t1", "train_data_version": "s1",
                                            "init_from_version": "b1"}
    mf = {"metadata": {"tokenizer_version": "t9"}, "inputs": {"pretrain_shards": "p1", "tokenizer": "t1"}}
    assert manifest_lineage(mf, "base") == {"tokenizer_version": "t9", "train_data_version": "p1"}
    assert manifest_lineage(None) == {}
