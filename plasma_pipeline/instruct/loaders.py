"""Chat datasets in the messages format, from the Hub or local jsonl / parquet files, through one `datasets` path.

Both kinds go through `datasets.load_dataset(..., streaming=True)`: kind `hf` with the Hub id (or builder) in
`path`, kind `local` with the builder picked from the files' extension (json for .jsonl/.json[.gz], parquet).
A record's messages are a list of {role, content}; ShareGPT-style {from, value} with human/gpt roles is mapped.
Records that do not make a valid chat (unknown role, roles not alternating, no assistant answer) are dropped
and counted (`dropped/bad_messages`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plasma_pipeline.instruct.config import MessagesDatasetConfig
from plasma_pipeline.instruct.generators import make_record

ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def normalise_messages(raw: Any) -> list[dict[str, str]] | None:
    """A valid chat (optional system turn, then user/assistant alternating, ending on assistant) or None."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    if not isinstance(raw, list) or not raw:
        return None
    msgs = []
    for m in raw:
        if not isinstance(m, dict):
            return None
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).lower())
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str) or not content.strip():
            return None
        msgs.append({"role": role, "content": content})
    body = msgs[1:] if msgs[0]["role"] == "system" else msgs
    if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(body)):
        return None
    if body and body[-1]["role"] == "user":
        body = body[:-1]  # a trailing unanswered user turn teaches nothing
    if not body:
        return None
    return (msgs[:1] if msgs[0]["role"] == "system" else []) + body


def _data_files(spec: MessagesDatasetConfig) -> list[str]:
    out = []
    for f in spec.data_files or []:
        p = Path(f)
        out.append(str(p if p.is_absolute() else REPO_ROOT / p))
    return out


def _builder(files: list[str]) -> str:
    exts = {Path(f.removesuffix(".gz")).suffix for f in files}
    if exts <= {".jsonl", ".json"}:
        return "json"
    if exts == {".parquet"}:
        return "parquet"
    raise ValueError(f"datasets.data_files: cannot read {sorted(exts)} files; use .jsonl/.json[.gz] or .parquet")


def iter_messages_dataset(spec: MessagesDatasetConfig, stats: Counter) -> Iterator[dict[str, Any]]:
    """Instruction records (INSTRUCTION_SCHEMA dicts, source = spec.name) from one messages dataset."""
    import datasets

    if spec.kind == "local":
        files = _data_files(spec)
        ds = datasets.load_dataset(_builder(files), data_files=files, split=spec.split, streaming=True)
        origin = ",".join(spec.data_files or [])
    else:
        kwargs = {"data_files": _data_files(spec)} if spec.data_files else {}
        ds = datasets.load_dataset(spec.path, spec.config, split=spec.split, streaming=True, **kwargs)
        origin = spec.path
    n = 0
    for i, rec in enumerate(ds):
        if spec.max_docs is not None and n >= spec.max_docs:
            break
        if spec.messages_field not in rec:
            raise KeyError(f"dataset {spec.name!r}: record {i} has no field {spec.messages_field!r} "
                           f"(fields: {', '.join(rec)})")
        msgs = normalise_messages(rec[spec.messages_field])
        stats[f"read/{spec.name}"] += 1
        if msgs is None:
            stats["dropped/bad_messages"] += 1
            continue
        n += 1
        yield make_record(spec.name, f"{spec.kind}:{origin}:{spec.split}:{i}", msgs, dataset=spec.name, index=i)
