"""Markdown (CommonMark, GFM tables and task lists, MyST directives and roles, mkdocs / GitHub admonitions) to
blocks."""

from __future__ import annotations

import re

from plasma_pipeline.clean.markup.common import (
    GRID_BORDER_RE,
    HTML_COMMENT_RE,
    HTML_TAG_RE,
    PIPE_DELIM_RE,
    Block,
    blank,
    dedent,
    finish_inline,
    grid_table,
    indent,
    join_cells,
    pipe_cells,
    role_text,
    save,
    trim_blank,
)
from plasma_pipeline.clean.markup.rst import RST_OPTION_RE, Directives, Rst

_MD_FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})\s*(.*?)\s*$")
_MD_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
_MD_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)\s*$")
_MD_HR_RE = re.compile(r"^ {0,3}([-*_])(?:\s*\1){2,}\s*$")
_MD_QUOTE_RE = re.compile(r"^ {0,3}>\s?")
_MD_ITEM_RE = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])(\s+)(.*)$")
_MD_TASK_RE = re.compile(r"^\[[ xX]\]\s+")
# A list item that is only links to anchors in the page: a table of contents entry (navigation, not text).
_MD_TOC_ITEM_RE = re.compile(r"^(?:\s*\[[^\]]*\]\(#[^)]*\)\s*[,;|·-]?)+\s*$")
# A link reference definition: [label]: destination "optional title" (the destination may be on the next line).
_MD_REFDEF_RE = re.compile(
    r"^ {0,3}\[(?!\^)([^\]]+)\]:\s*(?:<[^>]*>|[^\s\"'(]\S*)?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*$"
)
_MD_SHORTCUT_RE = re.compile(r"\[([^\[\]]+)\](?![(\[:])")
_MD_FOOTDEF_RE = re.compile(r"^ {0,3}\[\^[^\]]+\]:\s*(.*)$")
_MD_ADMONITION_RE = re.compile(r"^(?:!!!|\?\?\?\+?)\s*\w[\w-]*(?:\s+\"([^\"]*)\")?\s*$")
_MD_GH_ALERT_RE = re.compile(r"^\[!(?:NOTE|TIP|IMPORTANT|WARNING|CAUTION)\]\s*", re.I)
_MD_SCRIPT_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_MYST_DIRECTIVE_RE = re.compile(r"^\{([\w:.+-]+)\}\s*(.*)$")
_MYST_ROLE_RE = re.compile(r"(?<![\w$`])\{([\w:.+-]+)\}`([^`]+)`")

_MD_CODE_SPAN_RE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
_MD_IMAGE_RE = re.compile(r"!\[(?:[^\[\]]|\[[^\]]*\])*\](?:\((?:[^()]|\([^)]*\))*\)|\[[^\]]*\])")
_MD_LINK_RE = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\((?:[^()]|\([^)]*\))*\)")
_MD_REFLINK_RE = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])+)\]\[[^\]]*\]")
_MD_AUTOLINK_RE = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_MD_FOOTREF_RE = re.compile(r"\[\^[^\]]+\]")
_MD_STRONG_RE = re.compile(r"(?<![\w*\\])(\*\*|__)(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_MD_EMPH_STAR_RE = re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![\w*])")
_MD_EMPH_UNDER_RE = re.compile(r"(?<![\w\\])_(?=[^\s_])(.+?)(?<=[^\s_\\])_(?!\w)")
_MD_STRIKE_RE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_MD_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])|\\$")


class Markdown(Directives):
    """Markdown, block by block; block quotes, admonition bodies and MyST directive content recurse."""

    def __init__(self, out: list[Block]) -> None:
        self.out = out
        self.refs: set[str] = set()

    def sub_reader(self, out: list[Block]) -> Markdown:
        reader = Markdown(out)
        reader.refs = self.refs
        return reader

    def prescan(self, lines: list[str]) -> None:
        """The labels of the link reference definitions, so that a shortcut reference ("see [the guide]") gives
        its text; definitions may come anywhere in the document."""
        for line in lines:
            m = _MD_REFDEF_RE.match(line) if "]:" in line else None
            if m:
                self.refs.add(m.group(1).strip().lower())

    def inline(self, s: str) -> str:
        saved: list[str] = []
        if "<!--" in s:
            s = HTML_COMMENT_RE.sub("", s)
        if "{" in s and "}`" in s:
            s = _MYST_ROLE_RE.sub(lambda m: save(saved, role_text(m.group(1), m.group(2))), s)
        if "`" in s:
            s = _MD_CODE_SPAN_RE.sub(lambda m: save(saved, m.group(2).strip() if m.group(2).strip() else m.group(2)), s)
        if "<" in s:
            s = _MD_SCRIPT_RE.sub("", s)
            s = _MD_AUTOLINK_RE.sub(lambda m: save(saved, m.group(1).removeprefix("mailto:")), s)
            s = HTML_TAG_RE.sub(" ", s)
        if "[" in s:
            s = _MD_IMAGE_RE.sub("", s)
            s = _MD_LINK_RE.sub(r"\1", s)
            s = _MD_LINK_RE.sub(r"\1", s)  # a link inside a link's text (rare) or a badge left empty
            s = _MD_REFLINK_RE.sub(r"\1", s)
            if self.refs:
                s = _MD_SHORTCUT_RE.sub(lambda m: m.group(1) if m.group(1).strip().lower() in self.refs else m.group(0), s)
            s = _MD_FOOTREF_RE.sub("", s)
        for _ in range(3):  # nested emphasis ("_**Warning**_") takes more than one pass
            if "*" not in s and "_" not in s:
                break
            before = s
            s = _MD_STRONG_RE.sub(r"\2", s)
            s = _MD_EMPH_STAR_RE.sub(r"\1", s)
            s = _MD_EMPH_UNDER_RE.sub(r"\1", s)
            if s == before:
                break
        if "~~" in s:
            s = _MD_STRIKE_RE.sub("", s)  # struck-through text is deleted text
        if "\\" in s:
            s = _MD_ESCAPE_RE.sub(lambda m: m.group(1) or "", s)
        return finish_inline(s, saved)

    @staticmethod
    def _starts_block(line: str) -> bool:
        """The line interrupts a paragraph: a fence, HTML comment, block quote, ATX heading, rule or list item."""
        s = line.lstrip()
        if not s:
            return False
        if s.startswith(("```", "~~~", ":::", "<!--", ">")):
            return True
        if s.startswith("[") and "]:" in s and _MD_REFDEF_RE.match(line):
            return True
        if s.startswith("#"):
            rest = s.lstrip("#")
            return len(s) - len(rest) <= 6 and (not rest or rest[0] in " \t")
        return bool(_MD_HR_RE.match(line) or _MD_ITEM_RE.match(line))

    def parse(self, lines: list[str]) -> None:
        n = len(lines)
        i = 0
        if n and lines[0].strip() in ("---", "+++"):  # front matter
            end = lines[0].strip()
            j = 1
            while j < n and lines[j].strip() not in (end, "..."):
                j += 1
            if j < n:
                i = j + 1
        in_list = False
        while i < n:
            line = lines[i]
            s = line.strip()
            if not s:
                i += 1
                continue
            ind = indent(line)
            # fenced code, or a MyST directive fence
            m = _MD_FENCE_RE.match(line)
            if m and s[:3] in ("```", "~~~", ":::") and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                i = self._fence(lines, i, m)
                continue
            if s.startswith("<!--"):
                j = i
                while j < n and "-->" not in lines[j]:
                    j += 1
                rest = lines[j].split("-->", 1)[1] if j < n else ""
                if rest.strip():
                    lines[j] = rest
                    i = j
                else:
                    i = j + 1
                continue
            if ind >= 4 and not in_list:
                j = i
                while j < n and (blank(lines[j]) or indent(lines[j]) >= 4):
                    j += 1
                self.code([ln for ln in lines[i:j]])
                i = j
                continue
            m = _MD_ATX_RE.match(line)
            if m and s.startswith("#") and (len(s) == len(m.group(1)) or s[len(m.group(1))] in " \t"):
                self.prose(m.group(2) or "", "heading")
                in_list = False
                i += 1
                continue
            if _MD_HR_RE.match(line):
                i += 1
                continue
            if _MD_QUOTE_RE.match(line):
                j = i
                inner = []
                while j < n and not blank(lines[j]) and (_MD_QUOTE_RE.match(lines[j]) or inner):
                    inner.append(_MD_QUOTE_RE.sub("", lines[j], count=1))
                    j += 1
                if inner:
                    inner[0] = _MD_GH_ALERT_RE.sub("", inner[0])
                self.parse(inner)
                i = j
                continue
            m = _MD_ADMONITION_RE.match(s)
            if m:
                if m.group(1):
                    self.prose(m.group(1), "heading")
                j = i + 1
                block = []
                while j < n and (blank(lines[j]) or indent(lines[j]) > ind):
                    block.append(lines[j])
                    j += 1
                self.parse(trim_blank(dedent(block)))
                i = j
                continue
            m = _MD_REFDEF_RE.match(line)
            if m:
                i += 1
                if i < n and line.rstrip().endswith("]:") and lines[i].strip() and not blank(lines[i]):
                    i += 1  # the destination on the next line
                continue
            m = _MD_FOOTDEF_RE.match(line)
            if m:
                j = i + 1
                text = [m.group(1)]
                while j < n and not blank(lines[j]) and indent(lines[j]) > 0:
                    text.append(lines[j])
                    j += 1
                self.prose(text)
                i = j
                continue
            # a pipe table: a header row, then a delimiter row
            if "|" in s and i + 1 < n and "-" in lines[i + 1] and PIPE_DELIM_RE.match(lines[i + 1]):
                rows = [pipe_cells(line)]
                j = i + 2
                while j < n and "|" in lines[j] and lines[j].strip():
                    rows.append(pipe_cells(lines[j]))
                    j += 1
                for cells in rows:
                    self.prose(join_cells([self.inline(c) for c in cells]), "row")
                i = j
                continue
            if GRID_BORDER_RE.match(line):
                rows, i = grid_table(lines, i)
                for cells in rows:
                    self.prose(join_cells([self.inline(c) for c in cells]), "row")
                continue
            m = _MD_ITEM_RE.match(line)
            if m and m.group(4).strip() and not _MD_HR_RE.match(line):
                i = self._item(lines, i, m)
                in_list = True
                continue
            if ind == 0:
                in_list = False
            # a paragraph (lazy continuation lines included); a setext underline makes it a heading
            j = i + 1
            while j < n and not blank(lines[j]) and not self._starts_block(lines[j]):
                if _MD_SETEXT_RE.match(lines[j]):
                    break
                if "|" in lines[j] and j + 1 < n and PIPE_DELIM_RE.match(lines[j + 1]) and "-" in lines[j + 1]:
                    break
                j += 1
            if j < n and _MD_SETEXT_RE.match(lines[j]) and not blank(lines[j]):
                self.prose(lines[i:j], "heading")
                i = j + 1
                continue
            self.prose(lines[i:j])
            i = j

    def _item(self, lines: list[str], i: int, m: re.Match[str]) -> int:
        n = len(lines)
        base = len(m.group(1).expandtabs(8))
        content_col = base + len(m.group(2)) + min(len(m.group(3)), 4)
        if self._starts_block(m.group(4)):  # the item opens with a block (a fence, a quote): parse its body
            j = i + 1
            while j < n and (blank(lines[j]) or indent(lines[j]) >= content_col):
                j += 1
            while j > i + 1 and blank(lines[j - 1]):
                j -= 1
            self.parse(dedent([" " * content_col + m.group(4), *lines[i + 1 : j]]))
            return j
        text = [_MD_TASK_RE.sub("", m.group(4))]
        j = i + 1
        while j < n and not blank(lines[j]) and not self._starts_block(lines[j]) and not _MD_SETEXT_RE.match(lines[j]):
            text.append(lines[j])
            j += 1
        if not _MD_TOC_ITEM_RE.match(" ".join(text)):
            self.prose(text, "item")
        # item body: following blank-separated lines indented to the content column
        k = j
        while k < n and blank(lines[k]):
            k += 1
        if k < n and k > j and indent(lines[k]) >= content_col and not _MD_ITEM_RE.match(lines[k]):
            block = []
            while k < n and (blank(lines[k]) or indent(lines[k]) >= content_col):
                if _MD_ITEM_RE.match(lines[k]) and indent(lines[k]) < content_col + 2:
                    break
                block.append(lines[k])
                k += 1
            sub = dedent(block)
            self.parse(sub)
            return k
        return j

    def _fence(self, lines: list[str], i: int, m: re.Match[str]) -> int:
        n = len(lines)
        indent, fence, info = m.group(1), m.group(2), m.group(3)
        char = fence[0]
        j = i + 1
        body = []
        while j < n:
            s = lines[j].strip()
            if s.startswith(char * len(fence)) and not s.strip(char).strip():
                break
            ln = lines[j]
            body.append(ln[len(indent) :] if ln.startswith(indent) else ln.lstrip())
            j += 1
        directive = _MYST_DIRECTIVE_RE.match(info)
        if directive:
            self._myst(directive.group(1).lower(), directive.group(2).strip(), body)
        elif char != ":":
            self.code(body)
        else:  # a plain colon fence: a container
            self.parse(body)
        return j + 1

    def _myst(self, name: str, arg: str, body: list[str]) -> None:
        """A MyST directive fence: its options (":key: value" lines, or a YAML block between "---" lines) at the top
        of the body are dropped, then the directive is read as in reST (`Directives.directive`), its content as
        Markdown; `{eval-rst}` content is reST."""
        k = 0
        if body and body[0].strip() == "---":
            k = 1
            while k < len(body) and body[k].strip() != "---":
                k += 1
            k += 1
        while k < len(body) and RST_OPTION_RE.match(body[k].strip()):
            k += 1
        content = body[k:]
        if name == "eval-rst":
            Rst(self.out).parse(content)
            return
        self.directive(name, arg, ["", *content])  # the blank line: MyST content needs none after the options
