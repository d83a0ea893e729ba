"""C4 (Raffel et al. 2020, tfds `c4_utils.clean_page`): the line filter, which rewrites the text, and its page rules.

Unlike the other families this is not a predicate over a `DocView`: `c4_filter(text, cfg, stats)` returns a
`C4Result` — the rewritten text, the name of the page rule that drops the document (or None), and the characters
each line rule cut.

Units, not lines. The line rules judge the units of `lines.py`: in web text (one paragraph per line) a unit is a
line, exactly as in C4; in hard-wrapped text a unit is a wrapped paragraph, judged on its lines joined by spaces,
so a paragraph is kept or removed whole and never shredded line by line. A kept unit keeps its original lines and
line breaks; only citation marks are cut inside it. Paragraph breaks between kept units are preserved.

The page rules (`c4_lorem_ipsum`, `c4_curly_bracket`) look only at units that survived the line rules, as in the
reference implementation. `c4_min_sentences` counts sentence ends (a run of . ! ? 。！？, optionally closed by a
quote or bracket, then whitespace or the end) in the kept text, where C4 used a sentence tokenizer.

Protected paragraphs (`protect=True`): a paragraph starting with `PROTECT` is kept as it is and not judged by the
line or page rules — the docs profile marks this way the headings, list items, table rows and lead-ins its
converter recognised (structure, not web boilerplate) and, by a paragraph that is `PROTECT` alone, each code
block. Under the docs profile two web-page detectors do not run at all, since they misfire on technical
documentation: `c4_curly_bracket` (code on a web page; docs separate their code) and the javascript line rule
("please enable JavaScript"; docs about JavaScript mention it on every page).

`fragmented` is the guard after the whole C4 step: a document whose line rules cut more than
`cfg.max_removed_char_frac` of its characters (units, citation marks and the line breaks around them: the kept
prose is shorter than `1 - max_removed_char_frac` of the prose given to C4) is dropped rather than kept as a
fragment.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from plasma_pipeline.clean.lines import TERMINAL_PUNCT, paragraph_units

if TYPE_CHECKING:
    from plasma_pipeline.clean.config import CleanConfig

C4_POLICY_SUBSTRINGS = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]

# Put this name in rules_disabled to skip the whole C4 step: the text is left unmodified and the C4 page rules
# (c4_lorem_ipsum, c4_curly_bracket, c4_min_sentences, c4_no_lines_left) do not run either, nor `fragmented`.
C4_LINE_FILTER = "c4_line_filter"
PAGE_RULES = ("c4_lorem_ipsum", "c4_curly_bracket", "c4_min_sentences", "c4_no_lines_left")
FRAGMENTED = "fragmented"
# Reasons a unit is removed, each counted in `c4_lines/<reason>` (units) and `chars_removed/c4_<reason>` (chars);
# "citations" is the characters of citation marks cut from kept units.
LINE_REASONS = ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy", "citations")

PROTECT = "\ue000"  # a private-use character; the docs converter removes any from its input

_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?。！？]+[\"'”’)\]]*(?=\s|$)")
_C4_POLICY_RE = re.compile("|".join(re.escape(p) for p in C4_POLICY_SUBSTRINGS))


class C4Result(NamedTuple):
    text: str  # the kept text (the input text when a page rule drops the document)
    reason: str | None  # the page rule that drops the document, or None
    removed: dict[str, int]  # characters cut, by line reason (see LINE_REASONS); empty when nothing was cut
    # the kept text's (logical lines, soft breaks joined), for `DocView(text, logical=...)`; None when dropped
    logical: tuple[list[str], int] | None = None


def c4_filter(text: str, c: CleanConfig, stats: Counter[str], protect: bool = False) -> C4Result:
    """C4's clean_page over units; with `protect`, paragraphs starting with `PROTECT` are kept unjudged.

    Unit removals are counted in `c4_lines/<reason>` and their sum in `modified/c4_lines_removed`; units of two or
    more lines (recognised hard-wrapped paragraphs) in `c4_wrapped_units`.
    """
    disabled = c.rules_disabled
    # Whole-text pre-checks: most pages never mention these, and then no unit needs lowercasing.
    low = text.lower()
    check_lorem = c.c4_drop_lorem_ipsum and "c4_lorem_ipsum" not in disabled and "lorem ipsum" in low
    check_curly = c.c4_drop_curly_bracket and curly_bracket_applies(c) and "{" in text
    check_js = c.c4_drop_javascript_lines and c.profile != "docs" and "javascript" in low
    check_policy = c.c4_drop_policy_lines and _C4_POLICY_RE.search(low) is not None
    check_cite = c.c4_remove_citations and "[" in text
    need_lower = check_lorem or check_js or check_policy
    min_words = c.c4_min_words_per_line
    max_word = c.c4_max_word_length
    no_punct = c.c4_drop_no_terminal_punct
    removed_units: Counter[str] = Counter()
    removed_chars: Counter[str] = Counter()
    kept_paras: list[str] = []
    logical: list[str] = []
    kept_units = wrapped = joined = 0
    for units in paragraph_units(text):
        if protect and units[0][0].startswith(PROTECT):
            para = "\n".join("\n".join(unit) for unit in units)
            kept_paras.append(para)
            if para != PROTECT:  # structure (a bare mark is a code block: not text)
                kept_units += 1
                logical.append(" ".join(" ".join(unit) for unit in units)[len(PROTECT) :])
                joined += sum(map(len, units)) - 1
            continue
        kept: list[str] = []
        for unit in units:
            if len(unit) == 1:
                line = unit[0]
            else:
                wrapped += 1
                line = " ".join(unit)
            if len(line) > max_word and max(map(len, line.split())) > max_word:
                reason = "too_long_word"
            else:
                if check_cite and "[" in line:
                    cut = [_CITATION_RE.sub("", ln).rstrip() for ln in unit]
                    cut_chars = sum(map(len, unit)) - sum(map(len, cut))
                    if cut_chars:
                        unit = [ln for ln in cut if ln]
                        line = " ".join(unit)
                        removed_chars["citations"] += cut_chars
                if no_punct and (not line.endswith(TERMINAL_PUNCT) or line.endswith("...")):
                    reason = "no_terminal_punct"
                elif min_words > 0 and len(line.split(None, min_words - 1)) < min_words:
                    reason = "too_few_words"
                else:
                    reason = None
                    if need_lower:
                        lower = line.lower()
                        if check_lorem and "lorem ipsum" in lower:
                            return C4Result(text, "c4_lorem_ipsum", {})
                        if check_js and "javascript" in lower:
                            reason = "javascript"
                    if reason is None:
                        if check_curly and "{" in line:
                            return C4Result(text, "c4_curly_bracket", {})
                        if check_policy and _C4_POLICY_RE.search(lower) is not None:
                            reason = "policy"
            if reason is not None:
                removed_units[reason] += 1
                removed_chars[reason] += sum(map(len, unit)) + len(unit) - 1
                continue
            kept.append("\n".join(unit))
            logical.append(line)
            joined += len(unit) - 1
        if kept:
            kept_units += len(kept)
            kept_paras.append("\n".join(kept))
    if wrapped:
        stats["c4_wrapped_units"] += wrapped
    if removed_units:
        for reason, count in removed_units.items():
            stats[f"c4_lines/{reason}"] += count
        stats["modified/c4_lines_removed"] += sum(removed_units.values())
        stats["modified/c4_docs"] += 1
    out = "\n\n".join(kept_paras)
    min_sentences = c.c4_min_sentences if "c4_min_sentences" not in disabled else 0
    if min_sentences > 0 and len(_SENTENCE_END_RE.findall(out)) < min_sentences:
        return C4Result(text, "c4_min_sentences", {})
    if not kept_units:
        return C4Result("", "c4_no_lines_left", {})
    return C4Result(out, None, dict(removed_chars), (logical, joined))


def curly_bracket_applies(c: CleanConfig) -> bool:
    """`c4_curly_bracket` is C4's code detector for web pages; the docs profile separates code itself."""
    return c.profile != "docs" and "c4_curly_bracket" not in c.rules_disabled


def fragmented(kept_chars: int, total_chars: int, c: CleanConfig) -> bool:
    """The line rules left less than `1 - max_removed_char_frac` of the document's `total_chars` characters."""
    return kept_chars < (1.0 - c.max_removed_char_frac) * total_chars
