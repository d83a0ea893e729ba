"""Inference: streaming generation with the KV cache, export to Hugging Face LlamaForCausalLM format, and
`verify_model_dir` (reads verify: a model version folder is re-hashed against its manifest before use)."""

from plasma_pipeline.infer.generate import (
    Generator,
    IncrementalDecoder,
    sample_next,
    top_p_filter,
)
from plasma_pipeline.infer.verify import CorruptModelError, verify_model_dir

__all__ = ["CorruptModelError", "Generator", "IncrementalDecoder", "sample_next", "top_p_filter", "verify_model_dir"]
