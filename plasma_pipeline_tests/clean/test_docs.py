"""The docs profile: Markdown and reStructuredText sources become prose, kept whole; code blocks are kept verbatim
or dropped (`docs_code_blocks`); language ID and the prose rules judge the prose.

Corpora: two sources written here in the styles of the Python docs (Sphinx reST) and of a project README (GFM +
MyST); the local Sphinx / Markdown doc folders when the machine has them; the installed packages' long
descriptions (PyPI READMEs in Markdown and reST, from the venv's *.dist-info/METADATA).
"""

from __future__ import annotations

import email
import gzip
import json
import re
import sysconfig
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from plasma_pipeline.clean import CleanConfig, clean_table
from plasma_pipeline.clean.markup import docs_format, docs_to_blocks
from plasma_pipeline.clean.normalize import normalize_text
from plasma_pipeline.schema import DOC_SCHEMA

DOCS = CleanConfig(profile="docs")
LOCAL_DOC_FOLDERS = [
    Path("/usr/share/doc/python3.11/html/_sources"),  # python3.11-doc: the Python docs' reST sources
    Path("/usr/share/doc/python3-pip/html"),  # pip's Sphinx sources (MyST Markdown and reST)
    Path("/usr/share/doc/python3-setuptools"),
]

# Markup that must not survive into the prose: reST directives, roles, literals, targets, references, tables,
# title adornments; Markdown headings, fences, links, images, emphasis, HTML comments and tags, reference
# definitions.
LEFTOVERS = {
    "directive": r"(?m)^\.\. ",
    "role": r":[a-z]+:`",
    "rst_literal": r"``\w",
    "rst_link": r"`_\b|`__\b",
    "footnote_ref": r"\]_",
    "substitution": r"\|version\|",
    "grid_table": r"\+-{3,}\+|\+={3,}\+",
    "adornment": r"(?m)^[=\-~^*#]{4,}$",
    "md_heading": r"(?m)^#{1,6} ",
    "fence": r"(?m)^(?:```|~~~|:::)",
    "md_link": r"\]\((?:https?:|#|\.)",
    "image": r"!\[",
    "strong": r"\*\*\w[^*\n]{0,80}\*\*",
    "html": r"<!--|<p\b|<img\b|<br\b|<div\b",
    "refdef": r"(?m)^\[[^\]]+\]: *(?:https?://|/|#)",
    "myst": r"\{(?:note|ref|warning|versionadded)\}",
}

PYDOCS_RST = """\
:mod:`!json` --- JSON encoder and decoder
=========================================

.. module:: json
   :synopsis: Encode and decode the JSON format.

.. moduleauthor:: Bob Ippolito <bob@redivi.com>
.. sectionauthor:: Bob Ippolito <bob@redivi.com>

**Source code:** :source:`Lib/json/__init__.py`

.. index:: single: JavaScript Object Notation

--------------

`JSON (JavaScript Object Notation) <https://json.org>`_, specified by
:rfc:`7159` (which obsoletes :rfc:`4627`) and by `ECMA-404
<https://ecma-international.org/publications-and-standards/standards/ecma-404/>`_,
is a lightweight data interchange format inspired by
`JavaScript <https://en.wikipedia.org/wiki/JavaScript>`_ object literal syntax
(although it is not a strict subset of JavaScript [#rfc-errata]_ ).

.. warning::
   Be cautious when parsing JSON data from untrusted sources. A malicious
   JSON string may cause the decoder to consume considerable CPU and memory
   resources. Limiting the size of data to be parsed is recommended.

:mod:`json` exposes an API familiar to users of the standard library
:mod:`marshal` and :mod:`pickle` modules.

Encoding basic Python object hierarchies::

    >>> import json
    >>> json.dumps(['foo', {'bar': ('baz', None, 1.0, 2)}])
    '["foo", {"bar": ["baz", null, 1.0, 2]}]'

Compact encoding:

.. code-block:: pycon

   >>> import json
   >>> json.dumps([1, 2, 3, {'4': 5, '6': 7}], separators=(',', ':'))
   '[1,2,3,{"4":5,"6":7}]'

.. note::

   JSON is a subset of `YAML <https://yaml.org/>`_ 1.2.  The JSON produced by
   this module's default settings (in particular, the default *separators*
   value) is also a subset of YAML 1.0 and 1.1.  This module can thus also be
   used as a YAML serializer.

.. toctree::
   :maxdepth: 1

   json-tool

Basic Usage
-----------

.. function:: dump(obj, fp, *, skipkeys=False, ensure_ascii=True, \\
                   check_circular=True, allow_nan=True, cls=None, \\
                   indent=None, separators=None, default=None, \\
                   sort_keys=False, **kw)

   Serialize *obj* as a JSON formatted stream to *fp* (a ``.write()``-supporting
   :term:`file-like object`) using this :ref:`conversion table
   <py-to-json-table>`.

   If *skipkeys* is true (default: ``False``), then dict keys that are not
   of a basic type (:class:`str`, :class:`int`, :class:`float`, :class:`bool`,
   ``None``) will be skipped instead of raising a :exc:`TypeError`.

   .. versionchanged:: 3.6
      All optional parameters are now :ref:`keyword-only <keyword-only_parameter>`.

   .. note::

      Unlike :mod:`pickle` and :mod:`marshal`, JSON is not a framed protocol,
      so trying to serialize multiple objects with repeated calls to
      :func:`dump` using the same *fp* will result in an invalid JSON file.

.. _py-to-json-table:

Performs the following translations in encoding:

+----------------------------------------+---------------+
| Python                                 | JSON          |
+========================================+===============+
| dict                                   | object        |
+----------------------------------------+---------------+
| list, tuple                            | array         |
+----------------------------------------+---------------+
| str                                    | string        |
+----------------------------------------+---------------+

Simple tables work as well:

=====  =====  =======
A      B      A and B
=====  =====  =======
False  False  False
True   False  False
=====  =====  =======

.. versionadded:: 3.5
   The *sort_keys* argument keeps the output stable between runs.

.. rubric:: Footnotes

.. [#rfc-errata] As noted in `the errata for RFC 7159
   <https://www.rfc-editor.org/errata_search.php?rfc=7159>`_,
   JSON permits literal U+2028 (LINE SEPARATOR) characters in strings.

.. |version| replace:: 3.12
.. This is a comment that no reader ever sees,
   and it goes on for a second line.
"""

README_MD = """\
---
title: Tiny Parser
tags: [parsing, json]
---

<p align="center"><img src="logo.png" width="120" alt="logo"></p>

# Tiny Parser

[![PyPI](https://img.shields.io/pypi/v/tiny.svg)](https://pypi.org/project/tiny/) [![CI](https://github.com/x/tiny/actions/workflows/ci.yml/badge.svg)](https://github.com/x/tiny/actions)

<!-- This README is generated from docs/index.md; edit that file instead. -->

**Tiny Parser** is a small, _dependency-free_ library that reads JSON documents and reports every
syntax error with its line and column. It is written for people who need clear messages more
than raw speed, and it keeps the whole parser in one readable module.

## Contents

- [Installation](#installation)
- [Usage](#usage)
- [Options](#options)

## Installation

Install it from PyPI with `pip`, preferably inside a virtual environment:

```bash
python -m pip install tiny-parser
```

> **Note:** the package needs Python 3.9 or newer. Older versions are not tested and will
> not be supported.

## Usage

Call `parse()` on a string. The function returns plain Python objects, so the result can be
used like the output of the standard library's [`json.loads`](https://docs.python.org/3/library/json.html#json.loads).

```python
from tiny import parse

data = parse('{"name": "tiny", "size": 1}')
print(data["name"])
```

Errors raise `ParseError`, whose message names the position ~~in bytes~~ in characters:

    ParseError: expected ',' at line 1, column 14

## Options

| Option        | Default | Meaning                                  |
|---------------|:-------:|------------------------------------------|
| `strict`      | `True`  | Reject trailing commas and comments.     |
| `max_depth`   | `100`   | Refuse documents nested deeper than this. |

1. Options are keyword-only arguments.
2. Unknown options raise a `TypeError` at once, so a typo never goes unnoticed.

```{note}
The parser never evaluates code. It only ever builds dicts, lists, strings,
numbers, booleans and None from the text it is given.
```

See the {ref}`changelog <changes>` for what changed in each release[^1].

[^1]: Releases follow semantic versioning since version 1.0.

[changes]: https://example.com/changes
"""


# Markup of one format is literal text in the other, which the cleaner rightly keeps: a line opening with ".. "
# is a reST directive or comment but an ellipsis in Markdown; "[text](https://...)" and "# " are Markdown only.
ONLY_IN = {"directive": "rst", "md_link": "markdown", "image": "markdown", "md_heading": "markdown",
           "refdef": "markdown"}


def leftovers(text: str, fmt: str | None = None) -> dict[str, list[str]]:
    """Markup left in `text`; with `fmt`, only the markup of that format."""
    pats = {k: v for k, v in LEFTOVERS.items() if fmt is None or ONLY_IN.get(k, fmt) == fmt}
    found = {name: re.findall(pat, text) for name, pat in pats.items()}
    return {k: v for k, v in found.items() if v}


def docs_table(named: list[tuple[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"id": name, "text": text, "source": "docs", "url": None, "meta": json.dumps({"format": "text", "file": name})}
            for name, text in named
        ],
        schema=DOC_SCHEMA,
    )


def prose_of(blocks) -> list[str]:
    return [t for kind, t in blocks if kind != "code"]


def codes_of(blocks) -> list[str]:
    return [t for kind, t in blocks if kind == "code"]


# --- conversion ---------------------------------------------------------------------------------------------
def test_rst_directives_roles_tables_become_prose():
    blocks = docs_to_blocks(PYDOCS_RST, "rst")
    prose = prose_of(blocks)
    text = "\n".join(prose)
    assert leftovers(text) == {}
    assert prose[0] == "json --- JSON encoder and decoder"  # the title, role and adornment gone
    assert (
        "JSON (JavaScript Object Notation), specified by RFC 7159 (which obsoletes RFC 4627) and by ECMA-404, is a "
        "lightweight data interchange format inspired by JavaScript object literal syntax (although it is not a "
        "strict subset of JavaScript)."
    ) in prose  # links to their text, :rfc: to "RFC n", the footnote reference dropped, the wrapping undone
    assert prose[prose.index("Basic Usage") + 1] == (
        "Serialize obj as a JSON formatted stream to fp (a .write()-supporting file-like object) using this "
        "conversion table."
    )
    assert "Changed in version 3.6: All optional parameters are now keyword-only." in prose
    assert "Added in version 3.5: The sort_keys argument keeps the output stable between runs." in prose
    assert prose[0:1] + [p for p in prose if p.startswith("Be cautious")] == [
        "json --- JSON encoder and decoder",
        "Be cautious when parsing JSON data from untrusted sources. A malicious JSON string may cause the decoder "
        "to consume considerable CPU and memory resources. Limiting the size of data to be parsed is recommended.",
    ]  # the warning's text
    rows = [t for kind, t in blocks if kind == "row"]
    assert rows == ["Python; JSON", "dict; object", "list, tuple; array", "str; string",
                    "A; B; A and B", "False; False; False", "True; False; False"]
    assert "As noted in the errata for RFC 7159, JSON permits literal U+2028 (LINE SEPARATOR) characters in strings." in prose
    for gone in ("Encode and decode the JSON format", "Bob Ippolito", "json-tool", "single:", "comment", "maxdepth"):
        assert gone not in text, gone  # module options, authors, toctree, index entries, comments
    codes = codes_of(blocks)
    assert codes[0] == (
        ">>> import json\n>>> json.dumps(['foo', {'bar': ('baz', None, 1.0, 2)}])\n'[\"foo\", {\"bar\": [\"baz\", null, 1.0, 2]}]'"
    )  # the literal block after "::", verbatim
    assert codes[2].startswith("dump(obj, fp, *, skipkeys=False")  # the function signature is code
    assert [t for kind, t in blocks if kind == "lead"][0] == "Encoding basic Python object hierarchies:"  # "::" -> ":"


def test_markdown_links_emphasis_tables_become_prose():
    blocks = docs_to_blocks(README_MD, "markdown")
    prose = prose_of(blocks)
    text = "\n".join(prose)
    assert leftovers(text) == {}
    assert prose[:2] == [
        "Tiny Parser",
        "Tiny Parser is a small, dependency-free library that reads JSON documents and reports every syntax error "
        "with its line and column. It is written for people who need clear messages more than raw speed, and it "
        "keeps the whole parser in one readable module.",
    ]  # front matter, logo, badges and the HTML comment gone; emphasis undone
    assert "Call parse() on a string. The function returns plain Python objects, so the result can be used like "
    "the output of the standard library's json.loads." in prose
    assert "Errors raise ParseError, whose message names the position in characters:" in prose  # ~~struck~~ gone
    assert "Note: the package needs Python 3.9 or newer. Older versions are not tested and will not be supported." in prose
    assert [t for kind, t in blocks if kind == "row"] == [
        "Option; Default; Meaning",
        "strict; True; Reject trailing commas and comments.",
        "max_depth; 100; Refuse documents nested deeper than this.",
    ]
    assert "Unknown options raise a TypeError at once, so a typo never goes unnoticed." in prose
    assert "The parser never evaluates code. It only ever builds dicts, lists, strings, numbers, booleans and None "
    "from the text it is given." in prose  # the MyST note's text
    assert "See the changelog for what changed in each release." in prose  # MyST role, footnote reference
    assert "Releases follow semantic versioning since version 1.0." in prose  # the footnote itself
    for gone in ("tags", "PyPI]", "shields", "generated from", "(#installation)", "example.com"):
        assert gone not in text, gone
    assert "Installation" in prose and "- [Installation]" not in text  # the heading stays, the table of contents goes
    assert codes_of(blocks) == [
        "python -m pip install tiny-parser",
        'from tiny import parse\n\ndata = parse(\'{"name": "tiny", "size": 1}\')\nprint(data["name"])',
        "ParseError: expected ',' at line 1, column 14",  # an indented code block
    ]


def test_format_detection():
    assert docs_format(README_MD, json.dumps({"file": "docs/README.md"})) == "markdown"
    assert docs_format(README_MD, json.dumps({"file": "x/intro.rst.txt"})) == "rst"  # the extension wins
    assert docs_format(PYDOCS_RST, json.dumps({"path": "library/json.rst.gz"})) == "rst"
    assert docs_format(PYDOCS_RST, json.dumps({"format": "markdown"})) == "markdown"
    assert docs_format(PYDOCS_RST, None) == "rst" and docs_format(README_MD, None) == "markdown"  # sniffed
    assert docs_format(README_MD, None, "rst") == "rst"  # the setting wins
    with pytest.raises(ValueError, match="docs_format"):
        CleanConfig(profile="docs", docs_format="asciidoc")
    with pytest.raises(ValueError, match="docs_code_blocks"):
        CleanConfig(profile="docs", docs_code_blocks="strip")


# --- the docs profile in clean_table --------------------------------------------------------------------------
def _expected(text: str, fmt: str, code: bool = True, c4: bool = False) -> str:
    """The converted document; with `c4`, less the paragraphs C4 cuts (no terminal punctuation)."""
    blocks = docs_to_blocks(text, fmt)
    if c4:
        blocks = [(k, t) for k, t in blocks if k != "prose" or t.endswith((".", "!", "?", '"', "'"))]
    return "\n\n".join(t if kind == "code" else normalize_text(t) for kind, t in blocks if code or kind != "code")


def test_documents_come_out_whole(wiki_fr):
    fr = "# Une page\n\n" + "\n\n".join(v["extract"] for v in list(wiki_fr.values())[:30] if len(v["extract"]) > 400)
    table = docs_table([("library/json.rst", PYDOCS_RST), ("README.md", README_MD), ("fr/index.md", fr)])
    stats: Counter = Counter()
    out = clean_table(table, DOCS, stats)
    kept = dict(zip(out.column("id").to_pylist(), out.column("text").to_pylist()))
    assert set(kept) == {"library/json.rst", "README.md"}  # the French page: dropped by language ID
    assert stats["dropped/lang"] == 1 and set(out.column("lang").to_pylist()) == {"en"}
    # Whole: every heading, list item, table row, lead-in, paragraph and code block, in order; C4 judges only the
    # paragraphs, and cuts just the one without terminal punctuation ("Source code: Lib/json/__init__.py")
    assert kept["README.md"] == _expected(README_MD, "markdown")
    assert kept["library/json.rst"] == _expected(PYDOCS_RST, "rst", c4=True)
    assert _expected(PYDOCS_RST, "rst", c4=True) != _expected(PYDOCS_RST, "rst")
    assert {k: v for k, v in stats.items() if k.startswith("chars_removed/c4_")} == {
        "chars_removed/c4_no_terminal_punct": len("Source code: Lib/json/__init__.py")
    }
    lost = sum(v for k, v in stats.items() if k.startswith(("chars_dropped/", "chars_removed/")))
    assert stats["chars_in"] == stats["chars_kept"] + lost
    assert stats["chars_removed/markup"] > 0 and stats["modified/docs_converted"] == 3


def test_code_blocks_can_be_dropped():
    stats: Counter = Counter()
    cfg = CleanConfig(profile="docs", docs_code_blocks="drop")
    out = clean_table(docs_table([("README.md", README_MD)]), cfg, stats)
    text = out.column("text")[0].as_py()
    assert text == _expected(README_MD, "markdown", code=False)
    assert "Install it from PyPI with pip, preferably inside a virtual environment:" in text  # the lead-in stays...
    assert "python -m pip install" not in text and "print(data" not in text  # ...the code goes
    assert stats["chars_removed/docs_code_blocks"] == sum(len(c) + 2 for c in codes_of(docs_to_blocks(README_MD, "markdown")))


def test_structure_is_kept_where_web_line_rules_would_cut_it(long_en_extracts):
    paras = [" ".join(p.split()) for p in long_en_extracts[:4]]
    doc = "\n".join(
        ["Overview", "========", "", *(p + "\n" for p in paras), "Features:", "", "* Fast parsing", "* Clear errors",
         "* No dependencies", "", "=====  ======", "Name   Status", "=====  ======", "alpha  stable", "=====  ======"]
    )
    out = clean_table(docs_table([("features.rst", doc)]), DOCS, Counter()).column("text")[0].as_py()
    assert out.split("\n\n") == [
        "Overview", *paras, "Features:", "Fast parsing", "Clear errors", "No dependencies", "Name; Status",
        "alpha; stable",
    ]
    # the same lines as plain prose: C4 takes the heading, the lead-in, the items and the rows for web boilerplate
    stats: Counter = Counter()
    prose = clean_table(docs_table([("features.txt", out)]), CleanConfig(), stats)
    assert prose.column("text")[0].as_py() == "\n\n".join(paras) and stats["c4_lines/no_terminal_punct"] == 7


# --- real documentation ---------------------------------------------------------------------------------------
def _check_corpus(named: list[tuple[str, str]], min_kept: int) -> None:
    """Every kept document: no markup left in its prose, at least half its prose kept (code blocks aside)."""
    table = docs_table(named)
    cfg = CleanConfig(profile="docs", docs_code_blocks="drop")
    out = clean_table(table, cfg, Counter())
    assert out.num_rows >= min_kept
    raw = dict(named)
    shares = []
    for name, text in zip(out.column("id").to_pylist(), out.column("text").to_pylist()):
        fmt = docs_format(raw[name], json.dumps({"file": name}))
        assert leftovers(text, fmt) == {}, (name, leftovers(text, fmt))
        converted = _expected(raw[name], fmt, code=False)
        shares.append(len(text) / len(converted))
    assert min(shares) >= 0.5
    assert sorted(shares)[len(shares) // 2] > 0.9


def _read(path: Path) -> str:
    return gzip.open(path, "rt", encoding="utf-8").read() if path.suffix == ".gz" else path.read_text("utf-8")


@pytest.mark.parametrize("folder", LOCAL_DOC_FOLDERS, ids=lambda p: p.name)
def test_local_documentation_folder(folder):
    if not folder.is_dir():
        pytest.skip(f"{folder} is not on this machine")
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name.removesuffix(".gz").endswith((".rst", ".md", ".rst.txt"))]
    named = [(p.relative_to(folder).as_posix().removesuffix(".gz"), _read(p)) for p in files[:300]]
    _check_corpus(named, min_kept=max(1, len(named) // 5))


def test_installed_package_readmes():
    """PyPI long descriptions of the venv's packages: real READMEs in Markdown and reST."""
    named = []
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).glob("*.dist-info/METADATA")):
        msg = email.message_from_string(path.read_text("utf-8", "replace"))
        kind = (msg.get("Description-Content-Type") or "").lower()
        body = msg.get_payload()
        ext = ".md" if "markdown" in kind else ".rst" if "rst" in kind else None
        if ext and isinstance(body, str) and len(body) > 1000:
            named.append((path.parent.name + "/README" + ext, body))
    assert sum(n.endswith(".md") for n, _ in named) >= 10 and sum(n.endswith(".rst") for n, _ in named) >= 5
    _check_corpus(named, min_kept=len(named) // 2)
