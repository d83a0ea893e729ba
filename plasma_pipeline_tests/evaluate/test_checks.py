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
