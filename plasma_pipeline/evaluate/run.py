"""Stage 12 in one call: `run_evaluation` scores, generates, checks and writes the report card.

Writes into out_dir:
  metrics.json        {"metrics": {model: {split: {"domains": {d: {loss, tokens, bytes, bits_per_byte}},
                                              "overall": {...}}}}, "sample_exchange", "config", "models"}
  generations.parquet the battery (model, domain, prompt, reference, generation, new_tokens), base and chat
  report.md, loss.png, drops.png  (see plasma_pipeline.evaluate.report)

Returns {"metadata": {...}, "checks": {check name: {"passed", "description", "metadata"}}}; the Dagster asset turns
metadata into MaterializeResult metadata and each check into an AssetCheckResult. `previous` is the previous
evaluation's metrics.json (loaded dict) or None.
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
from plasma_pipeline.evaluate.checks import bpb_regressed
from plasma_pipeline.evaluate.config import EvalConfig
from plasma_pipeline.evaluate.report import write_report
from plasma_pipeline.evaluate.val import pooled, val_metrics_for

# Asset check names (one per model): bits-per-byte did not regress past the threshold against the previous version.
CHECK_BASE_BPB = "base_bpb_no_regression"
CHECK_CHAT_BPB = "chat_bpb_no_regression"
CHECK_NAMES = {"base": CHECK_BASE_BPB, "chat": CHECK_CHAT_BPB}


def flat_bpb(model_metrics: dict[str, dict]) -> dict[str, dict]:
    """{"<split>/<domain>": metrics} and {"<split>/all": overall} for one model, the unit the check compares."""
    out = {}
    for split, m in model_metrics.items():
        for d, r in m["domains"].items():
            out[f"{split}/{d}"] = r
        out[f"{split}/all"] = m["overall"]
    return out


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


def run_evaluation(base_dir: str | Path, chat_dir: str | Path, pretrain_shards_dir: str | Path,
                   sft_shards_dir: str | Path | None, prompts: list[dict[str, Any]],
                   stage_stats: dict[str, dict[str, int]], cfg: EvalConfig, out_dir: str | Path,
                   previous: dict | None = None, data: dict[str, str] | None = None,
                   stats: Counter | None = None) -> dict[str, Any]:
    """Evaluate the base and chat models; write metrics.json, generations.parquet, report.md, loss.png, drops.png.

    prompts: the held-out battery [{domain, prompt, reference}] (plasma_pipeline.instruct.eval_prompts);
    stage_stats: {stage: {counter: n}} from the manifests; data: {asset: version id} for the report (defaults to
    the folder names); stats: counters (prompts_generated, val_rows, ...)."""
    from plasma_pipeline.infer.generate import Generator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = stats if stats is not None else Counter()
    models = {"base": Path(base_dir), "chat": Path(chat_dir)}
    shards = {"pretrain": Path(pretrain_shards_dir)}
    if sft_shards_dir:
        shards["sft"] = Path(sft_shards_dir)

    metrics: dict[str, dict] = {}
    tables = []
    sample = None
    for label, d in models.items():
        gen = Generator(d, device=cfg.device)
        if gen.sp is None:
            raise FileNotFoundError(f"{d}: no tokenizer.model in the model version")
        metrics[label] = {f"{k}_val": _split_metrics(gen, s, cfg) for k, s in shards.items()}
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

    prev_metrics = (previous or {}).get("metrics", previous) if previous else None
    checks = {}
    for label, name in CHECK_NAMES.items():
        prev = flat_bpb(prev_metrics[label]) if prev_metrics and label in prev_metrics else None
        passed, details = bpb_regressed(flat_bpb(metrics[label]), prev, cfg.bpb_regression_threshold)
        desc = (f"{label} model: bits-per-byte within +{cfg.bpb_regression_threshold:.0%} of the previous evaluation; "
                + details["note"] + (f"; regressed: {', '.join(details['regressed'])}" if details["regressed"] else ""))
        checks[name] = {"passed": passed, "description": desc, "metadata": details}
        stats["checks_passed" if passed else "checks_failed"] += 1

    data = data or {"base_model": models["base"].name, "chat_model": models["chat"].name,
                    **{f"{k}_shards": s.name for k, s in shards.items()}}
    md = write_report(out, models=models, metrics=metrics, generations=generations, stage_stats=stage_stats,
                      data=data, shards=shards, sample_exchange=sample, checks=checks)
    (out / "metrics.json").write_text(json.dumps({
        "metrics": metrics, "sample_exchange": sample, "config": dataclasses.asdict(cfg),
        "models": {k: str(v) for k, v in models.items()}, "data": data,
        "checks": {k: {"passed": v["passed"], "description": v["description"]} for k, v in checks.items()},
    }, indent=1))

    metadata: dict[str, Any] = {
        "report": md,
        "generations": _generations_md(generations),
        "sample_exchange": sample,
        "num_generations": generations.num_rows,
    }
    for label, splits in metrics.items():
        for split, m in splits.items():
            metadata[f"{label}/{split}/bits_per_byte"] = m["overall"]["bits_per_byte"]
            metadata[f"{label}/{split}/loss"] = m["overall"]["loss"]
    metadata["files"] = sorted(p.name for p in out.iterdir())
    return {"metadata": metadata, "checks": checks}
