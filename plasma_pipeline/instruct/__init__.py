"""Stages 9-10: instruction data (templated from the structured sources, chat datasets, decontaminated against
the held-out eval battery) and SFT shards (chat template + assistant-only loss masks)."""

from plasma_pipeline.instruct.config import InstructionsConfig, MessagesDatasetConfig, SFTShardConfig
from plasma_pipeline.instruct.decontaminate import EvalIndex, decontaminate_table
from plasma_pipeline.instruct.eval_prompts import eval_prompts
from plasma_pipeline.instruct.generators import INSTRUCTION_SCHEMA
from plasma_pipeline.instruct.instructions import build_instructions, instructions_from_docs
from plasma_pipeline.instruct.loaders import iter_messages_dataset
from plasma_pipeline.instruct.sft_shards import build_sft_shards

__all__ = [
    "INSTRUCTION_SCHEMA",
    "EvalIndex",
    "InstructionsConfig",
    "MessagesDatasetConfig",
    "SFTShardConfig",
    "build_instructions",
    "build_sft_shards",
    "decontaminate_table",
    "eval_prompts",
    "instructions_from_docs",
    "iter_messages_dataset",
]
