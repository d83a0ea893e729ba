"""Stage 12, evaluation: val loss and bits-per-byte per domain, a prompt battery, regression checks, a report card.

Entry point for the Dagster asset: `run_evaluation` (plasma_pipeline/evaluate/run.py). Pieces:
`val_metrics` (val.py), `prompt_battery` (battery.py), `bpb_regressed` (checks.py), `write_report` (report.py).
Heavy imports (torch, matplotlib) happen inside the functions' modules, so importing EvalConfig stays cheap.
"""

from plasma_pipeline.evaluate.config import EvalConfig

__all__ = [
    "CHECK_BASE_BPB",
    "CHECK_CHAT_BPB",
    "EvalConfig",
    "bpb_regressed",
    "prompt_battery",
    "run_evaluation",
    "val_metrics",
    "write_report",
]


def __getattr__(name):
    if name in ("run_evaluation", "CHECK_BASE_BPB", "CHECK_CHAT_BPB", "CHECK_NAMES"):
        from plasma_pipeline.evaluate import run

        return getattr(run, name)
    if name == "val_metrics":
        from plasma_pipeline.evaluate.val import val_metrics

        return val_metrics
    if name == "prompt_battery":
        from plasma_pipeline.evaluate.battery import prompt_battery

        return prompt_battery
    if name == "bpb_regressed":
        from plasma_pipeline.evaluate.checks import bpb_regressed

        return bpb_regressed
    if name == "write_report":
        from plasma_pipeline.evaluate.report import write_report

        return write_report
    raise AttributeError(name)
