"""Stage 6: SentencePiece BPE tokenizer with byte fallback and reserved chat tokens; exact fast batch encoding."""

from plasma_pipeline.tokenizer.encode import SegmentEncoder, load_encoder
from plasma_pipeline.tokenizer.train import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    TokenizerConfig,
    doc_hash,
    load_tokenizer,
    train_tokenizer,
    verify_special_tokens,
)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "SegmentEncoder",
    "UNK_ID",
    "TokenizerConfig",
    "doc_hash",
    "load_encoder",
    "load_tokenizer",
    "train_tokenizer",
    "verify_special_tokens",
]
