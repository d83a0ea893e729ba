"""Trainer: LLaMA-style model, resident and streaming engines, checkpoints, metrics.

Imports only torch, numpy, pyarrow, safetensors, sentencepiece and the stdlib (dagster_pipes optionally),
so `python -m plasma_pipeline.train --config run.json` runs on a GPU box without Dagster.
"""

from plasma_pipeline.train.config import MODEL_CONFIGS, ModelConfig, TrainConfig, model_config

__all__ = ["MODEL_CONFIGS", "ModelConfig", "TrainConfig", "model_config"]
