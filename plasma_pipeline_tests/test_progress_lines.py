"""The lines a person watches: trainer progress under Pipes and the demo's shortened console."""

from plasma_pipeline.cli import DemoLog
from plasma_pipeline.train.metrics import Reporter


def test_trainer_progress_line_has_step_total_loss_throughput_and_eta(tmp_path):
    r = Reporter(tmp_path, echo=False)
    r.total_steps = 10
    first = r.progress_line({"step": 1, "loss": 6.5, "tokens_per_s": 1000.0, "step_s": 0.5})
    line = r.progress_line({"step": 5, "loss": 4.25, "tokens_per_s": 12345.6, "step_s": 0.5})
    assert first.startswith("step 1/10 (10%) · loss 6.5000 · 1,000 tokens/s · ETA ")
    assert line.startswith("step 5/10 (50%) · loss 4.2500 · 12,346 tokens/s · ETA 0m")
    assert "{" not in line
    val = r.progress_line({"step": 5, "val_loss": 4.5, "val_loss/wiki": 4.25})
    assert val == "step 5/10 · val loss 4.5000 (wiki 4.250)"
    end = r.progress_line({"event": "final", "step": 10, "final_loss": 4.0, "val_loss": 4.1, "run_seconds": 12.0})
    assert end == "final at step 10/10 · loss 4.0000 · val loss 4.1000 · 12 s"


def test_demo_log_shortens_dagster_lines_and_drops_preview_warnings():
    run = "90528fe4-4667-4c75-b8ce-8d9716cbfe65"
    raw = [
        "/x/click/core.py:911: SupersessionWarning: Function `asset_materialize_command` is superseded.\n",
        "  return callback(*args, **kwargs)\n",
        f"2026-12-01 16:25:32 +0000 - dagster - DEBUG - __ASSET_JOB - {run} - 8924 - raw__code - STEP_WORKER_STARTED"
        " - Executing step \"raw__code\" in subprocess.\n",
        f"2026-12-01 16:25:33 +0000 - dagster - INFO - __ASSET_JOB - {run} - raw__code - raw/code: 39 documents\n",
        "/x/pipes/context.py:104: PreviewWarning: Function `PipesMessageReader.expected_writer_count` is in preview\n",
        "  self._expected_writers = message_reader.expected_writer_count\n",
        f"2026-12-01 16:26:03 +0000 - dagster - WARNING - __ASSET_JOB - {run} - base_model - step 1/6 (17%)\n",
        "all twelve stages materialized\n",
    ]
    assert list(DemoLog().lines(raw)) == [
        "16:25:33 raw/code             39 documents",
        "16:26:03 base_model           WARNING: step 1/6 (17%)",
        "all twelve stages materialized",
    ]
