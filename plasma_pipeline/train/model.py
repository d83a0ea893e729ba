"""LLaMA-style decoder: RMSNorm, RoPE (HF rotate_half convention), GQA, SwiGLU.

The math lives in plain functions (`rms_norm`, `block_forward`, `head_loss`) that both engines call,
so the resident and streaming engines compute the same function. Parameter names are exactly those of
HF `LlamaForCausalLM` (`model.layers.{i}.self_attn.q_proj.weight`, ..., `lm_head.weight`); with tied
embeddings `lm_head.weight` is omitted, as HF does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from plasma_pipeline.train.config import ModelConfig

# Order of a block's tensors everywhere (block_forward args, flat host buffers): matrices, then norms.
LAYER_KEYS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)
N_LAYER_MATRICES = 7


# ----------------------------------------------------------------------------- functional core


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm: normalise in fp32, cast back, scale (weight in the activation dtype, as in a bf16 HF model)."""
    dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight.to(dtype) * xf.to(dtype)


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, device, dtype, start_pos: int = 0):
    """cos/sin tables of shape (seq_len, head_dim), as HF LlamaRotaryEmbedding builds them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    t = torch.arange(start_pos, start_pos + seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (b, heads, s, hd); cos/sin: (s, hd)."""
    return x * cos + rotate_half(x) * sin


def _attention_projections(cfg: ModelConfig, x, cos, sin, ln1, wq, wk, wv, linear: Callable = F.linear):
    b, s, _ = x.shape
    hd = cfg.head_dim
    h = rms_norm(x, ln1, cfg.norm_eps)
    q = linear(h, wq).view(b, s, cfg.n_heads, hd).transpose(1, 2)
    k = linear(h, wk).view(b, s, cfg.n_kv_heads, hd).transpose(1, 2)
    v = linear(h, wv).view(b, s, cfg.n_kv_heads, hd).transpose(1, 2)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """HF repeat_kv: query head i uses kv head i // n_rep."""
    if n_rep == 1:
        return x
    b, kv, s, hd = x.shape
    return x[:, :, None].expand(b, kv, n_rep, s, hd).reshape(b, kv * n_rep, s, hd)


def _mlp_and_residual(cfg: ModelConfig, x, attn_out, wo, ln2, wg, wu, wd, linear: Callable = F.linear):
    x = x + linear(attn_out, wo)
    h = rms_norm(x, ln2, cfg.norm_eps)
    return x + linear(F.silu(linear(h, wg)) * linear(h, wu), wd)


def block_forward(cfg: ModelConfig, x, cos, sin, wq, wk, wv, wo, wg, wu, wd, ln1, ln2, linear: Callable = F.linear):
    """One decoder block over a full causal sequence; tensors in LAYER_KEYS order. linear: F.linear, or the fp8
    matmul of train/fp8.py."""
    b, s, d = x.shape
    q, k, v = _attention_projections(cfg, x, cos, sin, ln1, wq, wk, wv, linear)
    rep = cfg.n_heads // cfg.n_kv_heads
    o = F.scaled_dot_product_attention(q, _repeat_kv(k, rep), _repeat_kv(v, rep), is_causal=True)
    o = o.transpose(1, 2).reshape(b, s, d)
    return _mlp_and_residual(cfg, x, o, wo, ln2, wg, wu, wd, linear)


def make_block_fn(cfg: ModelConfig, compile: bool = False, linear: Callable | None = None) -> Callable:
    """block_forward bound to a shape (and a matmul); optionally torch.compile'd once and shared by all layers."""
    linear = linear or F.linear

    def fn(x, cos, sin, *params):
        return block_forward(cfg, x, cos, sin, *params, linear=linear)

    if compile:
        return torch.compile(fn, dynamic=False)
    return fn


def embed(ids: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Token embedding, cast to the compute dtype (the residual stream's dtype)."""
    return F.embedding(ids, weight).to(dtype)


def head_loss_sum(cfg: ModelConfig, x, norm_w, head_w, targets, mask) -> torch.Tensor:
    """Sum of (masked) token cross-entropies over this chunk."""
    h = rms_norm(x, norm_w, cfg.norm_eps)
    logits = F.linear(h, head_w).float()
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    if mask is not None:
        ce = ce * mask.reshape(-1).to(ce.dtype)
    return ce.sum()


def make_head_fn(compile: bool = False) -> Callable:
    """head_loss, optionally with the sum torch.compile'd (fuses the norm, the fp32 upcast and the cross-entropy)."""
    sum_fn = torch.compile(head_loss_sum, dynamic=False) if compile else head_loss_sum

    def fn(cfg, x, norm_w, head_w, targets, mask, n_targets: int):
        return sum_fn(cfg, x, norm_w, head_w, targets, mask) / n_targets

    return fn


def head_loss(cfg: ModelConfig, x, norm_w, head_w, targets, mask, n_targets: int) -> torch.Tensor:
    """Sum of (masked) token cross-entropies over this chunk, divided by the batch's target count."""
    return head_loss_sum(cfg, x, norm_w, head_w, targets, mask) / n_targets


# ----------------------------------------------------------------------------- parameter layout


@dataclass
class UnitSpec:
    """A unit of streaming and of init: the outer weights (embed, final norm, head) or one block."""

    name: str
    keys: list[str]
    shapes: list[tuple[int, ...]]
    n_decay: int  # the first n_decay elements of the flat layout are matrices (weight decay applies)

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def offsets(self) -> list[tuple[int, int]]:
        out, o = [], 0
        for s in self.shapes:
            n = math.prod(s)
            out.append((o, n))
            o += n
        return out

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[o : o + n].view(s) for (o, n), s in zip(self.offsets(), self.shapes)]


def unit_specs(cfg: ModelConfig) -> list[UnitSpec]:
    d, v, kv, f = cfg.dim, cfg.vocab_size, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    keys, shapes = ["model.embed_tokens.weight"], [(v, d)]
    if not cfg.tie_embeddings:
        keys.append("lm_head.weight")
        shapes.append((v, d))
    n_decay = sum(math.prod(s) for s in shapes)
    keys.append("model.norm.weight")
    shapes.append((d,))
    units = [UnitSpec("outer", keys, shapes, n_decay)]
    lshapes = [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f), (d,), (d,)]
    n_decay = sum(math.prod(s) for s in lshapes[:N_LAYER_MATRICES])
    for i in range(cfg.n_layers):
        units.append(UnitSpec(f"layer{i}", [f"model.layers.{i}.{k}" for k in LAYER_KEYS], lshapes, n_decay))
    return units


def init_unit_(cfg: ModelConfig, spec: UnitSpec, tensors: Sequence[torch.Tensor], seed: int, unit_index: int) -> None:
    """Deterministic init of one unit, independent of the others (same result in any order)."""
    gen = torch.Generator(device=tensors[0].device)
    gen.manual_seed(seed * 1_000_003 + unit_index)
    out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    with torch.no_grad():
        for key, t in zip(spec.keys, tensors):
            if t.dim() == 1:
                t.fill_(1.0)
            else:
                std = out_std if key.endswith(("o_proj.weight", "down_proj.weight")) else cfg.init_std
                t.normal_(0.0, std, generator=gen)


def init_state_dict(cfg: ModelConfig, seed: int, device="cpu") -> dict[str, torch.Tensor]:
    """Fresh fp32 weights, keyed by HF names."""
    sd = {}
    for ui, spec in enumerate(unit_specs(cfg)):
        ts = [torch.empty(s, dtype=torch.float32, device=device) for s in spec.shapes]
        init_unit_(cfg, spec, ts, seed, ui)
        sd.update(zip(spec.keys, ts))
    return sd


# ----------------------------------------------------------------------------- nn.Module


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        kv = cfg.n_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, kv, bias=False)
        self.v_proj = nn.Linear(cfg.dim, kv, bias=False)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, block_fn: Callable | None = None):
        super().__init__()
        self._block_fn = [block_fn or make_block_fn(cfg)]  # in a list: not a submodule
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def params(self) -> list[torch.Tensor]:
        a, m = self.self_attn, self.mlp
        return [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight,
                m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight,
                self.input_layernorm.weight, self.post_attention_layernorm.weight]

    def forward(self, x, cos, sin):
        return self._block_fn[0](x, cos, sin, *self.params())


class KVCache:
    """Per-layer key/value buffers (b, n_kv_heads, max_len, head_dim) for incremental decoding."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]


class Inner(nn.Module):
    def __init__(self, cfg: ModelConfig, block_fn: Callable | None = None):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, block_fn) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Transformer(nn.Module):
    """The decoder as an nn.Module; `state_dict()` keys are HF LlamaForCausalLM's."""

    def __init__(self, cfg: ModelConfig, compile_blocks: bool = False, recompute: bool = False,
                 linear: Callable | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg, make_block_fn(cfg, compile_blocks, linear))
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        self.recompute = recompute
        self.head_fn = make_head_fn(compile_blocks)

    def tie_weights(self) -> None:
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def canonical_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights keyed as on disk (no lm_head.weight when tied)."""
        sd = self.state_dict()
        if self.cfg.tie_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

    def load_canonical_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not (self.cfg.tie_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise KeyError(f"state dict mismatch: missing={missing} unexpected={unexpected}")

    def _rope(self, seq_len: int, start_pos: int, device, dtype):
        return rope_cos_sin(seq_len, self.cfg.head_dim, self.cfg.rope_theta, device, dtype, start_pos)

    def hidden(self, input_ids: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
        """Residual stream after the last block (training path: full causal sequences)."""
        x = embed(input_ids, self.model.embed_tokens.weight, compute_dtype)
        cos, sin = self._rope(input_ids.shape[1], 0, x.device, compute_dtype)
        for layer in self.model.layers:
            if self.recompute and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        return x

    def loss(self, input_ids, targets, mask, n_targets: int, compute_dtype=torch.float32) -> torch.Tensor:
        x = self.hidden(input_ids, compute_dtype)
        return self.head_fn(self.cfg, x, self.model.norm.weight, self.lm_head.weight, targets, mask, n_targets)

    def forward(self, input_ids: torch.Tensor, start_pos: int = 0, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Logits (b, s, vocab) in fp32. With kv_cache, input_ids sit at positions start_pos.. and are cached."""
        cfg = self.cfg
        dtype = self.model.embed_tokens.weight.dtype
        if kv_cache is None:
            x = self.hidden(input_ids, dtype)
        else:
            x = embed(input_ids, self.model.embed_tokens.weight, dtype)
            b, s, _ = x.shape
            cos, sin = self._rope(s, start_pos, x.device, dtype)
            end = start_pos + s
            allowed = torch.arange(end, device=x.device)[None, :] <= torch.arange(start_pos, end, device=x.device)[:, None]
            rep = cfg.n_heads // cfg.n_kv_heads
            for i, layer in enumerate(self.model.layers):
                wq, wk, wv, wo, wg, wu, wd, ln1, ln2 = layer.params()
                q, k, v = _attention_projections(cfg, x, cos, sin, ln1, wq, wk, wv)
                kv_cache.k[i][:b, :, start_pos:end] = k
                kv_cache.v[i][:b, :, start_pos:end] = v
                kk, vv = kv_cache.k[i][:b, :, :end], kv_cache.v[i][:b, :, :end]
                o = F.scaled_dot_product_attention(q, _repeat_kv(kk, rep), _repeat_kv(vv, rep), attn_mask=allowed)
                x = _mlp_and_residual(cfg, x, o.transpose(1, 2).reshape(b, s, cfg.dim), wo, ln2, wg, wu, wd)
        return F.linear(rms_norm(x, self.model.norm.weight, cfg.norm_eps), self.lm_head.weight).float()


def build_model(cfg: ModelConfig, device="cpu", state_dict: dict | None = None, seed: int = 0, **kw) -> Transformer:
    """A Transformer on `device` in fp32, from `state_dict` or a fresh deterministic init."""
    with torch.device("meta"):
        model = Transformer(cfg, **kw)
    model.to_empty(device=device)
    model.tie_weights()
    sd = state_dict if state_dict is not None else init_state_dict(cfg, seed, device)
    with torch.no_grad():
        model.load_canonical_state_dict(sd)
    return model


def load_model(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32) -> Transformer:
    """Load `config.json` + `model.safetensors` from a final/ (or checkpoint) directory."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path = path / "config.json"
    raw = json.loads(cfg_path.read_text())
    cfg = ModelConfig(**raw.get("model", raw))
    sd = load_file(str(path / "model.safetensors"), device=str(device))
    model = build_model(cfg, device=device, state_dict=sd)
    return model.to(dtype)
