"""The report card: what was trained, on what, how long, and how well — markdown plus two PNG plots.

report.md   model shapes and parameter counts, steps / tokens / time, a per-model lineage table (model, tokenizer,
            train data, init_from and val data versions) and per-domain tokens,
            val loss and bits-per-byte per domain for base vs chat, drop counts per stage, sample generations
loss.png    train loss curves of the base and chat models (metrics.jsonl), with val_loss points
drops.png   per-stage, per-rule drop counts (from the shard manifests' stats)
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# ----------------------------------------------------------------------------- reading what training left behind


def read_metrics(model_dir: str | Path) -> dict[str, list[dict]]:
    """metrics.jsonl split into train rows (one per step, the last logged wins after a resume), val rows and
    events (final, halted, terminated)."""
    path = Path(model_dir) / "metrics.jsonl"
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    events: list[dict] = []
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "event" in r:
                events.append(r)
            elif "loss" in r and "step" in r:
                train[int(r["step"])] = r
            elif "val_loss" in r and "step" in r:
                val[int(r["step"])] = r
    for e in events:  # the final evaluation is logged on the final event
        if e.get("event") == "final" and e.get("val_loss") is not None:
            val[int(e["step"])] = {"step": e["step"], "val_loss": e["val_loss"]}
    return {"train": [train[k] for k in sorted(train)], "val": [val[k] for k in sorted(val)], "events": events}


def training_summary(model_dir: str | Path) -> dict[str, Any]:
    """Shape, parameter count, steps, tokens, time and final losses of a model directory."""
    from plasma_pipeline.train.config import ModelConfig

    d = Path(model_dir)
    raw = json.loads((d / "config.json").read_text())
    mcfg = ModelConfig(**raw.get("model", raw))
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
    m = read_metrics(d)
    final = next((e for e in reversed(m["events"]) if e.get("event") == "final"), {})
    steps = final.get("step") or (m["train"][-1]["step"] if m["train"] else run.get("steps"))
    tokens_per_step = final.get("tokens_per_step")
    # Step records are logged every log_every steps, so summing their step_s undercounts; the final event has
    # the run's wall time (this launch only, if it resumed).
    seconds = final.get("run_seconds")
    return {
        "shape": mcfg.name,
        "dim": mcfg.dim, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads, "n_kv_heads": mcfg.n_kv_heads,
        "ffn_dim": mcfg.ffn_dim, "vocab_size": mcfg.vocab_size, "max_seq_len": mcfg.max_seq_len,
        "tie_embeddings": mcfg.tie_embeddings,
        "params": mcfg.num_params(),
        "steps": steps,
        "tokens": steps * tokens_per_step if steps and tokens_per_step else None,
        "train_seconds": round(seconds, 2) if seconds is not None else None,
        "final_loss": final.get("final_loss", m["train"][-1]["loss"] if m["train"] else None),
        "val_loss": m["val"][-1]["val_loss"] if m["val"] else None,
        "engine": final.get("engine", run.get("engine")),
        "device": final.get("device_name", final.get("device")),
        "batch_size": run.get("batch_size"), "lr": run.get("lr"),
        "data_dir": run.get("data_dir"), "init_from": run.get("init_from"),
    }


def domain_tokens(shards_dir: str | Path, split: str = "train") -> dict[str, int]:
    """Tokens per domain in a token-shard split: rows x row length, reading only the domain column (plus one row)."""
    files = sorted((Path(shards_dir) / split).glob("*.parquet"))
    counts: dict[str, int] = defaultdict(int)
    for f in files:
        pf = pq.ParquetFile(f)
        if pf.metadata.num_rows == 0:
            continue
        first = pf.read_row_group(0, columns=["input_ids"]).column(0)
        row_len = len(first[0].as_py()) if len(first) else 0
        for r in pq.read_table(f, columns=["domain"]).group_by("domain").aggregate([("domain", "count")]).to_pylist():
            counts[r["domain"]] += r["domain_count"] * row_len
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(models: dict[str, str | Path], path, dpi: int = 110):
    """One panel per model: train loss per step, val_loss as points; `path` a file name or a binary stream."""
    plt = _plt()
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5.5 * max(1, len(models)), 3.8), squeeze=False)
    for ax, (label, d) in zip(axes[0], models.items()):
        m = read_metrics(d)
        if m["train"]:
            ax.plot([r["step"] for r in m["train"]], [r["loss"] for r in m["train"]], lw=1.2, label="train loss")
        if m["val"]:
            ax.plot([r["step"] for r in m["val"]], [r["val_loss"] for r in m["val"]], "o", ms=5, label="val loss")
        if not m["train"] and not m["val"]:
            ax.text(0.5, 0.5, "no metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{label} model")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        if m["train"] or m["val"]:
            ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path) if isinstance(path, (str, Path)) else path


def drop_rows(stage_stats: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """(stage, rule, count) for every `dropped/<rule>` counter, stages in the given order, larger counts first."""
    out = []
    for stage, stats in stage_stats.items():
        rows = [(stage, k[len("dropped/"):], int(v)) for k, v in (stats or {}).items() if k.startswith("dropped/") and v]
        out.extend(sorted(rows, key=lambda r: -r[2]))
    return out


def plot_drops(stage_stats: dict[str, dict[str, int]], path, dpi: int = 110, title: str = "drops per stage and rule"):
    """Horizontal bars of drop counts, one colour per stage; `path` a file name or a binary stream."""
    plt = _plt()
    rows = drop_rows(stage_stats)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(rows) + 1.2)))
    if rows:
        stages = list(dict.fromkeys(r[0] for r in rows))
        colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(stages)}
        y = list(range(len(rows)))[::-1]
        ax.barh(y, [r[2] for r in rows], color=[colors[r[0]] for r in rows])
        ax.set_yticks(y, [f"{r[0]}: {r[1]}" if len(stages) > 1 else r[1] for r in rows], fontsize=8)
        ax.set_xlabel("documents dropped")
        if max(r[2] for r in rows) > 50 * max(1, min(r[2] for r in rows)):
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no drops recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path) if isinstance(path, (str, Path)) else path


# ----------------------------------------------------------------------------- markdown


def _fmt(x, spec: str = ".4f") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return format(x, spec)
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _cell(s: str, n: int = 160) -> str:
    s = (s or "").replace("\n", " ⏎ ").replace("|", "\\|").strip()
    return s[:n] + ("…" if len(s) > n else "")


def _human(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def val_table(metrics: dict[str, dict[str, dict]], split: str) -> list[str]:
    """Markdown rows: domain | loss and bpb of each model on `split`."""
    labels = [m for m in metrics if split in metrics[m]]
    if not labels:
        return []
    domains = sorted({d for m in labels for d in metrics[m][split]["domains"]})
    head = "| domain | tokens | " + " | ".join(f"{m} loss | {m} bpb" for m in labels) + " |"
    lines = [head, "|---|---:|" + "---:|---:|" * len(labels)]
    for d in domains + ["**all**"]:
        cells = []
        toks = None
        for m in labels:
            r = metrics[m][split]["overall"] if d == "**all**" else metrics[m][split]["domains"].get(d, {})
            toks = toks or r.get("tokens")
            cells += [_fmt(r.get("loss")), _fmt(r.get("bits_per_byte"))]
        lines.append(f"| {d} | {_fmt(toks)} | " + " | ".join(cells) + " |")
    return lines


def _v(version: str | None, sha: str | None = None) -> str:
    from plasma_pipeline.evaluate.lineage import short

    return "–" if not version and not sha else f"`{short(version, sha)}`"


def lineage_table(lineage: dict[str, dict]) -> list[str]:
    """Markdown rows: per model, the versions it was trained on and the val data versions it was scored on."""
    lines = ["Lineage: each model is scored with its own tokenizer on the val data of its own lineage.", "",
             "| model | model version | tokenizer version | train data version | init_from version | val data used |",
             "|---|---|---|---|---|---|"]
    for label, lin in lineage.items():
        vals = []
        for split, v in (lin.get("val_data") or {}).items():
            flag = {True: " (its train data)", False: " (**not** its train data)"}.get(v.get("is_train_data"), "")
            vals.append(f"{split}: {v.get('asset') or 'shards'} {_v(v.get('version'), v.get('sha256'))}{flag}")
        lines.append(
            f"| {label} | {lin.get('model_asset') or label} {_v(lin.get('model_version'), lin.get('weights_sha256'))} "
            f"| {_v(lin.get('tokenizer_version'), lin.get('tokenizer_sha256'))} | {_v(lin.get('train_data_version'))} "
            f"| {_v(lin.get('init_from_version'))} | {'; '.join(vals) or '–'} |")
    return lines


def _shards_version(lineage: dict[str, dict] | None, d: str | Path) -> str | None:
    for lin in (lineage or {}).values():
        for v in (lin.get("val_data") or {}).values():
            if v.get("dir") and Path(v["dir"]) == Path(d) and v.get("version"):
                return v["version"]
    return None


def write_report(out_dir: str | Path, *, models: dict[str, str | Path], metrics: dict[str, dict],
                 generations: pa.Table | None = None, stage_stats: dict[str, dict[str, int]] | None = None,
                 data: dict[str, Any] | None = None, shards: dict[str, str | Path] | None = None,
                 sample_exchange: dict[str, str] | None = None, checks: dict[str, dict] | None = None,
                 lineage: dict[str, dict] | None = None, title: str = "plasma-pipeline report card") -> str:
    """Write report.md, loss.png and drops.png into out_dir; return the markdown.

    models: {"base": dir, "chat": dir}; metrics: {model label: {split: {"domains": {...}, "overall": {...}}}};
    generations: the battery table; stage_stats: {stage: {counter: n}}; data: {asset: version id} listed as they
    are (optional; lineage is the record of what each model used); shards: {"pretrain": dir, "sft": dir} for
    per-domain token counts; checks: {name: {passed, ...}}; lineage: {model label: lineage dict} (see
    plasma_pipeline.evaluate.lineage) for the per-model lineage table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage_stats = stage_stats or {}
    plot_losses(models, out / "loss.png")
    plot_drops(stage_stats, out / "drops.png")

    L = [f"# {title}", "", f"_generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}_", ""]

    L += ["## What was trained", "",
          "| model | shape | params | d / layers / heads (kv) / ffn | vocab | ctx | steps | tokens | train time | final loss | val loss |",
          "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    summaries = {}
    for label, d in models.items():
        s = summaries[label] = training_summary(d)
        L.append(
            f"| {label} | {s['shape']} | {_human(s['params'])} | {s['dim']} / {s['n_layers']} / {s['n_heads']} "
            f"({s['n_kv_heads']}) / {s['ffn_dim']} | {s['vocab_size']:,} | {s['max_seq_len']} | {_fmt(s['steps'])} | "
            f"{_human(s['tokens'])} | {_fmt(s['train_seconds'], '.1f')} s | {_fmt(s['final_loss'])} | {_fmt(s['val_loss'])} |"
        )
    extra = [f"{label}: engine {s['engine'] or '–'}, device {s['device'] or '–'}, batch {_fmt(s['batch_size'])}, "
             f"lr {_fmt(s['lr'], 'g')}" for label, s in summaries.items()]
    L += [""] + [f"- {e}" for e in extra] + [""]

    L += ["## On what", ""]
    if lineage:
        L += lineage_table(lineage) + [""]
    if data:
        L += ["| asset | version |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in data.items()] + [""]
    for label, d in (shards or {}).items():
        toks = domain_tokens(d, "train")
        if toks:
            total = sum(toks.values())
            vid = _shards_version(lineage, d)
            L += [f"**{label} shards**{f' `{vid}`' if vid else ''} (train split, {_human(total)} tokens):", "",
                  "| domain | tokens | share |",
                  "|---|---:|---:|"]
            L += [f"| {k} | {v:,} | {v / total:.1%} |" for k, v in toks.items()] + [""]

    L += ["## Validation: loss and bits per byte", "",
          ("bits per byte = summed target nats / ln 2 / UTF-8 bytes of the target tokens (lower is better; "
          "comparable across tokenizers)."), ""]
    for split, name in (("pretrain_val", "Pretraining val split"), ("sft_val", "SFT val split (assistant tokens only)")):
        rows = val_table(metrics, split)
        if rows:
            L += [f"### {name}", ""] + rows + [""]

    if checks:
        L += ["## Checks", "", "| check | result | note |", "|---|---|---|"]
        for name, c in checks.items():
            result = "PASS" if c.get("passed") else "FAIL"
            if (c.get("metadata") or {}).get("baseline") == "new":
                result += " (new baseline)"
            L.append(f"| {name} | {result} | {_cell(c.get('description', ''), 400)} |")
        L.append("")

    L += ["## Training curves", "", "![loss curves](loss.png)", ""]
    L += ["## Data: drops per stage", "", "![drop counts](drops.png)", ""]
    rows = drop_rows(stage_stats)
    if rows:
        L += ["| stage | rule | dropped |", "|---|---|---:|"] + [f"| {s} | {r} | {n:,} |" for s, r, n in rows] + [""]
    kept = {s: st.get("kept") for s, st in stage_stats.items() if st and st.get("kept") is not None}
    if kept:
        L += ["Kept: " + ", ".join(f"{s} {n:,}" for s, n in kept.items()), ""]

    if sample_exchange:
        L += ["## Sample exchange (chat model)", "", f"> **user:** {_cell(sample_exchange['prompt'], 400)}", ">",
              f"> **assistant:** {_cell(sample_exchange['reply'], 800)}", ""]

    if generations is not None and generations.num_rows:
        L += ["## Sample generations (held-out prompts)", "", "| model | domain | prompt | generation | reference |",
              "|---|---|---|---|---|"]
        for r in generations.to_pylist():
            L.append(f"| {r['model']} | {r['domain']} | {_cell(r['prompt'], 120)} | {_cell(r['generation'])} | "
                     f"{_cell(r['reference'], 100)} |")
        L += ["", "All generations: `generations.parquet`.", ""]

    md = "\n".join(L)
    (out / "report.md").write_text(md, encoding="utf-8")
    return md
