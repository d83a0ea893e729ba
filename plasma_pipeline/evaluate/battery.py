"""The prompt battery: generations of a model for held-out prompts of every domain, as a Parquet-ready table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from plasma_pipeline.evaluate.config import EvalConfig

GENERATIONS_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string()),  # "base" / "chat" (or the label given)
        pa.field("domain", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("reference", pa.string()),
        pa.field("generation", pa.string()),
        pa.field("new_tokens", pa.int32()),
    ]
)


def select_prompts(prompts: Iterable[dict[str, Any]], per_domain: int) -> list[dict[str, Any]]:
    """The first `per_domain` prompts of each domain, in input order."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for p in prompts:
        if seen[p["domain"]] < per_domain:
            seen[p["domain"]] += 1
            out.append(p)
    return out


def battery_for(gen, prompts: list[dict[str, Any]], cfg: EvalConfig, label: str, chat: bool) -> pa.Table:
    """Generate for each prompt with a loaded Generator; chat=True renders the prompt as a user turn, otherwise
    the base model continues the prompt text."""
    from plasma_pipeline.chat_template import BOS_ID, prompt_ids
    from plasma_pipeline.infer.generate import BASE_STOP_IDS, CHAT_STOP_IDS

    rows = defaultdict(list)
    for k, p in enumerate(select_prompts(prompts, cfg.prompts_per_domain)):
        if chat:
            ids, stops = prompt_ids([{"role": "user", "content": p["prompt"]}], gen.sp), CHAT_STOP_IDS
        else:
            ids, stops = [BOS_ID] + gen.sp.encode(p["prompt"]), BASE_STOP_IDS
        toks = list(gen.stream(ids, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               top_p=cfg.top_p, seed=cfg.seed + k, stop_ids=stops))
        rows["model"].append(label)
        rows["domain"].append(p["domain"])
        rows["prompt"].append(p["prompt"])
        rows["reference"].append(p.get("reference") or "")
        rows["generation"].append(gen.sp.decode(toks))
        rows["new_tokens"].append(len(toks))
    return pa.table({f.name: rows[f.name] for f in GENERATIONS_SCHEMA}, schema=GENERATIONS_SCHEMA)


def prompt_battery(model_dir: str | Path, prompts: list[dict[str, Any]], cfg: EvalConfig, label: str | None = None,
                   chat: bool = True) -> pa.Table:
    """Table (model, domain, prompt, reference, generation, new_tokens) for `prompts_per_domain` prompts per domain.

    prompts: [{domain, prompt, reference}, ...], e.g. plasma_pipeline.instruct.eval_prompts.eval_prompts()."""
    from plasma_pipeline.infer.generate import Generator

    gen = Generator(model_dir, device=cfg.device)
    return battery_for(gen, prompts, cfg, label or Path(model_dir).name, chat)
