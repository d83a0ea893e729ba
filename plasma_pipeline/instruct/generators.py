"""Templated, honest instruction generators: the question is a template, the answer is the source's own text.

Several phrasings per task; the phrasing is picked by a hash of (seed, generator, item key), so it is stable
whatever the order or sharding of the input. Nothing is invented: wiki answers are the article's lead summary
(and its Wikidata short description), recipe answers are the recipe's own ingredient list and steps, dialog
turns are the corpus turns, and a code answer is the function's real docstring.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from plasma_pipeline.instruct.eval_prompts import code_prompt

# Instruction rows: one conversation each; messages alternate user/assistant after an optional system turn.
MESSAGE_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
INSTRUCTION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        # JSON: generator / dataset, template index, the item key or record index.
        pa.field("meta", pa.string()),
    ]
)

WIKI_TEMPLATES = [
    "What is {title}?",
    "Tell me about {title}.",
    "Summarise what you know about {title}.",
    "Give me a short overview of {title}.",
    "Can you explain {title}?",
    "I'd like to learn about {title}. What should I know?",
]
WIKI_FOLLOWUPS = ["Describe it in a few words.", "Can you say that in one short phrase?", "In short?"]
RECIPE_TEMPLATES = [
    "How do I make {title}?",
    "Give me a recipe for {title}.",
    "What are the steps to prepare {title}?",
    "I want to cook {title}. What do I need and what do I do?",
    "Can you walk me through making {title}?",
]
CODE_TEMPLATES = [
    code_prompt("{code}"),
    "Document this function with a docstring.\n\n```python\n{code}\n```",
    "What docstring would you give this Python function?\n\n```python\n{code}\n```",
    "```python\n{code}\n```\n\nWrite the docstring for the function above.",
]


def pick(seed: int, generator: str, key: str, n: int, salt: str = "") -> int:
    h = hashlib.blake2b(f"{seed}\x00{generator}\x00{key}\x00{salt}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") % n


def instruction_id(source: str, key: str) -> str:
    return f"{source}/{hashlib.sha1(key.encode('utf-8')).hexdigest()}"


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def make_record(source: str, key: str, messages: list[dict[str, str]], **meta: Any) -> dict[str, Any]:
    return {"id": instruction_id(source, key), "source": source, "messages": messages,
            "meta": json.dumps({"key": key, **meta}, ensure_ascii=False, sort_keys=True)}


def wiki_instruction(item: dict[str, Any], seed: int) -> dict[str, Any]:
    t = pick(seed, "wiki", item["key"], len(WIKI_TEMPLATES))
    msgs = [_msg("user", WIKI_TEMPLATES[t].format(title=item["title"])), _msg("assistant", item["extract"])]
    # About a third get an honest second turn: the article's own short description.
    if item.get("description") and pick(seed, "wiki", item["key"], 3, "followup") == 0:
        f = pick(seed, "wiki", item["key"], len(WIKI_FOLLOWUPS), "phrase")
        msgs += [_msg("user", WIKI_FOLLOWUPS[f]), _msg("assistant", item["description"])]
    return make_record("wiki", item["key"], msgs, generator="wiki", template=t)


def recipe_answer(item: dict[str, Any]) -> str:
    parts = []
    if item["ingredients"]:
        parts.append("Ingredients:\n" + "\n".join(f"- {x}" for x in item["ingredients"]))
    parts.append("Steps:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(item["steps"], 1)))
    return "\n\n".join(parts)


def recipe_instruction(item: dict[str, Any], seed: int) -> dict[str, Any]:
    t = pick(seed, "recipes", item["key"], len(RECIPE_TEMPLATES))
    msgs = [_msg("user", RECIPE_TEMPLATES[t].format(title=item["title"])), _msg("assistant", recipe_answer(item))]
    return make_record("recipes", item["key"], msgs, generator="recipes", template=t)


def dialog_instruction(item: dict[str, Any], seed: int) -> dict[str, Any]:
    msgs = [_msg("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(item["turns"])]
    return make_record("dialog", item["key"], msgs, generator="dialog", template=-1, turns=len(msgs))


def code_instruction(item: dict[str, Any], seed: int) -> dict[str, Any]:
    t = pick(seed, "code", item["key"], len(CODE_TEMPLATES))
    # str.replace, not format: the code itself is full of braces.
    prompt = CODE_TEMPLATES[t].replace("{code}", item["code"])
    msgs = [_msg("user", prompt), _msg("assistant", item["docstring"])]
    return make_record("code", item["key"], msgs, generator="code", template=t)


GENERATOR_FUNCS = {
    "wiki": wiki_instruction,
    "recipes": recipe_instruction,
    "dialog": dialog_instruction,
    "code": code_instruction,
}


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=INSTRUCTION_SCHEMA)
