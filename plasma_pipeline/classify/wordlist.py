"""Offensive-term word lists: loading, combining and counting hits.

Text and terms are split into lower-case word tokens (`\\w+`, so "g-spot" is the 2-token term ("g", "spot")), and a
hit is a run of consecutive tokens equal to a term. Whole tokens only: "ass" hits "ass" but not "class".

Languages. A document is matched against the list of its own detected language only (`LanguageWordlists`):
the English list finds "dick" in a Spanish summary of Philip K. Dick and nothing in a French insult. Languages are
lid.176 labels (`clean.langid.normalize_lang`); a document of unknown language (no `lang`) and a code file
(`lang` "code": comments and names are mostly English) use the English list. Per-language lists come from LDNOOBW
(npm naughty-words, one `<code>.json` per language: `naughty_words_files`). Languages written without spaces
(`UNSPACED_LANGS`: ja, zh, th, ...) get no list: whole-token matching cannot find a term inside a run of
characters, so their LDNOOBW files would only look like coverage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from plasma_pipeline.clean.langid import LID176_LABELS, UNSPACED_LANGS, normalize_lang

_TOKEN = re.compile(r"\w+")

# Names accepted in a config's `wordlists` besides file paths.
BUILTIN_LISTS = ("better_profanity",)
# Document languages matched with another language's list: code files with the English one.
WORDLIST_LANG_ALIASES = {"code": "en"}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def resolve_wordlist_path(name: str) -> Path:
    """A file path, or a built-in name: "better_profanity" is that package's profanity_wordlist.txt."""
    if name == "better_profanity":
        import importlib.util

        spec = importlib.util.find_spec("better_profanity")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("word list 'better_profanity': the better-profanity package is not installed")
        return Path(spec.submodule_search_locations[0]) / "profanity_wordlist.txt"
    path = Path(name)
    if not path.is_absolute() and not path.exists():
        repo_root = Path(__file__).resolve().parents[2]
        if (repo_root / path).exists():
            path = repo_root / path
    if not path.exists():
        raise FileNotFoundError(
            f"word list {name!r}: no such file (offline sources come from scripts/fetch_sources.py)"
        )
    return path


def read_terms(name: str) -> list[str]:
    """Terms of one list: a JSON array of strings, or a text file with one term per line ('#' comments allowed)."""
    path = resolve_wordlist_path(name)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise ValueError(f"word list {name!r}: expected a JSON array of strings")
        raw = data
    else:
        raw = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [t.strip() for t in raw if t.strip()]


@dataclass(frozen=True)
class Wordlist:
    """A set of terms, each a tuple of tokens; picklable, so it can be shipped to worker processes."""

    terms: frozenset[tuple[str, ...]]
    # First token -> lengths of the terms starting with it (longest first): one dict lookup per text token.
    _by_first: dict = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        by_first: dict[str, set[int]] = {}
        for t in self.terms:
            by_first.setdefault(t[0], set()).add(len(t))
        object.__setattr__(self, "_by_first", {k: sorted(v, reverse=True) for k, v in by_first.items()})

    @classmethod
    def from_terms(cls, terms: Iterable[str]) -> Wordlist:
        return cls(frozenset(t for t in (tuple(tokens(s)) for s in terms) if t))

    @classmethod
    def load(cls, path: str | Path) -> Wordlist:
        return cls.from_terms(read_terms(str(path)))

    def save(self, path: Path) -> None:
        path.write_text("".join(" ".join(t) + "\n" for t in sorted(self.terms)), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.terms)

    def find(self, text: str) -> list[str]:
        """Every hit in `text`, in order, as the matched term (overlapping multi-word hits all count)."""
        return self.find_tokens(tokens(text))

    def find_tokens(self, toks: list[str]) -> list[str]:
        """`find` on text already split by `tokens`."""
        by_first = self._by_first
        if not toks or not by_first.keys() & toks:
            return []
        hits = []
        for i, tok in enumerate(toks):
            lengths = by_first.get(tok)
            if lengths is None:
                continue
            for n in lengths:
                if n == 1:
                    hits.append(tok)
                elif i + n <= len(toks):
                    t = tuple(toks[i : i + n])
                    if t in self.terms:
                        hits.append(" ".join(t))
        return hits

    def count(self, text: str) -> int:
        return len(self.find(text))

    def __contains__(self, term: str) -> bool:
        return tuple(tokens(term)) in self.terms


def naughty_words_files(folder: str | Path) -> dict[str, Path]:
    """{lid.176 label: file} for the LDNOOBW lists in `folder` (npm naughty-words): `fr.json` -> "fr",
    `fil.json` -> "tl"; a regional variant (`fr-CA-u-sd-caqc.json`) only when the plain language has no file, and
    files of languages lid.176 does not know (`kab`, `tlh`, `package.json`) are left out."""
    base = resolve_wordlist_path(str(folder))
    out: dict[str, Path] = {}
    for path in sorted(base.glob("*.json"), key=lambda p: (len(p.stem), p.stem)):  # plain codes before variants
        try:
            lang = normalize_lang(path.stem, LID176_LABELS)
        except ValueError:
            continue
        out.setdefault(lang, path)
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class LanguageWordlists:
    """A word list per language (lid.176 labels; "en" is the English one); picklable like `Wordlist`."""

    by_lang: dict[str, Wordlist]

    def __post_init__(self):
        by_lang = {}
        for lang, wl in self.by_lang.items():
            code = normalize_lang(lang, LID176_LABELS)
            if code not in UNSPACED_LANGS:
                by_lang[code] = wl
        object.__setattr__(self, "by_lang", dict(sorted(by_lang.items())))

    @classmethod
    def english(cls, wl: Wordlist) -> LanguageWordlists:
        return cls({"en": wl})

    def for_lang(self, lang: str | None) -> Wordlist | None:
        """The list for a document detected as `lang`: its own language's, the English one for an unknown
        language or a code file, None when its language has no list."""
        key = WORDLIST_LANG_ALIASES.get(lang or "en", lang or "en")
        wl = self.by_lang.get(key)
        if wl is None and key not in self.by_lang:
            try:
                wl = self.by_lang.get(normalize_lang(key, LID176_LABELS))
            except ValueError:
                wl = None
        return wl

    def langs(self) -> list[str]:
        return list(self.by_lang)
