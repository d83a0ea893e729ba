"""Stage 12, evaluation: val loss and bits-per-byte per domain, a prompt battery, regression checks, a report card."""

from plasma_pipeline.evaluate.config import EvalConfig

__all__ = ["EvalConfig"]
