"""FineWeb's extra rules (Penedo et al. 2024), run on the C4-rewritten text.

They count logical lines (`DocView.logical_lines`: a hard-wrapped paragraph is one line), so wrapped prose is
judged as the paragraphs it holds; on text that is not hard-wrapped these are the physical lines, as in FineWeb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plasma_pipeline.clean.docview import DocView, Rule
from plasma_pipeline.clean.lines import TERMINAL_PUNCT

if TYPE_CHECKING:
    from plasma_pipeline.clean.config import CleanConfig


def fineweb_line_punct_ratio(d: DocView, c: CleanConfig) -> bool:
    lines = d.logical_lines
    if not lines:
        return True
    return sum(1 for ln in lines if ln.endswith(TERMINAL_PUNCT)) < c.fw_min_line_punct_ratio * len(lines)


def fineweb_short_line_ratio(d: DocView, c: CleanConfig) -> bool:
    lines = d.logical_lines
    limit = c.fw_short_line_chars
    return bool(lines) and sum(1 for ln in lines if len(ln) <= limit) > c.fw_max_short_line_ratio * len(lines)


def fineweb_char_dup_ratio(d: DocView, c: CleanConfig) -> bool:
    chars = len(d.text) - d.text.count("\n")
    return chars > 0 and d.dup_logical_lines[1] > c.fw_max_char_dup_ratio * chars


def fineweb_newline_ratio(d: DocView, c: CleanConfig) -> bool:
    n = d.n_tokens
    return n == 0 or d.logical_newlines > c.fw_max_newline_ratio * n


RULES: tuple[tuple[str, Rule], ...] = (
    ("fineweb_line_punct_ratio", fineweb_line_punct_ratio),
    ("fineweb_short_line_ratio", fineweb_short_line_ratio),
    ("fineweb_char_dup_ratio", fineweb_char_dup_ratio),
    ("fineweb_newline_ratio", fineweb_newline_ratio),
)
