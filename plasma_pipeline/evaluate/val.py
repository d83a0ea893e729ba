"""Validation loss and bits-per-byte per domain over a token-shard folder's val split.

Bits per byte (bpb) makes models with different tokenizers comparable: it is the cost, in bits, of encoding the
text the targets spell, divided by the size of that text in bytes:

    bpb = (sum over counted targets of -ln p(target)) / ln 2  /  (sum of UTF-8 bytes of those target tokens)

A target counts when the row has no loss mask, or its mask bit is 1 (SFT shards: assistant tokens and their
<|end|>; the mask of target i is loss_mask[i + 1], as the trainer reads it). The bytes of a token are those of its
decoded piece: "▁" is a space (1 byte), a byte-fallback piece <0xNN> is 1 byte, other pieces are their UTF-8
length, and control / special tokens (<pad>, <unk>, <s>, </s>, chat markers) are 0 bytes. Their loss still counts
(a model must predict document and turn ends to encode the stream), so bpb is slightly pessimistic next to a
text-only count. Summing per-token byte lengths equals the byte length of decoding the target ids, except that
SentencePiece's decode drops the leading space of a sequence (at most one byte per row).

`loss` is the mean nats per counted target (what the trainer reports as val_loss when no mask is used).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from plasma_pipeline.evaluate.config import EvalConfig

LN2 = math.log(2.0)


def token_byte_lengths(sp) -> np.ndarray:
    """UTF-8 byte length of each vocabulary piece as decoded text (see the module docstring)."""
    n = sp.get_piece_size()
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            out[i] = 1
        elif piece.startswith("<|") and piece.endswith("|>"):
            out[i] = 0  # chat markers (user-defined symbols) are structure, not text
        else:
            out[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return out


def val_rows(shards_dir: str | Path, max_rows_per_domain: int, split: str = "val") -> dict[str, list[tuple[list[int], list[int] | None]]]:
    """{domain: [(input_ids, loss_mask or None), ...]}, at most max_rows_per_domain each, in file and row order."""
    files = sorted((Path(shards_dir) / split).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {split}/*.parquet under {shards_dir}")
    out: dict[str, list] = defaultdict(list)
    for f in files:
        names = pq.read_schema(f).names
        cols = ["input_ids", "domain"] + (["loss_mask"] if "loss_mask" in names else [])
        t = pq.read_table(f, columns=cols).to_pydict()
        masks = t.get("loss_mask") or [None] * len(t["input_ids"])
        for ids, dom, m in zip(t["input_ids"], t["domain"], masks):
            if len(out[dom]) < max_rows_per_domain:
                out[dom].append((ids, m))
    return dict(out)


@torch.inference_mode()
def score_rows(model, rows: list[tuple[list[int], list[int] | None]], byte_len: np.ndarray, batch_size: int,
               device) -> dict[str, float]:
    """Sum of nats, counted targets and bytes over rows (batched by equal length)."""
    nats, tokens, nbytes = 0.0, 0, 0
    by_len: dict[int, list] = defaultdict(list)
    for r in rows:
        by_len[len(r[0])].append(r)
    blen = torch.from_numpy(byte_len)
    for group in by_len.values():
        for k in range(0, len(group), batch_size):
            chunk = group[k : k + batch_size]
            ids = torch.tensor([r[0] for r in chunk], dtype=torch.long)
            inputs, targets = ids[:, :-1], ids[:, 1:]
            if chunk[0][1] is not None:
                mask = torch.tensor([r[1] for r in chunk], dtype=torch.bool)[:, 1:]
            else:
                mask = torch.ones_like(targets, dtype=torch.bool)
            if not mask.any():
                continue
            logits = model(inputs.to(device)).float()
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(device), reduction="none")
            ce = ce.view(targets.shape).cpu()
            nats += float(ce[mask].double().sum())
            tokens += int(mask.sum())
            nbytes += int(blen[targets.clamp(max=len(blen) - 1)][mask].sum())
    return {"nats": nats, "tokens": tokens, "bytes": nbytes}


def summarize(nats: float, tokens: int, nbytes: int) -> dict[str, Any]:
    """{loss, tokens, bytes, bits_per_byte} from summed nats, target count and byte count."""
    return {
        "loss": nats / tokens if tokens else None,
        "tokens": tokens,
        "bytes": nbytes,
        "bits_per_byte": nats / LN2 / nbytes if nbytes else None,
    }


def val_metrics_for(model, sp, shards_dir: str | Path, cfg: EvalConfig, device=None) -> dict[str, dict[str, Any]]:
    """val_metrics with an already loaded model and SentencePiece processor."""
    device = device if device is not None else next(model.parameters()).device
    byte_len = token_byte_lengths(sp)
    out = {}
    for domain, rows in sorted(val_rows(shards_dir, cfg.val_max_rows).items()):
        s = score_rows(model, rows, byte_len, cfg.batch_size, device)
        out[domain] = summarize(s["nats"], s["tokens"], s["bytes"])
    return out


def pooled(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """All domains together (token- and byte-weighted, not a mean of per-domain numbers)."""
    tokens = sum(m["tokens"] for m in metrics.values())
    nbytes = sum(m["bytes"] for m in metrics.values())
    nats = sum((m["loss"] or 0.0) * m["tokens"] for m in metrics.values())
    return summarize(nats, tokens, nbytes)


def val_metrics(model_dir: str | Path, shards_dir: str | Path, tokenizer_path: str | Path | None,
                cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Per-domain {loss, tokens, bytes, bits_per_byte} of the model in model_dir on shards_dir/val.

    tokenizer_path defaults to model_dir/tokenizer.model."""
    from plasma_pipeline.chat_template import load_sp
    from plasma_pipeline.infer.generate import Generator

    gen = Generator(model_dir, device=cfg.device, tokenizer_path=tokenizer_path)
    sp = gen.sp if gen.sp is not None else load_sp(str(tokenizer_path))
    return val_metrics_for(gen.model, sp, shards_dir, cfg, gen.device)
