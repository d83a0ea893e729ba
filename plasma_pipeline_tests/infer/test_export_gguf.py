"""GGUF export: gguf's own reader gets back every tensor (names, shapes, values against the safetensors export),
the llama hyperparameters and the tokenizer; and a llama.cpp-style forward pass over the file's tensors (RoPE on
interleaved pairs, which is what the q/k permutation is for) gives our model's logits."""

import numpy as np
import pytest
import sentencepiece as spm
import torch
from safetensors.numpy import load_file

from plasma_pipeline.chat_template import BOS_ID, END_ID, EOS_ID
from plasma_pipeline.infer.export_gguf import export_gguf, gguf_name, unpermute_qk
from plasma_pipeline.train.model import load_model
from plasma_pipeline_tests.infer.toy import make_model_dir, wiki_extracts


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def exported(request, tmp_path_factory, toy_sp):
    import gguf

    root = tmp_path_factory.mktemp("gguf")
    model_dir = make_model_dir(root / "model", toy_sp, tie=request.param, seed=11)
    out = export_gguf(model_dir, root / "model.gguf", dtype="float32")
    return model_dir, gguf.GGUFReader(str(out))


def _field(reader, key):
    f = reader.get_field(key)
    assert f is not None, key
    return f.contents()


def _tensors(reader) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(t.data).reshape(tuple(reversed([int(d) for d in t.shape]))) for t in reader.tensors}


def test_tensors_shapes_and_values_match_the_safetensors_export(exported):
    model_dir, reader = exported
    cfg = __import__("json").loads((model_dir / "config.json").read_text())
    cfg = cfg.get("model", cfg)
    sd = load_file(str(model_dir / "model.safetensors"))
    if cfg["tie_embeddings"]:
        sd.pop("lm_head.weight", None)
    got = _tensors(reader)
    assert set(got) == {gguf_name(k) for k in sd}
    for key, want in sd.items():
        t = got[gguf_name(key)]
        assert t.shape == want.shape, key
        if key.endswith("q_proj.weight"):
            t = unpermute_qk(t, cfg["n_heads"])
        elif key.endswith("k_proj.weight"):
            t = unpermute_qk(t, cfg["n_kv_heads"])
        np.testing.assert_array_equal(t, want.astype(np.float32), err_msg=key)
    assert ("output.weight" in got) != cfg["tie_embeddings"]


def test_hyperparameters_and_tokenizer(exported, toy_sp):
    model_dir, reader = exported
    sp = spm.SentencePieceProcessor(model_file=str(toy_sp))
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 2 and _field(reader, "llama.embedding_length") == 64
    assert _field(reader, "llama.attention.head_count") == 4 and _field(reader, "llama.attention.head_count_kv") == 2
    assert _field(reader, "llama.rope.dimension_count") == 16
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert tokens == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types[END_ID] == 3 and types[BOS_ID] == 3 and types[1] == 2  # <|end|>, <s> control; <unk> unknown
    assert _field(reader, "tokenizer.ggml.bos_token_id") == BOS_ID
    assert _field(reader, "tokenizer.ggml.eos_token_id") == EOS_ID
    assert _field(reader, "tokenizer.ggml.eot_token_id") == END_ID
    assert "<|assistant|>" in _field(reader, "tokenizer.chat_template")


def _llama_cpp_style_logits(w: dict[str, np.ndarray], ids: list[int], n_layers: int, n_heads: int, n_kv: int,
                            eps: float, theta: float) -> np.ndarray:
    """llama.cpp's LLAMA graph in numpy: RMSNorm, RoPE rotating (x[2i], x[2i+1]) pairs, GQA, SwiGLU."""
    x = w["token_embd.weight"][ids].astype(np.float64)
    T, d = x.shape
    hd = d // n_heads
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def norm(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rope(v):  # v: (T, heads, hd), pairs interleaved
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * cos[:, None] - b * sin[:, None]
        out[..., 1::2] = a * sin[:, None] + b * cos[:, None]
        return out

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(n_layers):
        h = norm(x, w[f"blk.{i}.attn_norm.weight"])
        q = rope((h @ w[f"blk.{i}.attn_q.weight"].T).reshape(T, n_heads, hd))
        k = rope((h @ w[f"blk.{i}.attn_k.weight"].T).reshape(T, n_kv, hd))
        v = (h @ w[f"blk.{i}.attn_v.weight"].T).reshape(T, n_kv, hd)
        k, v = np.repeat(k, n_heads // n_kv, axis=1), np.repeat(v, n_heads // n_kv, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", p, v).reshape(T, d) @ w[f"blk.{i}.attn_output.weight"].T
        h = norm(x, w[f"blk.{i}.ffn_norm.weight"])
        g = h @ w[f"blk.{i}.ffn_gate.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ w[f"blk.{i}.ffn_up.weight"].T)) @ w[f"blk.{i}.ffn_down.weight"].T
    x = norm(x, w["output_norm.weight"])
    return x @ w.get("output.weight", w["token_embd.weight"]).T


def test_a_llama_cpp_style_forward_over_the_file_gives_our_logits(exported, toy_sp):
    model_dir, reader = exported
    cfg = __import__("json").loads((model_dir / "config.json").read_text())
    cfg = cfg.get("model", cfg)
    sp = spm.SentencePieceProcessor(model_file=str(toy_sp))
    ids = [BOS_ID] + sp.encode(wiki_extracts(1, start=4100)[0])[:40]
    w = {k: v.astype(np.float64) for k, v in _tensors(reader).items()}
    got = _llama_cpp_style_logits(w, ids, cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["norm_eps"],
                                  cfg["rope_theta"])
    with torch.no_grad():
        want = load_model(model_dir).float()(torch.tensor([ids])).float()[0].numpy()
    assert np.abs(got - want).max() < 1e-3, np.abs(got - want).max()


def test_plasma_export_gguf_writes_a_float16_file_gguf_reads(toy_model_dir, tmp_path, capsys):
    import gguf

    from plasma_pipeline.serve_cli import main

    out = tmp_path / "chat.gguf"
    assert main(["export", "--gguf", str(out), "--model", str(toy_model_dir)]) == 0
    assert str(out) in capsys.readouterr().out
    reader = gguf.GGUFReader(str(out))
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # norms stay F32, as llama.cpp wants
    with pytest.raises(SystemExit):
        main(["export", "--gguf", str(out), "--dtype", "bfloat16", "--model", str(toy_model_dir)])
