"""Stage 12, evaluation: val loss and bits-per-byte per domain, a prompt battery, regression checks, a report card.

Entry point for the Dagster asset: `run_evaluation(models_from_store(store), ...)` (plasma_pipeline/evaluate/run.py):
each model is scored with its own tokenizer on the val data of its own lineage (lineage.py). Pieces:
`val_metrics` (val.py), `prompt_battery` (battery.py), `bpb_regressed` / `bpb_check` (checks.py), `write_report`
(report.py).
Heavy imports (torch, matplotlib) happen inside the functions' modules, so importing EvalConfig stays cheap.
"""

from plasma_pipeline.evaluate.config import EvalConfig

__all__ = [
    "CHECK_BASE_BPB",
    "CHECK_CHAT_BPB",
    "EvalConfig",
    "LineageError",
    "bpb_check",
    "bpb_regressed",
    "models_from_store",
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
    if name in ("bpb_regressed", "bpb_check"):
        from plasma_pipeline.evaluate import checks

        return getattr(checks, name)
    if name in ("models_from_store", "LineageError", "resolve_lineage"):
        from plasma_pipeline.evaluate import lineage

        return getattr(lineage, name)
    if name == "write_report":
        from plasma_pipeline.evaluate.report import write_report

        return write_report
    raise AttributeError(name)
