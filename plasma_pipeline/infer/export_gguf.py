"""Export a model directory to one GGUF file (llama architecture) for llama.cpp-based tools (llama.cpp, Ollama).

The layout is what llama.cpp's own convert_hf_to_gguf.py writes for a LlamaForCausalLM: tensors under GGUF's llama
names (token_embd, blk.N.attn_q, ..., output_norm, output), with attn_q / attn_k rows permuted from HF's
rotate-half RoPE order to the interleaved order llama.cpp's rope expects (`permute_qk`; its inverse is checked in
the test), hyperparameters under `llama.*`, and the SentencePiece vocabulary (pieces, scores, token types) under
`tokenizer.ggml.*` with our BOS/EOS/UNK/PAD ids, `<|end|>` as end of turn and the chat template.

Norm weights stay float32 (llama.cpp expects F32 1-D tensors); matrices are float32 or float16 (`dtype`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plasma_pipeline.chat_template import BOS_ID, END_ID, EOS_ID, PAD_ID, UNK_ID

# our (HF Llama) tensor names -> GGUF llama names; {i} is the layer
TENSOR_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}


def gguf_name(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 3 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
        i = parts[2]
        pattern = ".".join(parts[:2] + ["{i}"] + parts[3:])
        if pattern in TENSOR_NAMES:
            return TENSOR_NAMES[pattern].format(i=i)
    if name in TENSOR_NAMES:
        return TENSOR_NAMES[name]
    raise KeyError(f"no GGUF name for tensor {name!r}")


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotate-half row order within each head -> llama.cpp's interleaved pairs (what convert_hf_to_gguf does)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def vocab(tokenizer_model: str | Path) -> tuple[list[bytes], list[float], list[int]]:
    """(pieces, scores, GGUF token types) of a SentencePiece model; chat markers are CONTROL tokens."""
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        pieces.append(piece.encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i) or (piece.startswith("<|") and piece.endswith("|>")):
            t = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            t = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        else:
            t = gguf.TokenType.NORMAL
        types.append(int(t))
    return pieces, scores, types


def export_gguf(model_dir: str | Path, out_file: str | Path, dtype: str = "float16", verify: bool = True,
                name: str | None = None) -> Path:
    """Write `out_file` (GGUF v3, llama architecture) from a model directory (config.json, model.safetensors,
    tokenizer.model). dtype: "float32" or "float16" for the 2-D weights. verify: re-hash a store version folder
    against its manifest first (plasma_pipeline.infer.verify)."""
    import gguf
    from safetensors.numpy import load_file

    from plasma_pipeline.infer.export_hf import CHAT_TEMPLATE, _read_model_config

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
    model_dir, out = Path(model_dir), Path(out_file)
    if verify:
        from plasma_pipeline.infer.verify import verify_model_dir

        verify_model_dir(model_dir)
    cfg = _read_model_config(model_dir)
    tok = model_dir / "tokenizer.model"
    if not tok.exists():
        raise FileNotFoundError(f"{model_dir}: no tokenizer.model to put into the GGUF file")
    sd = load_file(str(model_dir / "model.safetensors"))
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)  # llama.cpp reuses token_embd when output.weight is absent

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(name or json.loads((model_dir / "config.json").read_text()).get("name") or cfg.name)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(float(cfg.norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "float16" else gguf.LlamaFileType.ALL_F32)

    pieces, scores, types = vocab(tok)
    if len(pieces) != cfg.vocab_size:
        raise ValueError(f"{tok}: {len(pieces)} pieces, but the model's vocab_size is {cfg.vocab_size}")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_eot_token_id(END_ID)  # <|end|> closes a turn: chat front ends stop there
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    for key in sorted(sd, key=_order):
        t = sd[key].astype(np.float32)
        if key.endswith("q_proj.weight"):
            t = permute_qk(t, cfg.n_heads)
        elif key.endswith("k_proj.weight"):
            t = permute_qk(t, cfg.n_kv_heads)
        if t.ndim > 1 and dtype == "float16":
            t = t.astype(np.float16)
        w.add_tensor(gguf_name(key), np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out


def _order(key: str) -> tuple:
    """Embeddings, then layers in order, then the final norm and head (the order llama.cpp's converter writes)."""
    parts = key.split(".")
    if len(parts) > 2 and parts[1] == "layers":
        return (1, int(parts[2]), key)
    return (0 if "embed" in key else 2, 0, key)
