"""What the Markdown and reStructuredText readers share: indentation, inline placeholders, roles and tables."""

from __future__ import annotations

import html
import re

# (kind, text): kind is "prose" (a paragraph), "heading", "item" (list item, definition term, field, line of a
# line block), "row" (table row), "lead" (a paragraph ending with ":" that introduces code, a list or a table) or
# "code"
Block = tuple[str, str]
STRUCTURE = ("heading", "item", "row", "lead")

# Private-use characters are removed from the input: U+E001 / U+E002 delimit inline placeholders here, and U+E000
# is the mark the stage puts on structure and code blocks for C4 (rules.c4.PROTECT).
PRIVATE_RE = re.compile("[\ue000-\ue0ff]")
_WS_RE = re.compile(r"\s+")
HTML_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)", re.S)
HTML_TAG_RE = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>")
_ENTITY_RE = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_PLACEHOLDER_RE = re.compile("\ue001(\\d+)\ue002")


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t")) if "\t" not in line else len(line.expandtabs(8)) - len(line.lstrip())


def blank(line: str) -> bool:
    return not line.strip()


def dedent(lines: list[str]) -> list[str]:
    """Remove the common indentation (tabs count as 8 columns); blank lines become empty."""
    lines = [ln.expandtabs(8) if "\t" in ln[: len(ln) - len(ln.lstrip())] else ln for ln in lines]
    widths = [len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()]
    cut = min(widths) if widths else 0
    return [ln[cut:] if ln.strip() else "" for ln in lines]


def trim_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and blank(lines[start]):
        start += 1
    while end > start and blank(lines[end - 1]):
        end -= 1
    return lines[start:end]


_PROMPTS = ("$ ", ">>> ", "C:\\>", "PS>", "PS C:", "(venv) $", "(.venv) $")


def is_session(lines: list[str]) -> bool:
    """A shell or REPL session: its first non-blank line opens with a prompt ("$ pip install", ">>> import")."""
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    return first.startswith(_PROMPTS)


def code_text(lines: list[str]) -> str:
    return "\n".join(ln.rstrip() for ln in trim_blank(dedent(lines)))


_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+(?=[,.;:!?)\]](?!\w))")


def finish_inline(s: str, saved: list[str]) -> str:
    if " " in s:  # the space left where markup was removed ("JavaScript [#note]_ )"), outside inline code
        s = _SPACE_BEFORE_PUNCT_RE.sub("", s)
    if saved:
        s = _PLACEHOLDER_RE.sub(lambda m: saved[int(m.group(1))], s)
    if "&" in s and _ENTITY_RE.search(s):
        s = html.unescape(s)
    return _WS_RE.sub(" ", s).strip()


def save(saved: list[str], text: str) -> str:
    saved.append(text)
    return f"\ue001{len(saved) - 1}\ue002"


# ---------------------------------------------------------------------------------------------------------------
# Roles (reST and MyST)
# ---------------------------------------------------------------------------------------------------------------
_TITLE_TARGET_RE = re.compile(r"^(.*?)\s*<([^<>]*)>$", re.S)


def role_text(role: str, body: str) -> str:
    role = role.rsplit(":", 1)[-1].lower()
    body = body.replace("\\", "")
    m = _TITLE_TARGET_RE.match(body)
    if m and m.group(1):
        return m.group(1)
    if m:
        body = m.group(2)
    if role == "pep":
        return "PEP " + body.split("#", 1)[0]
    if role == "rfc":
        return "RFC " + body.split("#", 1)[0]
    if role in ("doc", "ref", "term", "any", "numref", "keyword", "option", "envvar", "token") and "/" in body:
        body = body.rstrip("/").rsplit("/", 1)[-1]
    if role in ("doc", "ref", "numref"):
        return body.replace("-", " ").replace("_", " ")
    if role == "abbr":
        return body.split(" (", 1)[0]
    if role in ("guilabel", "menuselection"):
        return body.replace("&&", "\0").replace("&", "").replace("\0", "&").replace("-->", ">")
    if body.startswith("!"):
        body = body[1:]
    if body.startswith("~"):
        body = body[1:]
        tail = body.rsplit(".", 1)[-1]
        return tail
    return body


# ---------------------------------------------------------------------------------------------------------------
# Tables (shared by both formats)
# ---------------------------------------------------------------------------------------------------------------
GRID_BORDER_RE = re.compile(r"^\s*\+(?:[-=:]+\+)+\s*$")
SIMPLE_BORDER_RE = re.compile(r"^\s*=+(?:\s+=+)+\s*$")
_SIMPLE_DASHES_RE = re.compile(r"^\s*-+(?:\s+-+)*\s*$")
PIPE_DELIM_RE = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")


def join_cells(cells: list[str]) -> str:
    return "; ".join(c for c in cells if c)


def grid_table(lines: list[str], i: int) -> tuple[list[list[str]], int]:
    """Rows (raw cell texts) of the grid table starting at border line i; the index after it."""
    rows: list[list[str]] = []
    cur: list[list[str]] = []
    n = len(lines)
    while i < n and lines[i].strip() and lines[i].lstrip()[0] in "+|":
        line = lines[i].strip()
        if GRID_BORDER_RE.match(line):
            if cur:
                rows.append([" ".join(parts).strip() for parts in cur])
                cur = []
        else:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not cur:
                cur = [[] for _ in cells]
            while len(cur) < len(cells):
                cur.append([])
            for k, c in enumerate(cells):
                if c:
                    cur[k].append(c)
        i += 1
    if cur:
        rows.append([" ".join(parts).strip() for parts in cur])
    return rows, i


def simple_table(lines: list[str], i: int) -> tuple[list[list[str]], int]:
    """Rows of the reST simple table whose top border is line i; the index after its bottom border."""
    border = lines[i]
    starts = [m.start() for m in re.finditer(r"=+", border)]
    rows: list[list[str]] = []
    n = len(lines)
    i += 1
    while i < n:
        line = lines[i]
        if SIMPLE_BORDER_RE.match(line):
            i += 1
            if i >= n or blank(lines[i]):
                break
            continue
        if blank(line) or _SIMPLE_DASHES_RE.match(line):
            i += 1
            continue
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line) + 1])]
        if rows and not cells[0]:  # a blank first column continues the previous row
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
        else:
            rows.append(cells)
        i += 1
    return rows, i


def pipe_cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]
