"""What one proxy run is made of, built on the existing stages: the mix stage's shards, the trainer, the bpb scorer.

- The fixed val set is the mix stage's own val split (`build_token_shards`, same seed, val_fraction and seq_len
  as the recipe's mix) built once with every domain present. The val documents are picked by id hash before any
  budget is allocated, so they are the same documents whatever the weights, and no variant trains on them
  (each variant's shards hold out the same documents and only their train split is kept).
- A variant's shards: `build_token_shards` with the variant's weights and `tokens_per_variant` as the budget.
- A proxy: the trainer (`python -m plasma_pipeline.train`) on those shards with the search's proxy shape, then
  per-domain bits-per-byte on the fixed val set with `evaluate.val`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from plasma_pipeline.mix import MixConfig, build_token_shards
from plasma_pipeline.mix_search.config import MixSearchConfig


def _discard(_table) -> None:
    """Writer for the split a build does not keep."""


def val_set_mix(mix: MixConfig, domains: list[str]) -> MixConfig:
    """The recipe's mix with every domain present: its val split is the search's fixed val set. The train
    budget is one row per domain, the least `build_token_shards` accepts; that part is discarded."""
    return dataclasses.replace(mix, weights={d: 1.0 for d in domains}, total_tokens=len(domains) * mix.row_len)


def variant_mix(mix: MixConfig, cfg: MixSearchConfig, weights: dict[str, float]) -> MixConfig:
    """The recipe's mix (seed, val split, packing, epoch cap) with a variant's weights and the proxy budget."""
    live = {d: w for d, w in weights.items() if w > 0}
    return dataclasses.replace(mix, weights=live, total_tokens=cfg.tokens_per_variant)


def build_val_set(domain_sources: dict[str, Callable[[], Iterable]], tokenizer_path: str, mix: MixConfig,
                  writer_val, stats: Counter, work_dir=None, processes: int = 1) -> dict:
    cfg = val_set_mix(mix, sorted(domain_sources))
    return build_token_shards(domain_sources, tokenizer_path, cfg, _discard, writer_val, stats,
                              work_dir=work_dir, processes=processes)


def build_variant_shards(domain_sources: dict[str, Callable[[], Iterable]], tokenizer_path: str, mix: MixConfig,
                         cfg: MixSearchConfig, weights: dict[str, float], writer_train, stats: Counter,
                         work_dir=None, processes: int = 1) -> dict:
    """Train shards of one variant; returns the mix metadata plus the achieved token share of every domain."""
    vmix = variant_mix(mix, cfg, weights)
    sources = {d: s for d, s in domain_sources.items() if d in vmix.weights}
    meta = build_token_shards(sources, tokenizer_path, vmix, writer_train, _discard, stats,
                              work_dir=work_dir, processes=processes)
    placed = {d: int(meta["domains"].get(d, {}).get("achieved_tokens", 0)) for d in weights}
    total = sum(placed.values()) or 1
    meta["token_shares"] = {d: placed[d] / total for d in weights}
    meta["available_tokens"] = {d: int(meta["domains"][d]["available_tokens"]) for d in meta["domains"]}
    meta["variant_weights"] = dict(weights)
    return meta


def proxy_train_config(cfg: MixSearchConfig, data_dir: Path, out_dir: Path, vocab_size: int, seq_len: int) -> dict:
    """A TrainConfig (as JSON data) for one proxy; the same for every variant but the data."""
    model = dict(cfg.model)
    name = model.pop("name", "toy")
    steps = cfg.steps(seq_len)
    return {
        "model": name,
        "model_overrides": {**model, "vocab_size": vocab_size, "max_seq_len": seq_len},
        "data_dir": str(data_dir),
        "out_dir": str(out_dir),
        "steps": steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "warmup": min(cfg.warmup, max(steps - 1, 0)),
        "engine": cfg.engine,
        "seed": cfg.seed,
        "save_every": max(1, steps // 2),
        "keep_last": 1,
        "val_batches": 0,  # scored on the fixed val set afterwards, in bits per byte
        "log_every": max(1, steps // 20),
    }


def score_proxy(model_dir: Path, val_dir: Path, tokenizer_path: Path, val_max_rows: int,
                device: str = "auto") -> dict[str, dict[str, Any]]:
    """Per-domain {loss, tokens, bytes, bits_per_byte} of a trained proxy on the fixed val set."""
    from plasma_pipeline.evaluate import EvalConfig
    from plasma_pipeline.evaluate.val import val_metrics

    return val_metrics(model_dir, val_dir, tokenizer_path, EvalConfig(val_max_rows=val_max_rows, device=device))
