"""What an asset page in the Dagster UI shows: per-kind metadata, drop tables, readable samples and plots.

The UI (dagster-webserver 1.13) renders markdown metadata shorter than 1,000 characters inline and anything longer
behind "[Show Markdown]"; its sanitizer allows `data:` image sources but it cannot resolve a relative file path
(the report's `loss.png` was a broken image). So plots travel as PNGs embedded in markdown
(`![...](data:image/png;base64,...)`), and tables meant to be read at a glance are kept under the inline limit.
Every int/float entry becomes a line in the UI's "Plots" tab, so only values worth charting across versions are
numbers; counts that are constant or zero for an asset kind are left out or written as text.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Callable

import dagster as dg
import pyarrow.parquet as pq

INLINE_MD_CHARS = 1000  # the UI shows shorter markdown inline, longer behind "[Show Markdown]"
DROP_ROWS_INLINE = 10


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def embed_images(md: str, folder: Path) -> str:
    """Markdown whose `![alt](file.png)` images, relative to `folder`, are inlined as data URIs (the UI cannot fetch
    files)."""
    import re

    def inline(m: re.Match) -> str:
        f = folder / m.group(2)
        if not f.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^):/]+\.png)\)", inline, md)


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "–"
    for suffix, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


# ----------------------------------------------------------------------------- data assets


def drop_rules(stats: dict[str, int]) -> list[tuple[str, int, int]]:
    """(rule, documents, characters) for every rule that dropped documents or removed characters, largest first.

    Documents come from `dropped/<rule>`; characters from `chars_dropped/<rule>` (whole documents) plus
    `chars_removed/<rule>` (lines cut out of kept documents)."""
    docs: dict[str, int] = {}
    chars: dict[str, int] = {}
    for k, v in stats.items():
        prefix, _, rule = k.partition("/")
        if not rule or not v:
            continue
        if prefix == "dropped":
            docs[rule] = docs.get(rule, 0) + int(v)
        elif prefix in ("chars_dropped", "chars_removed"):
            chars[rule] = chars.get(rule, 0) + int(v)
    rules = set(docs) | set(chars)
    return sorted(((r, docs.get(r, 0), chars.get(r, 0)) for r in rules), key=lambda t: (-t[1], -t[2], t[0]))


def drops_markdown(rows: list[tuple[str, int, int]], limit: int = DROP_ROWS_INLINE) -> str:
    lines = ["| rule | documents | characters |", "|---|---:|---:|"]
    lines += [f"| {r} | {d:,} | {human(c)} |" for r, d, c in rows[:limit]]
    if len(rows) > limit:
        rest = rows[limit:]
        lines.append(f"| {len(rest)} more rules | {sum(d for _, d, _ in rest):,} | {human(sum(c for *_, c in rest))} |")
    return "\n".join(lines)


def drops_png(asset: str, stats: dict[str, int]) -> bytes | None:
    from plasma_pipeline.evaluate.report import plot_drops

    if not any(k.startswith("dropped/") and v for k, v in stats.items()):
        return None
    buf = io.BytesIO()
    plot_drops({asset: stats}, buf, dpi=80, title=f"{asset}: documents dropped per rule")
    return buf.getvalue()


def _cell(v: Any, n: int) -> str:
    s = json.dumps(v) if isinstance(v, (dict, list)) else f"{v:.3g}" if isinstance(v, float) else str(v)
    s = s.replace("\r", "").replace("\n", " ⏎ ").replace("|", "\\|").strip()
    return s[:n] + ("…" if len(s) > n else "")


def sample_markdown(version, n: int = 3, decode: Callable[[list[int]], str] | None = None,
                    text_chars: int = 200) -> str | None:
    """A two-column table (id or domain, then the text) of the first rows: the text column is the longest string
    (or, for token shards, the ids decoded), short fields are folded into the first cell. None without shards."""
    shards = version.shards()
    if not shards:
        return None
    pf = pq.ParquetFile(shards[0])
    table = (pf.read_row_group(0) if pf.num_row_groups else pf.read()).slice(0, n)
    rows = table.to_pylist()
    if not rows:
        return "_no rows_"
    cols = [c for c in table.column_names if c != "meta"]
    strings = [c for c in cols if isinstance(rows[0].get(c), str)]
    text_col = "input_ids" if "input_ids" in cols else max(strings, key=lambda c: len(rows[0][c] or ""), default=cols[0])
    key_col = "id" if "id" in cols else ("domain" if "domain" in cols else None)
    lines = [f"| {key_col or 'row'} | {'text' if text_col == 'input_ids' else text_col} |", "|---|---|"]
    for i, r in enumerate(rows):
        # A short first cell, so the markdown table gives the text column the width.
        key = _cell(r[key_col], 14) if key_col else str(i)
        about = [f"{c} {_cell(r[c], 16)}" for c in cols if c not in (key_col, text_col, "url")
                 and not isinstance(r[c], list) and r[c] is not None][:3]
        v = r[text_col]
        if text_col == "input_ids":
            text = f"[{len(v)} tokens] " + (decode(v) if decode else " ".join(map(str, v[:24])))
        else:
            text = v if isinstance(v, str) else _cell(v, text_chars)
        lead = f"*{' · '.join(about)}* — " if about else ""
        lines.append(f"| {key} | {lead}{_cell(text, text_chars)} |")
    return "\n".join(lines)


def inputs_markdown(inputs: dict[str, str]) -> str:
    return " · ".join(f"{k} `{v}`" for k, v in sorted(inputs.items())) or "_no inputs (a source)_"


def data_metadata(version, stats: dict[str, int], decode: Callable[[list[int]], str] | None = None) -> dict[str, Any]:
    """Rows, bytes, the drop table and its plot, kept share, a readable sample, and the other non-zero counters."""
    md: dict[str, Any] = {}
    if version.manifest["shards"]:
        md["rows"] = dg.MetadataValue.int(version.rows)
        splits = sorted({e.get("split") or "" for e in version.manifest["shards"]} - {""})
        md["layout"] = dg.MetadataValue.text(f"{len(version.manifest['shards'])} shards"
                                             + (f" in splits {', '.join(splits)}" if splits else ""))
    md["bytes"] = dg.MetadataValue.int(int(version.manifest["bytes"]))
    rules = drop_rules(stats)
    dropped = sum(d for _, d, _ in rules)
    if rules:
        md["drops"] = dg.MetadataValue.md(drops_markdown(rules))
    if dropped:
        kept = int(stats.get("kept", version.rows))
        md["dropped"] = dg.MetadataValue.int(dropped)
        md["kept_share"] = dg.MetadataValue.float(round(kept / max(1, kept + dropped), 4))
        png = drops_png(version.asset if hasattr(version, "asset") else "", stats)
        if png:
            md["drops_plot"] = png_markdown(png, "documents dropped per rule")
    sample = sample_markdown(version, decode=decode)
    if sample:
        md["sample"] = dg.MetadataValue.md(sample)
    other = {k: v for k, v in sorted(stats.items())
             if v and not k.startswith(("dropped/", "chars_dropped/", "chars_removed/"))}
    if other:
        md["counters"] = dg.MetadataValue.md(
            "\n".join(["| counter | count |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in other.items()]))
    return md


# ----------------------------------------------------------------------------- models


def loss_curve_png(model_dir: Path, label: str) -> bytes | None:
    from plasma_pipeline.evaluate.report import plot_losses, read_metrics

    if not read_metrics(model_dir)["train"]:
        return None
    buf = io.BytesIO()
    plot_losses({label: model_dir}, buf, dpi=80)
    return buf.getvalue()


def model_metadata(model_dir: Path, label: str, val: dict[str, Any] | None = None) -> dict[str, Any]:
    """Shape, parameters, tokens, final loss, val bits-per-byte, throughput and the loss curve of a model folder."""
    from statistics import median

    from plasma_pipeline.evaluate.report import read_metrics, training_summary

    s = training_summary(model_dir)
    m = read_metrics(model_dir)
    md: dict[str, Any] = {
        "shape": dg.MetadataValue.text(
            f"{s['shape']}: dim {s['dim']}, {s['n_layers']} layers, {s['n_heads']} heads ({s['n_kv_heads']} kv), "
            f"ffn {s['ffn_dim']}, vocab {s['vocab_size']:,}, context {s['max_seq_len']}"),
        "parameters": dg.MetadataValue.text(f"{human(s['params'])} ({s['params']:,})"),
    }
    if s["tokens"]:
        md["tokens"] = dg.MetadataValue.int(int(s["tokens"]))
    md["steps"] = dg.MetadataValue.text(
        f"{s['steps']:,} steps" + (f" in {s['train_seconds']:.0f} s" if s["train_seconds"] else "")
        + f" on {s['device'] or '?'} ({s['engine'] or '?'} engine)")
    if s["final_loss"] is not None:
        md["loss"] = dg.MetadataValue.float(round(float(s["final_loss"]), 4))
    if s["val_loss"] is not None:
        md["val_loss"] = dg.MetadataValue.float(round(float(s["val_loss"]), 4))
    if val:
        md["val_bpb"] = dg.MetadataValue.float(round(float(val["overall"]["bits_per_byte"]), 4))
        rows = ["| domain | val loss | bits/byte | tokens |", "|---|---:|---:|---:|"]
        rows += [f"| {d} | {r['loss']:.3f} | {r['bits_per_byte']:.3f} | {r['tokens']:,} |"
                 for d, r in sorted(val["domains"].items())]
        md["val_by_domain"] = dg.MetadataValue.md("\n".join(rows))
    tps = [r["tokens_per_s"] for r in m["train"] if r.get("tokens_per_s")]
    if tps:
        md["tokens_per_s"] = dg.MetadataValue.float(round(median(tps), 1))
    png = loss_curve_png(model_dir, label)
    if png:
        md["loss_curve"] = png_markdown(png, f"{label} loss curve")
    return md


def token_decoder(tokenizer_model: str | Path) -> Callable[[list[int]], str]:
    """Token ids back to text with the version's SentencePiece model, so a token-shard sample reads as text."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    return lambda ids: sp.decode([i for i in ids if 0 <= i < sp.get_piece_size()])


def model_val(model_dir: Path, shards_dir: Path, cfg) -> dict[str, Any]:
    """Val loss and bits per byte per domain (and pooled) of a model on its own training data's val split, scored as
    the evaluation scores it (plasma_pipeline.evaluate.val), so the model page shows bpb before stage 12 runs."""
    from plasma_pipeline.evaluate.val import pooled, val_metrics

    domains = val_metrics(model_dir, shards_dir, None, cfg)
    return {"domains": domains, "overall": pooled(domains)}


CPU_VAL_MAX_PARAMS = 300_000_000  # above this, scoring val on the CPU of an orchestrator pod takes too long


def _too_big_for_this_host(model_dir: Path) -> bool:
    """Training may have run elsewhere (a Dask GPU worker); this step's process scores val only where it is cheap."""
    import torch

    from plasma_pipeline.infer.export_hf import _read_model_config

    return not torch.cuda.is_available() and _read_model_config(model_dir).num_params() > CPU_VAL_MAX_PARAMS


def model_result_metadata(model_dir: Path, label: str, shards_dir: Path, eval_cfg, trainer_meta: dict,
                          log=None) -> dict[str, Any]:
    """Everything a model page shows, from its published folder: model_metadata plus the trainer's summary as one
    JSON entry (its numbers are constant per run and would only clutter the Plots tab)."""
    val = None
    if _too_big_for_this_host(model_dir):
        if log:
            log(f"{label}: no GPU in this step's process and a model this size; val bits-per-byte is left to the "
                f"evaluation")
    else:
        try:
            val = model_val(model_dir, shards_dir, eval_cfg)
        except (FileNotFoundError, ValueError) as e:  # no val split: the page says so instead of failing the step
            if log:
                log(f"no val bits-per-byte for {label}: {e}")
    md = model_metadata(model_dir, label, val)
    summary = {k: getattr(v, "value", v) for k, v in trainer_meta.items()}
    if summary:
        md["trainer_summary"] = dg.MetadataValue.json(json.loads(json.dumps(summary, default=str)))
    return md
