"""Export a model directory to the Hugging Face `LlamaForCausalLM` layout.

Writes into out_dir:
  config.json             LlamaConfig fields (hidden_size, intermediate_size, heads, kv heads, layers, rms_norm_eps,
                          rope_theta / rope_parameters, max_position_embeddings, vocab_size, tie_word_embeddings,
                          bos/eos/pad ids, dtype)
  model.safetensors       the weights under their HF names (the trainer already uses them; no renaming needed)
  generation_config.json  bos/pad ids, eos = [<|end|>, </s>] so `generate` stops at the end of a turn
  tokenizer.model         the SentencePiece model, unchanged
  tokenizer_config.json   LlamaTokenizer with our special tokens and a Jinja chat_template that renders exactly
                          what plasma_pipeline.chat_template.prompt_ids / render produce
  special_tokens_map.json
  tokenizer.json          the fast-tokenizer file, converted by transformers from tokenizer.model when transformers
                          is importable (so loaders without sentencepiece/protobuf work too)

Our model math is HF Llama's (rotate_half RoPE, RMSNorm in fp32, SwiGLU, repeat_kv GQA), so the weights are copied
as they are; the test plasma_pipeline_tests/infer/test_export_hf.py checks logits to < 1e-4 in fp32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from plasma_pipeline.chat_template import BOS_ID, END_ID, EOS_ID, PAD_ID, UNK_ID
from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS
from plasma_pipeline.train.config import ModelConfig

# Jinja rendering of plasma_pipeline.chat_template: BOS, then <|role|> content <|end|> per message, then an open
# <|assistant|> for generation (or EOS after a finished conversation when add_generation_prompt is false).
# Content is tokenised chunk by chunk between the special tokens, each chunk with SentencePiece's dummy prefix,
# which is what encoding each turn's text on its own gives. One difference remains: transformers matches special
# tokens inside message text, so a user who types "<|end|>" gets the marker id there, while our encode_text spells
# it out as ordinary bytes (the injection guard). Serve untrusted text through chat_template.prompt_ids.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


def _read_model_config(model_dir: Path) -> ModelConfig:
    raw = json.loads((model_dir / "config.json").read_text())
    return ModelConfig(**raw.get("model", raw))


def hf_config(cfg: ModelConfig, dtype: str = "float32") -> dict:
    """LlamaConfig as a dict (written as config.json)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "use_cache": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def tokenizer_config(max_len: int) -> dict:
    """tokenizer_config.json for transformers' LlamaTokenizer over our SentencePiece model."""
    names = {PAD_ID: "<pad>", UNK_ID: "<unk>", BOS_ID: "<s>", EOS_ID: "</s>"}
    names.update({i: t for i, t in enumerate(CHAT_SPECIAL_TOKENS, start=4)})
    added = {
        str(i): {"content": t, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False,
                 "special": True}
        for i, t in sorted(names.items())
    }
    return {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": True,
        # legacy=True: every chunk between special tokens gets the dummy prefix, as our per-turn encoding does.
        "legacy": True,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "additional_special_tokens": list(CHAT_SPECIAL_TOKENS),
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "padding_side": "left",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }


def export_hf(model_dir: str | Path, out_dir: str | Path, tokenizer_path: str | Path | None = None,
              dtype: str = "float32", tokenizer_json: bool = True, verify: bool = True) -> Path:
    """Write a LlamaForCausalLM-compatible folder from a model directory (config.json + model.safetensors
    [+ tokenizer.model]). dtype: "float32", "bfloat16" or "float16" for the saved weights.

    verify: when model_dir is a store version folder (has manifest.json), re-hash its files against the manifest
    first and raise CorruptModelError naming a bad file (plasma_pipeline.infer.verify.verify_model_dir); a plain
    directory is exported as it is. Pass False only when the caller has just verified it."""
    model_dir, out = Path(model_dir), Path(out_dir)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype: expected float32, bfloat16 or float16, got {dtype!r}")
    if verify:
        from plasma_pipeline.infer.verify import verify_model_dir

        verify_model_dir(model_dir)
    cfg = _read_model_config(model_dir)
    tok = Path(tokenizer_path) if tokenizer_path else model_dir / "tokenizer.model"
    if not tok.exists():
        raise FileNotFoundError(f"no tokenizer at {tok}; pass tokenizer_path")
    out.mkdir(parents=True, exist_ok=True)

    sd = load_file(str(model_dir / "model.safetensors"))
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    sd = {k: v.to(torch_dtype).contiguous() for k, v in sd.items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})

    (out / "config.json").write_text(json.dumps(hf_config(cfg, dtype), indent=2))
    gen = {"bos_token_id": BOS_ID, "eos_token_id": [END_ID, EOS_ID], "pad_token_id": PAD_ID,
           "do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_length": cfg.max_seq_len}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))

    if tok.resolve() != (out / "tokenizer.model").resolve():
        shutil.copyfile(tok, out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(cfg.max_seq_len), indent=2))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "additional_special_tokens": list(CHAT_SPECIAL_TOKENS)}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    if tokenizer_json:
        _write_tokenizer_json(out)
    return out


def _write_tokenizer_json(out: Path) -> None:
    """Convert tokenizer.model to tokenizer.json with transformers, if it is installed (optional)."""
    try:
        from transformers import LlamaTokenizer
    except ImportError:
        return
    from plasma_pipeline.tokenizer.model_proto import model_pb2

    model_pb2()  # registers sentencepiece_model_pb2 under any protobuf runtime before transformers imports it
    t = LlamaTokenizer.from_pretrained(str(out))
    t.backend_tokenizer.save(str(out / "tokenizer.json"))
