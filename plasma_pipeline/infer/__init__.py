"""Inference: streaming generation with the KV cache, and export to Hugging Face LlamaForCausalLM format."""

from plasma_pipeline.infer.generate import (
    Generator,
    IncrementalDecoder,
    sample_next,
    top_p_filter,
)

__all__ = ["Generator", "IncrementalDecoder", "sample_next", "top_p_filter"]
