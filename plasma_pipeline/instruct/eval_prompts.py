"""The held-out evaluation prompt battery, chosen deterministically from the offline sources.

An item (wiki article, recipe, chatterbot dialog, stdlib function, play paragraph) is held out when the hash of
its domain and content key falls into the held-out bucket (`HELDOUT_FRACTION` of items). Held-out items are
never turned into instructions (the generators skip them on both the DOC-table and the file path), and the
battery is the first `per_domain` held-out items of each domain in hash order, so it is stable across runs,
machines and corpus order. The evaluation stage calls `eval_prompts()`; the instructions stage calls it too,
to decontaminate against exactly the same battery; and the dedup stage holds the battery items' documents (and
their near-duplicates) out of the pretraining and SFT data (`holdout.py`, on `eval_items()`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from plasma_pipeline.instruct.sources import DOMAINS, iter_file_items

# Share of each domain's items kept out of instruction data for evaluation.
HELDOUT_FRACTION = 0.02
DEFAULT_PER_DOMAIN = 8
# Lines of a held-out literature paragraph shown in the prompt; the rest is the reference continuation.
LITERATURE_PROMPT_LINES = 4
# The code battery comes from the first stdlib files in sorted walk order (~20 held-out functions; parsing all
# 700 files would cost seconds in every process that builds the battery).
_CODE_SCAN_FILES = 80


def item_hash(domain: str, key: str) -> float:
    """A uniform number in [0, 1) from the domain and content key (blake2b; independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b(f"{domain}\x00{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def is_heldout(item: dict[str, Any]) -> bool:
    return item_hash(item["domain"], item["key"]) < HELDOUT_FRACTION


def code_prompt(code: str) -> str:
    return f"Write a docstring for this Python function.\n\n```python\n{code}\n```"


def to_eval_prompt(item: dict[str, Any]) -> dict[str, Any]:
    """The battery entry for one held-out item: domain, prompt, reference, key, and `context` (the source text
    inside the prompt, without template words, which decontamination indexes together with the reference)."""
    d = item["domain"]
    if d == "wiki":
        context, prompt, ref = item["title"], f"Tell me about {item['title']}.", item["extract"]
    elif d == "recipes":
        context, prompt = item["title"], f"How do I make {item['title']}?"
        ref = "\n".join(f"{i}. {s}" for i, s in enumerate(item["steps"], 1))
    elif d == "dialog":
        context, prompt, ref = item["turns"][0], item["turns"][0], item["turns"][1]
    elif d == "code":
        context, prompt, ref = item["code"], code_prompt(item["code"]), item["docstring"]
    elif d == "literature":
        head, tail = item["lines"][:LITERATURE_PROMPT_LINES], item["lines"][LITERATURE_PROMPT_LINES:]
        context = "\n".join(head)
        prompt = f"Continue this passage from {item['work']}:\n\n{context}"
        ref = "\n".join(tail)
    else:
        raise ValueError(f"unknown domain {d!r}")
    return {"domain": d, "prompt": prompt, "reference": ref, "key": item["key"], "context": context}


def eval_items(sources_dir: str | None = None, per_domain: int = DEFAULT_PER_DOMAIN,
               domains: tuple[str, ...] = DOMAINS, stdlib: str | None = None) -> list[dict[str, Any]]:
    """The battery's items (sources.py item dicts, with every structured field): the first `per_domain` held-out
    items of each domain in hash order. `eval_prompts` turns them into prompts; `holdout` keeps their documents
    out of the training data."""
    if per_domain < 1:
        raise ValueError(f"per_domain: expected a positive integer, got {per_domain!r}")
    out: list[dict[str, Any]] = []
    for domain in domains:
        stats: Counter = Counter()
        held = []
        for item in iter_file_items(domain, sources_dir, stats, code_max_files=_CODE_SCAN_FILES, stdlib=stdlib):
            h = item_hash(domain, item["key"])
            if h < HELDOUT_FRACTION:
                held.append((h, item["key"], item))
        held.sort(key=lambda t: (t[0], t[1]))
        if len(held) < per_domain:
            raise ValueError(f"{domain}: only {len(held)} held-out items, fewer than per_domain={per_domain}")
        out.extend(item for _, _, item in held[:per_domain])
    return out


def eval_prompts(sources_dir: str | None = None, per_domain: int = DEFAULT_PER_DOMAIN,
                 domains: tuple[str, ...] = DOMAINS, stdlib: str | None = None) -> list[dict[str, Any]]:
    """The held-out battery: `per_domain` prompts for each domain, as dicts with domain, prompt, reference
    (plus key and context). Raises FileNotFoundError if an offline source is missing."""
    return [to_eval_prompt(item) for item in eval_items(sources_dir, per_domain, domains, stdlib)]
