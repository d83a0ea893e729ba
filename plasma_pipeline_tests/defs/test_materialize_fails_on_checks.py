"""`plasma materialize` exits non-zero and names the check when an ERROR-severity asset check fails."""

import dagster as dg
import pytest

from plasma_pipeline.defs.stale import MaterializationFailed, run_selection


@dg.asset(check_specs=[dg.AssetCheckSpec("bpb_no_regression", asset="scored")])
def scored():
    return dg.MaterializeResult(check_results=[
        dg.AssetCheckResult(check_name="bpb_no_regression", passed=False, severity=dg.AssetCheckSeverity.ERROR)
    ])


@dg.asset(check_specs=[dg.AssetCheckSpec("only_a_warning", asset="warned")])
def warned():
    return dg.MaterializeResult(check_results=[
        dg.AssetCheckResult(check_name="only_a_warning", passed=False, severity=dg.AssetCheckSeverity.WARN)
    ])


def test_a_failed_error_check_fails_the_materialization_and_is_named():
    defs = dg.Definitions(assets=[scored, warned])
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        with pytest.raises(MaterializationFailed, match="checks failed: scored:bpb_no_regression"):
            run_selection(job, instance, [dg.AssetKey("scored")])
        # A WARN-severity failure is reported in the UI but does not fail the command.
        run_selection(job, instance, [dg.AssetKey("warned")])
