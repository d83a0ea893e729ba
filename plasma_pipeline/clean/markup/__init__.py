"""The docs profile's converter: Markdown (CommonMark / GFM / MyST) and reStructuredText (docutils / Sphinx)
sources to prose, with plain line-state parsing and regular expressions (no parser dependency).

`docs_to_blocks(text, fmt)` returns the document as blocks, in order: (kind, text) with kind "prose" for a paragraph
(admonition, footnote, block quote), "heading", "item" (list item, definition term, field, line-block line),
"row" (table row) or "lead" (a paragraph ending with ":" before code, a list or a table), each reflowed to one
line (the source's hard wrapping is dropped, as a browser would render it), and "code" for a code block,
verbatim but for its common indentation. Headings, items, rows and leads are `STRUCTURE`: the docs profile keeps
them out of C4's line rules.

What becomes of the markup:

- headings (ATX `#`, setext and reST under/overlines) -> the title as its own paragraph; transitions and
  horizontal rules, front matter, HTML comments, link / substitution / footnote targets, reST comments -> nothing.
- inline: links -> their text (`[text](url)`, `[text][ref]`, `[ref]`, `` `text <url>`_ ``, `` `ref`_ ``, `word_`),
  images -> nothing,
  emphasis / strong -> the words, struck-through text -> nothing, inline code -> its text, roles -> their text (`:func:`~a.b`` -> "b",
  `:ref:`title <label>`` -> "title", `:pep:`8`` -> "PEP 8", MyST `{role}`text``), footnote references -> nothing,
  inline HTML tags -> nothing (entities decoded), backslash escapes -> the character.
- lists, definition lists, field lists, line blocks -> one item per entry, markers dropped; block quotes -> prose;
  Markdown list items that are only links to anchors of the page (a table of contents) -> nothing.
- tables (grid, simple, GFM pipe, csv-table, list-table) -> one row per table row, cells joined by "; ".
- reST directives: code (`code-block`, `code`, `sourcecode`, `doctest`, `testcode`, `testoutput`, literal `::`
  blocks, `>>>` doctest blocks, object signatures of `function` / `class` / `method` / ...) -> code blocks;
  admonitions (`note`, `warning`, `seealso`, ...) -> their text as prose; `versionadded:: 3.2` -> "Added in
  version 3.2." (and its text); titled directives (`topic`, `sidebar`, `admonition`, `rubric`) -> the title as a
  heading and their content; containers (`only`, `container`, `tabs`, `tab`, `glossary`, ...), `figure` (its
  caption) and directives it does not know (Sphinx extensions) -> their content, their argument dropped;
  structural directives (`toctree`, `contents`, `index`, `module`, `image`, `include`, `raw`, `math`,
  `autosummary`, `testsetup`, ...) and substitution definitions (badges) -> nothing. Options (`:linenos:`) are
  dropped. MyST ```` ```{name} ```` and `:::{name}` fences are read as the same directives, `{eval-rst}` as reST.
- Markdown code: fenced (``` / ~~~) and indented blocks -> code blocks.

Layout: `markup/__init__.py` (format detection and `docs_to_blocks`), `common.py` (what both formats share:
indentation, inline placeholders, roles, tables), `rst.py` (reStructuredText and Sphinx directives),
`markdown.py` (CommonMark, GFM tables, MyST directives and roles).
"""

from __future__ import annotations

import json
import re

from plasma_pipeline.clean.markup.common import PRIVATE_RE, STRUCTURE, Block
from plasma_pipeline.clean.markup.markdown import Markdown
from plasma_pipeline.clean.markup.rst import Rst

__all__ = ["FORMATS", "STRUCTURE", "Block", "docs_format", "docs_to_blocks"]

FORMATS = ("markdown", "rst")

_MD_EXT = (".md", ".markdown", ".mdown", ".mkd", ".mdx", ".qmd")
_RST_EXT = (".rst", ".rest", ".rst.txt")
_META_FORMATS = {
    "markdown": "markdown", "md": "markdown", "gfm": "markdown", "commonmark": "markdown", "myst": "markdown",
    "text/markdown": "markdown", "rst": "rst", "rest": "rst", "restructuredtext": "rst", "text/x-rst": "rst",
}


_RST_SIGNAL_RE = re.compile(r"^\.\. [\w:-]+::|^\.\. _|::$|^:\w+:`|^(?:={3,}|-{3,}|~{3,}|\^{3,})$|`_\b|\w`_", re.M)
_MD_SIGNAL_RE = re.compile(r"^#{1,6} \S|^```|^~~~|\]\([^)\s]*\)|^\s*[-*] \[[ xX]\] |^\|.*\|$|\*\*\w", re.M)


def docs_format(text: str, meta: str | None, setting: str = "auto") -> str:
    """"markdown" or "rst": the setting, else meta's format or file extension, else whichever markup the text
    shows more of (Markdown on a tie)."""
    if setting in FORMATS:
        return setting
    if meta:
        try:
            m = json.loads(meta)
        except ValueError:
            m = None
        if isinstance(m, dict):
            for key in ("format", "content_type", "mime", "doc_format", "markup"):
                value = m.get(key)
                if isinstance(value, str) and value.lower() in _META_FORMATS:
                    return _META_FORMATS[value.lower()]
            for key in ("file", "path", "name", "url", "filename"):
                value = m.get(key)
                if isinstance(value, str):
                    low = value.lower().removesuffix(".gz")
                    if low.endswith(_MD_EXT):
                        return "markdown"
                    if low.endswith(_RST_EXT):
                        return "rst"
    head = text[:20_000]
    return "rst" if len(_RST_SIGNAL_RE.findall(head)) > len(_MD_SIGNAL_RE.findall(head)) else "markdown"


def docs_to_blocks(text: str, fmt: str) -> list[Block]:
    """The blocks of a Markdown (`fmt="markdown"`) or reStructuredText (`"rst"`) document."""
    text = PRIVATE_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = text.split("\n")
    out: list[Block] = []
    if fmt == "rst":
        rst = Rst(out)
        rst.prescan(lines)
        rst.parse(lines)
    else:
        md = Markdown(out)
        md.prescan(lines)
        md.parse(lines)
    blocks = [(kind, t) for kind, t in out if t.strip()]
    for k in range(len(blocks) - 1):  # "For example:" before code, a list or a table leads into it
        if blocks[k][0] == "prose" and blocks[k][1].endswith(":") and blocks[k + 1][0] in ("code", "item", "row"):
            blocks[k] = ("lead", blocks[k][1])
    return blocks
