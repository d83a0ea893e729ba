"""Stage 12 in one call: `run_evaluation` scores, generates, checks and writes the report card.

Each model is scored with its own tokenizer (the tokenizer.model in its version folder) on the val data of its own
lineage (plasma_pipeline.evaluate.lineage): the caller passes, per model, its folder and the val shard folders to
score it on; `models_from_store(store)` builds exactly that from a ShardStore.

    run_evaluation(models={
        "base": {"dir": base.path, "val": {"pretrain": <pretrain_shards version base was trained on>}},
        "chat": {"dir": chat.path, "val": {"pretrain": <pretrain_shards version of its base's lineage>,
                                           "sft": <sft_shards version chat was trained on>}},
    }, prompts=..., stage_stats=..., cfg=..., out_dir=..., previous=...)

A model entry may also carry "lineage": {...} (see lineage.resolve_lineage) for plain folders without manifests.
Reads verify: every model folder and val split with a manifest.json is re-hashed against it first.

Writes into out_dir:
  metrics.json        {"metrics": {model: {split: {"domains": {d: {loss, tokens, bytes, bits_per_byte}},
                                              "overall": {...}}}},
                       "lineage": {model: {model_version, tokenizer_version, train_data_version, init_from_version,
                                           val_data: {split: {asset, version, sha256, ...}}, ...}},
                       "sample_exchange", "config", "models", "data", "checks"}
  generations.parquet the battery (model, domain, prompt, reference, generation, new_tokens), base and chat
  report.md, loss.png, drops.png  (see plasma_pipeline.evaluate.report)

Returns {"metadata": {...}, "checks": {check name: {"passed", "description", "metadata"}}}; the Dagster asset turns
metadata into MaterializeResult metadata and each check into an AssetCheckResult. `previous` is the previous
evaluation's metrics.json (loaded dict) or None; the bpb checks compare only against a previous evaluation whose
model had a comparable lineage (checks.bpb_check).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from plasma_pipeline.evaluate.battery import GENERATIONS_SCHEMA, battery_for
from plasma_pipeline.evaluate.checks import bpb_check, flat_bpb
from plasma_pipeline.evaluate.config import EvalConfig
from plasma_pipeline.evaluate.lineage import models_from_store, resolve_lineage
from plasma_pipeline.evaluate.report import write_report
from plasma_pipeline.evaluate.val import pooled, val_metrics_for

# Asset check names (one per model): bits-per-byte did not regress past the threshold against the previous version.
CHECK_BASE_BPB = "base_bpb_no_regression"
CHECK_CHAT_BPB = "chat_bpb_no_regression"
CHECK_NAMES = {"base": CHECK_BASE_BPB, "chat": CHECK_CHAT_BPB}

__all__ = ["CHECK_BASE_BPB", "CHECK_CHAT_BPB", "CHECK_NAMES", "flat_bpb", "models_from_store", "run_evaluation"]


def _split_metrics(gen, shards_dir, cfg: EvalConfig) -> dict[str, Any]:
    domains = val_metrics_for(gen.model, gen.sp, shards_dir, cfg, gen.device)
    return {"domains": domains, "overall": pooled(domains)}


def _generations_md(table: pa.Table, n: int = 12) -> str:
    lines = ["| model | domain | prompt | generation |", "|---|---|---|---|"]
    for r in table.slice(0, n).to_pylist():
        cells = [r["model"], r["domain"], r["prompt"], r["generation"]]
        cells = [c.replace("\n", " ⏎ ").replace("|", "\\|")[:140] for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _normalize_models(models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for label, m in models.items():
        if not isinstance(m, dict) or "dir" not in m:
            raise ValueError(f"models[{label!r}]: expected {{'dir': model folder, 'val': {{split: shards folder}}, "
                             f"'lineage': {{...}} (optional)}}, got {m!r}")
        val = {k: Path(v) for k, v in (m.get("val") or {}).items() if v}
        if not val:
            raise ValueError(f"models[{label!r}]: no val shard folders given (val: {{'pretrain': dir, ...}})")
        out[label] = {"dir": Path(m["dir"]), "val": val, "lineage": dict(m.get("lineage") or {})}
    return out


def run_evaluation(models: dict[str, dict[str, Any]], prompts: list[dict[str, Any]],
                   stage_stats: dict[str, dict[str, int]], cfg: EvalConfig, out_dir: str | Path,
                   previous: dict | None = None, stats: Counter | None = None) -> dict[str, Any]:
    """Evaluate each model on the val data of its own lineage; write metrics.json, generations.parquet, report.md,
    loss.png, drops.png.

    models: {label: {"dir": model folder, "val": {split: val shards folder}, "lineage": {...} (optional)}}, labels
    "base" (continues the battery prompts) and "chat" (answers them as a user turn; also gives the sample
    exchange); splits "pretrain" / "sft" are scored as "pretrain_val" / "sft_val". Build it with
    `models_from_store(store)`. prompts: the held-out battery [{domain, prompt, reference}]
    (plasma_pipeline.instruct.eval_prompts); stage_stats: {stage: {counter: n}} from the manifests; previous: the
    previous evaluation's metrics.json or None; stats: counters (val_tokens_scored, generations/<label>, ...).

    Raises CorruptModelError (a CorruptShardError) when a model file or val shard does not match its manifest, and
    LineageError (a ValueError) when val data was tokenized by another tokenizer than the model's."""
    from plasma_pipeline.infer.generate import Generator
    from plasma_pipeline.infer.verify import verify_model_dir, verify_split

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else Counter()
    models = _normalize_models(models)

    # Verify and resolve every lineage before any scoring: a corrupt file or a mismatched tokenizer fails fast.
    lineage: dict[str, dict] = {}
    for label, m in models.items():
        manifest = verify_model_dir(m["dir"])
        if not (m["dir"] / "tokenizer.model").exists():
            raise FileNotFoundError(f"{m['dir']}: no tokenizer.model in the model version")
        val = {split: (d, verify_split(d, "val")) for split, d in m["val"].items()}
        lineage[label] = resolve_lineage(label, m["dir"], manifest, val, m["lineage"])

    metrics: dict[str, dict] = {}
    tables = []
    sample = None
    for label, m in models.items():
        gen = Generator(m["dir"], device=cfg.device)  # its own tokenizer: <dir>/tokenizer.model
        metrics[label] = {f"{k}_val": _split_metrics(gen, s, cfg) for k, s in m["val"].items()}
        for split in metrics[label].values():
            stats["val_tokens_scored"] += sum(r["tokens"] for r in split["domains"].values())
        t = battery_for(gen, prompts, cfg, label, chat=(label == "chat"))
        stats[f"generations/{label}"] += t.num_rows
        tables.append(t)
        if label == "chat":
            msgs = [{"role": "user", "content": cfg.sample_prompt}]
            reply = gen.reply(msgs, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, seed=cfg.seed)
            sample = {"prompt": cfg.sample_prompt, "reply": reply}
        del gen
    generations = pa.concat_tables(tables) if tables else GENERATIONS_SCHEMA.empty_table()
    pq.write_table(generations, out / "generations.parquet")

    checks = {}
    for label, name in CHECK_NAMES.items():
        if label not in metrics:
            continue
        passed, desc, details = bpb_check(label, metrics[label], lineage[label], previous,
                                          cfg.bpb_regression_threshold, cfg.val_max_rows)
        checks[name] = {"passed": passed, "description": desc, "metadata": details}
        stats["checks_passed" if passed else "checks_failed"] += 1
        if details.get("baseline") == "new":
            stats["checks_new_baseline"] += 1

    # Train data shown with per-domain token counts: each split's shards as the model trained on them.
    shards: dict[str, Path] = {}
    for label, m in models.items():
        for split, d in m["val"].items():
            shards.setdefault(split, d)
    data = _data_versions(lineage)
    md = write_report(out, models={k: m["dir"] for k, m in models.items()}, metrics=metrics, generations=generations,
                      stage_stats=stage_stats, shards=shards, sample_exchange=sample, checks=checks,
                      lineage=lineage)
    (out / "metrics.json").write_text(json.dumps({
        "metrics": metrics, "lineage": lineage, "sample_exchange": sample, "config": dataclasses.asdict(cfg),
        "models": {k: str(m["dir"]) for k, m in models.items()}, "data": data,
        "checks": {k: {"passed": v["passed"], "description": v["description"],
                       "baseline": v["metadata"].get("baseline")} for k, v in checks.items()},
    }, indent=1))

    metadata: dict[str, Any] = {
        "report": md,
        "generations": _generations_md(generations),
        "sample_exchange": sample,
        "num_generations": generations.num_rows,
        "lineage": lineage,
    }
    for label, splits in metrics.items():
        for split, mm in splits.items():
            metadata[f"{label}/{split}/bits_per_byte"] = mm["overall"]["bits_per_byte"]
            metadata[f"{label}/{split}/loss"] = mm["overall"]["loss"]
    metadata["files"] = sorted(p.name for p in out.iterdir())
    return {"metadata": metadata, "checks": checks}


def _data_versions(lineage: dict[str, dict]) -> dict[str, str | None]:
    """{"base_model": id, "base_model/pretrain_val": pretrain_shards id, ...}: the versions each model used."""
    data: dict[str, str | None] = {}
    for label, lin in lineage.items():
        data[lin["model_asset"]] = lin["model_version"]
        for split, v in lin["val_data"].items():
            data[f"{lin['model_asset']}/{split}"] = v["version"]
    return data
