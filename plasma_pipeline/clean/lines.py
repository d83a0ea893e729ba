"""Lines, paragraphs and the units that line-level rules judge, with hard-wrapped text recognised.

A normalised prose text is paragraphs separated by one blank line ("\\n\\n"), each paragraph one or more
non-empty lines separated by "\\n". Web text (HTML blocks, WET files, wiki summaries) puts a whole paragraph on
one line, and there a line is the natural unit of C4's line rules. Hard-wrapped text (Gutenberg books, reST and
Markdown sources, e-mail, man pages, `textwrap.fill` output) breaks every paragraph into lines of about 60-80
columns, mostly mid-sentence; judging those lines one by one ("does it end with terminal punctuation?") shreds
every paragraph. So the rules judge *units*:

- A **unit** is a run of consecutive lines of one paragraph joined by soft (wrap) breaks; its *logical line* is
  those lines joined by single spaces. In web text every unit is one line, exactly as before.
- A paragraph is **hard-wrapped** when its wrap width `w` — its longest line but the last; for a two-line
  paragraph at least the document's wrap width — is between `MIN_WRAP_WIDTH` and `MAX_WRAP_WIDTH` columns, at
  least half its lines but the last are *full* (the next line's first word would not have fitted:
  `len(a) + 1 + len(first word of b) > w - w // 10`, the greedy-wrap test with 10% slack for hand-wrapped
  text; code and lists fail it), and it is not verse. Verse, even of even width, is a paragraph where most
  lines that end mid-sentence (at least 2) are followed by a line starting with a capital letter; menus and
  lists of headings look the same. Verse keeps one unit per line.
- The break between line `a` and the next line `b` is **hard** when `b` starts a list item (a bullet, "1.",
  "a)") or a speaker's turn ("A:", "HAMLET:" after another turn or a finished sentence). Otherwise it is
  **soft** when
  - `a` ends without terminal punctuation and the paragraph is hard-wrapped: the sentence goes on; or
  - `a` (at least `MIN_CONTINUED` long) ends without terminal punctuation and `b` starts in lower case or `a`
    ends with a comma, whatever the paragraph's width: a stray line break inside a sentence of web text is not a
    boundary, while a list of short items ("cup milk") stays a list; or
  - the paragraph is hard-wrapped and `a` is full (and at least half the width): a line ending a sentence in the
    middle of a wrapped paragraph.
- In wrapped prose a paragraph thus becomes one unit — decisions are made per paragraph; a unit ends early only
  at a short line that ends a sentence ("HAMLET.", "...of stinking mackerel.") — while lists, verse, dialog
  lines and menus keep one unit per line.

A rule that removes a unit removes all its lines; a kept unit keeps its original lines and line breaks, so a
kept paragraph comes out exactly as it went in (only citation marks inside it are cut).
"""

from __future__ import annotations

import re

# Terminal punctuation for C4 / FineWeb line tests: C4's ". ? ! \"" plus "'", curly closing quotes and CJK stops.
TERMINAL_PUNCT = (".", "?", "!", '"', "'", "”", "’", "。", "！", "？", "।", "؟")

MIN_WRAP_WIDTH = 40  # narrower "paragraphs" are lists or menus, never wrapped prose
MIN_CONTINUED = 20  # a shorter line is not taken for the start of a continuing sentence (list items)
MAX_WRAP_WIDTH = 100  # a paragraph holding a longer line (but its last) is not hard-wrapped
_BULLETS = "-*+•·▪●◦‣○■□➢►–—"
# A line that starts a list item (a bullet, or "1." / "1)" / "a)" / "(iv)") or a speaker's turn (up to three
# capitalised words and a colon: "A:", "Q:", "HAMLET:", "Speaker 2:"), followed by a space.
_ITEM_RE = re.compile(
    r"(?:[-*+•·▪●◦‣○■□➢►–—]|\d{1,3}[.)]|[A-Za-z][.)]|\([0-9A-Za-z]{1,4}\)|[A-Z][\w'.-]*(?: [A-Z\d][\w'.-]*){0,2}:)\s"
)


def _is_item(line: str) -> bool:
    c = line[0]  # a cheap pre-test: most lines start with a plain word
    if c in _BULLETS or c.isdigit() or c == "(" or line[1:2] in (".", ")") or (c.isupper() and ":" in line[:60]):
        return _ITEM_RE.match(line) is not None
    return False


def _new_item(a: str, b: str) -> bool:
    """`b` starts a new list item or speaker's turn: always after a bullet; after an enumerator ("1.", "v.",
    "(3)") or a label ("A:") only when `a` is closed (ends a sentence or with a colon, or is an item itself), since
    in wrapped prose such a word may open a line in mid-sentence ("...(see Temp.\nv. 1. 40")."""
    if not _is_item(b):
        return False
    if b[0] in _BULLETS:
        return True
    return a.endswith(TERMINAL_PUNCT) or a.endswith(":") or _is_item(a)


_OPENERS = "[(\"'‘“"  # looked past for a line's first letter ("[To ORLANDO] You to...")


def _is_verse(lines: list[str]) -> bool:
    """Verse, not wrapped prose: most lines that end mid-sentence are followed by a capitalised line (at least 2)."""
    open_ends = capitals = 0
    for a, b in zip(lines, lines[1:]):
        if not a.endswith(TERMINAL_PUNCT):
            open_ends += 1
            capitals += b.lstrip(_OPENERS)[:1].isupper()
    return open_ends >= 2 and capitals * 5 >= open_ends * 3


def doc_wrap_width(paragraphs: list[list[str]]) -> int:
    """The document's wrap width: the 90th percentile length of the lines (but the last) of its multi-line
    paragraphs that are at most MAX_WRAP_WIDTH long; 0 when there are none."""
    widths = sorted(len(ln) for lines in paragraphs if len(lines) > 1 for ln in lines[:-1] if len(ln) <= MAX_WRAP_WIDTH)
    return widths[(len(widths) * 9) // 10] if widths else 0


def _fills(a: str, b: str, fits: int) -> bool:
    """`b`'s first word would not have fitted on `a` (greedy wrapping at `fits` columns)."""
    space = b.find(" ")
    return len(a) + 1 + (len(b) if space < 0 else space) > fits


def _mostly_full(lines: list[str], fits: int) -> bool:
    """At least half the lines but the last are full, as greedy wrapping leaves them (code and lists are not)."""
    full = sum(_fills(a, b, fits) for a, b in zip(lines, lines[1:]))
    return 2 * full >= len(lines) - 1


def line_units(lines: list[str], doc_width: int = 0) -> list[list[str]]:
    """The units of one paragraph (a list of its non-empty lines): runs of lines joined by soft breaks.

    The wrap width is the paragraph's longest line but the last; a two-line paragraph, whose first line alone
    says little, is measured against the document's wrap width (`doc_wrap_width`) when that is wider.
    """
    if len(lines) < 2:
        return [lines]
    width = max(map(len, lines[:-1]))
    if width < MIN_CONTINUED or _is_verse(lines):  # short lines (a list) or verse: nothing to join
        return [[line] for line in lines]
    if len(lines) == 2 and width < doc_width <= MAX_WRAP_WIDTH:
        width = doc_width
    fits = width - width // 10
    if not MIN_WRAP_WIDTH <= width <= MAX_WRAP_WIDTH or not _mostly_full(lines, fits):
        width = 0  # not hard-wrapped: only visibly continuing sentences are joined
    cur = [lines[0]]
    units = [cur]
    a = lines[0]
    for b in lines[1:]:
        if _new_item(a, b):
            soft = False
        elif not a.endswith(TERMINAL_PUNCT) and (
            width or ((b[0].islower() or a.endswith(",")) and len(a) >= MIN_CONTINUED)
        ):
            soft = True  # the sentence continues (in wrapped prose always; elsewhere when it visibly goes on)
        elif width and 2 * len(a) >= width:
            soft = _fills(a, b, fits)  # a full line ending a sentence inside the paragraph
        else:
            soft = False
        if soft:
            cur.append(b)
        else:
            cur = [b]
            units.append(cur)
        a = b
    return units


def paragraph_units(text: str) -> list[list[list[str]]]:
    """Per paragraph (blank-line separated), its units, each a list of physical lines (stripped, none empty)."""
    paragraphs: list[list[str]] = []
    multi = False
    for para in text.split("\n\n"):
        if "\n" not in para:
            para = para.strip()
            if para:
                paragraphs.append([para])
            continue
        lines = [s for s in (line.strip() for line in para.split("\n")) if s]
        if lines:
            paragraphs.append(lines)
            multi = multi or len(lines) > 1
    if not multi:
        return [[lines] for lines in paragraphs]
    doc_width = doc_wrap_width(paragraphs)
    return [line_units(lines, doc_width) for lines in paragraphs]


def logical_lines(text: str) -> tuple[list[str], int]:
    """(logical lines of the text, number of line breaks joined away as soft wrap breaks)."""
    if "\n" not in text:
        return ([text] if text else []), 0
    out: list[str] = []
    joined = 0
    for units in paragraph_units(text):
        for unit in units:
            if len(unit) == 1:
                out.append(unit[0])
            else:
                out.append(" ".join(unit))
                joined += len(unit) - 1
    return out, joined
