"""reStructuredText (docutils and Sphinx) to blocks: one level of indentation at a time, directives by name."""

from __future__ import annotations

import csv
import re

from plasma_pipeline.clean.markup.common import (
    GRID_BORDER_RE,
    SIMPLE_BORDER_RE,
    Block,
    blank,
    code_text,
    dedent,
    finish_inline,
    grid_table,
    indent,
    is_session,
    join_cells,
    role_text,
    save,
    simple_table,
)

_ADORN_RE = re.compile(r"^([=\-~^\"'`#*+._:<>!$%&(),/;?@\[\\\]{|}])\1{2,}\s*$")
_RST_DIRECTIVE_RE = re.compile(r"^\.\.\s+(?:\|([^|]+)\|\s+)?([\w][\w:.+-]*)::(?:\s+(.*))?$")
_RST_SUBST_DEF_RE = re.compile(r"^\s*\.\.\s+\|([^|]+)\|\s+([\w:-]+)::\s*(.*)$")
_RST_TARGET_RE = re.compile(r"^\.\.\s+(?:_|__\s*:)")
_RST_FOOTNOTE_RE = re.compile(r"^\.\.\s+\[([^\]]+)\](?:\s+(.*))?$")
RST_OPTION_RE = re.compile(r"^:[\w][\w .-]*:(?:\s|$)")
_RST_FIELD_RE = re.compile(r"^:([^:`][^:]*?):(?:\s+(.*))?$")
_RST_BULLET_RE = re.compile(r"^([-*+•‣⁃])\s+(.*)$")
_RST_ENUM_RE = re.compile(r"^(?:\(?(?:\d+|#|[A-Za-z]|[ivxlcdmIVXLCDM]+)[.)])\s+(.*)$")
_RST_LINE_BLOCK_RE = re.compile(r"^\|(?:\s+(.*))?$")
_DOCTEST_RE = re.compile(r"^>>>(?:\s|$)")

RST_CODE_DIRECTIVES = {
    "code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "productionlist", "code-cell",
    "ipython", "jupyter-execute", "prompt", "parsed-literal", "highlight-code",
}
RST_SKIP_DIRECTIVES = {
    "toctree", "contents", "index", "highlight", "module", "currentmodule", "sectionauthor", "moduleauthor",
    "codeauthor", "include", "literalinclude", "image", "raw", "meta", "tabularcolumns", "autosummary", "math",
    "graphviz", "digraph", "graph", "inheritance-diagram", "testsetup", "testcleanup", "default-role", "role",
    "rst-class", "cssclass", "title", "sectnum", "section-numbering", "header", "footer", "target-notes",
    "spelling", "spelling:word-list", "audit-event", "audit-event-table", "automodule", "autoclass",
    "autofunction", "automethod", "autoattribute", "autodata", "autoexception", "autoprogram", "program",
    "currentmodule", "py:currentmodule", "py:module", "c:namespace", "cpp:namespace", "js:module", "todolist",
    "mermaid", "plot", "youtube", "video", "unicode", "date", "bibliography", "only-html", "tags",
}
RST_OBJECT_DIRECTIVES = {
    "function", "class", "method", "attribute", "data", "exception", "decorator", "decoratormethod",
    "staticmethod", "classmethod", "abstractmethod", "property", "type", "macro", "member", "var", "struct",
    "union", "enum", "enumerator", "concept", "alias", "namespace", "cmdoption", "option", "envvar", "opcode",
    "describe", "object", "pdbcommand", "monitoring-event", "2to3fixer", "confval", "setting", "event",
    "directive", "directive:option", "role", "fixture",
}
# Containers whose argument is a condition, a layout or nothing: only their content is prose.
_RST_CONTAINER_DIRECTIVES = {
    "only", "ifconfig", "container", "tabs", "tab", "tab-set", "tab-item", "hlist", "glossary", "compound", "grid",
    "grid-item",
    "div", "margin", "epigraph", "highlights", "pull-quote", "impl-detail",
}
_RST_TITLED_DIRECTIVES = {
    "admonition", "topic", "sidebar", "table", "csv-table", "list-table", "rubric", "card", "dropdown",
    "grid-item-card",
}
# Admonitions: the text on the directive line is the first paragraph of their content.
_RST_ADMONITIONS = {
    "note", "warning", "tip", "important", "caution", "attention", "danger", "error", "hint", "seealso", "todo",
    "centered", "versionadded", "versionchanged", "deprecated", "versionremoved", "attention", "admonition",
}
RST_VERSION_DIRECTIVES = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "versionremoved": "Removed in version",
    "deprecated-removed": "Deprecated since version",
}

_RST_LITERAL_RE = re.compile(r"``(.+?)``", re.S)
_RST_ROLE_RE = re.compile(r"(?<![\w`]):((?:[\w.+-]+:)*[\w.+-]+):`((?:[^`\\]|\\.)+?)`(?!`)")
_RST_SUFFIX_ROLE_RE = re.compile(r"`((?:[^`\\]|\\.)+?)`:[\w.+-]+(?::[\w.+-]+)*:")
_RST_LINK_RE = re.compile(r"`((?:[^`\\]|\\.)+?)`__?(?!\w)")
_RST_TARGET_INLINE_RE = re.compile(r"_`([^`]+)`")
_RST_DEFAULT_ROLE_RE = re.compile(r"`((?:[^`\\]|\\.)+?)`")
_RST_WORD_REF_RE = re.compile(r"(?<![\w])([A-Za-z0-9][\w.+-]*?)__?(?![\w])")
_RST_FOOTREF_RE = re.compile(r"\s?\[(?:\d+|#[\w-]*|\*|[A-Za-z][\w.-]*)\]_")
_RST_SUBST_RE = re.compile(r"\|([^|\s](?:[^|]*[^|\s])?)\|(?:__?)?")
_RST_STRONG_RE = re.compile(r"(?<![\w*\\])\*\*(\S(?:.*?\S)?)\*\*(?![\w*])")
_RST_EMPH_RE = re.compile(r"(?<![\w*\\])\*(\S(?:.*?[^\s\\])?)\*(?![\w*])")
_RST_ESCAPE_RE = re.compile(r"\\(.)|\\$")


class Directives:
    """Directives by name, for both readers (`Rst`, and `Markdown` for MyST fences): what becomes code, prose,
    a heading, rows, or nothing. The reader gives `parse` (its own markup), `inline` and
    `sub_reader` (a reader of the same markup writing into another list)."""

    out: list[Block]

    def parse(self, lines: list[str]) -> None:
        raise NotImplementedError

    def inline(self, s: str) -> str:
        raise NotImplementedError

    def prose(self, parts: list[str] | str, kind: str = "prose") -> None:
        text = self.inline(parts if isinstance(parts, str) else " ".join(p.strip() for p in parts))
        if text:
            self.out.append((kind, text))

    def code(self, lines: list[str]) -> None:
        text = code_text(lines)
        if text:
            self.out.append(("code", text))

    def sub_reader(self, out: list[Block]) -> Directives:
        raise NotImplementedError

    def rows(self, rows: list[list[str]]) -> None:
        for cells in rows:
            self.prose(join_cells([self.inline(c) for c in cells]), "row")

    def directive(self, name: str, arg: str, body: list[str]) -> None:
        # head: the lines before the first blank line (argument continuation and options); content: the rest
        k = 0
        while k < len(body) and not blank(body[k]):
            k += 1
        head, content = body[:k], body[k + 1 :]
        opts_at = next((x for x, ln in enumerate(head) if RST_OPTION_RE.match(ln.strip())), len(head))
        arg_lines, options = head[:opts_at], head[opts_at:]
        options_lines = [ln for ln in options if ln.strip()]
        base = name.rsplit(":", 1)[-1]  # "py:function" -> "function"
        if name in RST_SKIP_DIRECTIVES or (base in RST_SKIP_DIRECTIVES and base not in RST_OBJECT_DIRECTIVES):
            return
        if base in RST_CODE_DIRECTIVES:
            self.code(arg_lines + ([""] if arg_lines and content else []) + content)
            return
        if name == "eval-rst":
            self.parse(body)
            return
        if base in RST_OBJECT_DIRECTIVES:  # signatures are code; the description is prose
            signature = [ln.strip() for ln in [arg, *arg_lines] if ln.strip()]
            if signature:
                self.code(signature)
            self.parse(content)
            return
        if base in _RST_CONTAINER_DIRECTIVES:
            self.parse(arg_lines + [""] + content if arg_lines else content)
            return
        if base == "availability":
            self.prose([f"Availability: {arg}"] + [ln.strip() for ln in arg_lines])
            self.parse(content)
            return
        if base in RST_VERSION_DIRECTIVES:
            version, _, text = arg.partition(" ")
            lead = f"{RST_VERSION_DIRECTIVES[base]} {version}"
            first = " ".join([text] + [ln.strip() for ln in arg_lines]).strip()
            if first:
                self.prose(f"{lead}: {first}")
            elif content:
                sub: list[Block] = []
                self.sub_reader(sub).parse(content)
                if sub and sub[0][0] == "prose":
                    sub[0] = ("prose", f"{lead}: {sub[0][1]}")
                else:
                    sub.insert(0, ("prose", lead + "."))
                self.out.extend(sub)
                return
            else:
                self.prose(lead + ".")
            self.parse(content)
            return
        if base == "figure":
            self.parse(content)
            return
        if base == "csv-table":
            header = next((ln.strip()[8:] for ln in options_lines if ln.strip().startswith(":header:")), "")
            if arg:
                self.prose(arg, "heading")
            rows = list(csv.reader([header] if header.strip() else []))
            rows += list(csv.reader([ln.strip() for ln in content if ln.strip()], skipinitialspace=True))
            self.rows(rows)
            return
        if base == "list-table":
            if arg:
                self.prose(arg, "heading")
            self._list_table(content)
            return
        if base in _RST_TITLED_DIRECTIVES:
            if arg or arg_lines:
                self.prose([arg] + [ln.strip() for ln in arg_lines], "heading")
            self.parse(content)
            return
        if base in _RST_ADMONITIONS:  # the text on the directive line opens the content
            first = [arg] + [ln.strip() for ln in arg_lines] if arg or arg_lines else []
            if first:
                self.prose(first)
            self.parse(content)
            return
        # an unknown (extension) directive: its argument is a parameter; its content is prose, or code when it
        # opens with a shell or REPL prompt (a `pip-cli`, `console` or `prompt` block of another name)
        if is_session(content):
            self.code(content)
        else:
            self.parse(content)

    def _list_table(self, content: list[str]) -> None:
        rows: list[list[str]] = []
        cell: list[str] | None = None
        for ln in content:
            s = ln.strip()
            m = re.match(r"^[*-]\s+[*-]\s+(.*)$", s)
            if m and indent(ln) == 0:
                rows.append([])
                cell = [m.group(1)]
                rows[-1].append(cell)  # type: ignore[arg-type]
                continue
            m = re.match(r"^[*-]\s*(.*)$", s)
            if m and indent(ln) == 0:
                rows.append([])
                cell = None
                if m.group(1):
                    cell = [m.group(1)]
                    rows[-1].append(cell)  # type: ignore[arg-type]
                continue
            m = re.match(r"^-\s+(.*)$", s)
            if m and rows:
                cell = [m.group(1)]
                rows[-1].append(cell)  # type: ignore[arg-type]
                continue
            if s and cell is not None:
                cell.append(s)
        self.rows([[" ".join(c) for c in r] for r in rows])  # type: ignore[misc]


class Rst(Directives):
    """reStructuredText, one level of indentation at a time: `parse` handles a dedented run of lines and recurses
    into indented bodies (block quotes, directive content, list item bodies)."""

    def __init__(self, out: list[Block]) -> None:
        self.out = out
        self.subs: dict[str, str] = {}

    def sub_reader(self, out: list[Block]) -> Rst:
        reader = Rst(out)
        reader.subs = self.subs
        return reader

    def prescan(self, lines: list[str]) -> None:
        """Substitution definitions, which usually come after their use: `replace::` gives its text, anything
        else (badge images, `unicode::`, `date::`) nothing."""
        for line in lines:
            m = _RST_SUBST_DEF_RE.match(line)
            if m:
                name, directive, arg = m.groups()
                self.subs[name] = self.inline(arg) if directive == "replace" else ""

    # -- inline --
    def inline(self, s: str) -> str:
        saved: list[str] = []
        if "``" in s:
            s = _RST_LITERAL_RE.sub(lambda m: save(saved, m.group(1)), s)
        if "`" in s:
            s = _RST_ROLE_RE.sub(lambda m: save(saved, role_text(m.group(1), m.group(2))), s)
            s = _RST_SUFFIX_ROLE_RE.sub(lambda m: role_text("", m.group(1)), s)
            s = _RST_TARGET_INLINE_RE.sub(r"\1", s)
            s = _RST_LINK_RE.sub(lambda m: role_text("", m.group(1)), s)
            s = _RST_DEFAULT_ROLE_RE.sub(lambda m: role_text("", m.group(1)), s)
        if "]_" in s:
            s = _RST_FOOTREF_RE.sub("", s)
        if "_" in s:
            s = _RST_WORD_REF_RE.sub(r"\1", s)
        if "|" in s:
            s = _RST_SUBST_RE.sub(lambda m: self.subs.get(m.group(1), m.group(1)), s)
        if "*" in s:
            s = _RST_STRONG_RE.sub(r"\1", s)
            s = _RST_EMPH_RE.sub(r"\1", s)
        if "\\" in s:
            s = _RST_ESCAPE_RE.sub(lambda m: m.group(1) if m.group(1) not in (None, " ") else "", s)
        return finish_inline(s, saved)

    # -- blocks --
    @staticmethod
    def _indented_block(lines: list[str], i: int, base: int) -> tuple[list[str], int]:
        """Lines from i on that are blank or indented deeper than `base`; trailing blank lines are left out."""
        j = i
        n = len(lines)
        last = i
        while j < n and (blank(lines[j]) or indent(lines[j]) > base):
            if not blank(lines[j]):
                last = j + 1
            j += 1
        return lines[i:last], last

    def parse(self, lines: list[str]) -> None:
        lines = dedent(lines)
        n = len(lines)
        i = 0
        literal_next = False
        while i < n:
            line = lines[i]
            if blank(line):
                i += 1
                continue
            ind = indent(line)
            s = line.strip()
            if ind > 0:  # a block quote, or the literal block announced by "::"
                block, i = self._indented_block(lines, i, 0)
                if literal_next:
                    self.code(block)
                else:
                    self.parse(block)
                literal_next = False
                continue
            literal_next = False
            nxt = lines[i + 1] if i + 1 < n else ""
            # explicit markup: directives, comments, targets, footnotes, substitution definitions
            if s == ".." or s.startswith(".. "):
                i = self._explicit(lines, i)
                continue
            # section titles (overlined or underlined) and transitions
            if _ADORN_RE.match(s):
                over = i + 2 < n and nxt.strip() and not _ADORN_RE.match(nxt.strip())
                if over and _ADORN_RE.match(lines[i + 2].strip()):
                    self.prose(nxt.strip(), "heading")
                    i += 3
                    continue
                if not GRID_BORDER_RE.match(line) and not SIMPLE_BORDER_RE.match(line):
                    i += 1  # a transition
                    continue
            if nxt and _ADORN_RE.match(nxt.strip()) and indent(nxt) == 0 and len(nxt.strip()) >= min(len(s), 3):
                if not SIMPLE_BORDER_RE.match(nxt):
                    self.prose(s, "heading")
                    i += 2
                    continue
            # tables
            if GRID_BORDER_RE.match(line):
                rows, i = grid_table(lines, i)
                self.rows(rows)
                continue
            if SIMPLE_BORDER_RE.match(line):
                rows, i = simple_table(lines, i)
                self.rows(rows)
                continue
            if _DOCTEST_RE.match(s):
                j = i
                while j < n and not blank(lines[j]):
                    j += 1
                self.code(lines[i:j])
                i = j
                continue
            m = _RST_BULLET_RE.match(s) or _RST_ENUM_RE.match(s)
            if m and (m.group(m.lastindex or 1) or "").strip():
                i = self._list_item(lines, i, m.group(m.lastindex or 1))
                continue
            m = _RST_LINE_BLOCK_RE.match(s)
            if m:
                while i < n and _RST_LINE_BLOCK_RE.match(lines[i].strip()):
                    self.prose(_RST_LINE_BLOCK_RE.match(lines[i].strip()).group(1) or "", "item")
                    i += 1
                continue
            m = _RST_FIELD_RE.match(s)
            if m:
                body, j = self._indented_block(lines, i + 1, 0)
                text = " ".join([m.group(2) or ""] + [b.strip() for b in body if b.strip()])
                self.prose(f"{m.group(1)}: {text}" if text else m.group(1), "item")
                i = j
                continue
            # a paragraph: lines at this indentation up to a blank line
            j = i + 1
            while j < n and not blank(lines[j]) and indent(lines[j]) == 0 and not lines[j].startswith(".. "):
                under = lines[j + 1].strip() if j + 1 < n else ""
                if _ADORN_RE.match(under) and len(under) >= len(lines[j].strip()):
                    break  # the next line is a section title
                j += 1
            para = [ln.strip() for ln in lines[i:j]]
            definition = j < n and not blank(lines[j]) and indent(lines[j]) > 0
            last = para[-1]
            if last.endswith("::"):
                literal_next = True
                stripped = last[:-2].rstrip()
                if not stripped:
                    para = para[:-1]
                elif last[:-2].endswith((" ", "\t")):
                    para[-1] = stripped
                else:
                    para[-1] = stripped + ":"
            if para:
                self.prose(para, "item" if definition else "prose")
            i = j
            if definition:  # a definition list item: the term above, its definition indented below
                block, i = self._indented_block(lines, i, 0)
                if literal_next:
                    self.code(block)
                    literal_next = False
                else:
                    self.parse(block)

    def _list_item(self, lines: list[str], i: int, first: str) -> int:
        line = lines[i]
        content_col = len(line) - len(first.lstrip()) if first else indent(line) + 2
        n = len(lines)
        j = i + 1
        text = [first]
        while j < n and not blank(lines[j]) and indent(lines[j]) >= min(content_col, indent(line) + 1):
            text.append(lines[j])
            j += 1
        literal = text[-1].rstrip().endswith("::")
        if literal:
            t = text[-1].rstrip()[:-2]
            text[-1] = t.rstrip() if t.endswith(" ") else t + ":"
        self.prose(text, "item")
        if j < n and blank(lines[j]):
            k = j
            while k < n and blank(lines[k]):
                k += 1
            if k < n and indent(lines[k]) > indent(line):
                block, j = self._indented_block(lines, j, indent(line))
                if literal:
                    self.code(block)
                else:
                    self.parse(block)
        return j

    def _explicit(self, lines: list[str], i: int) -> int:
        s = lines[i].strip()
        body, j = self._indented_block(lines, i + 1, indent(lines[i]))
        if s == ".." or _RST_TARGET_RE.match(s):
            return j
        m = _RST_FOOTNOTE_RE.match(s)
        if m:
            self.prose([m.group(2) or ""] + [b.strip() for b in body if b.strip()])
            return j
        m = _RST_DIRECTIVE_RE.match(s)
        if not m:
            return j  # a comment
        subst, name, arg = m.group(1), m.group(2).lower(), (m.group(3) or "").strip()
        body = dedent(body)
        if subst:
            if name == "replace":
                self.subs[subst] = self.inline(" ".join([arg] + [b.strip() for b in body if b.strip()]))
            return j
        self.directive(name, arg, body)
        return j
