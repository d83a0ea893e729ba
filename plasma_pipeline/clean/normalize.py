"""Unicode and whitespace normalisation.

NFC, not NFKC: NFC only composes canonically equivalent sequences (e + combining acute -> é), so it never changes
what a text means. NFKC also folds compatibility characters — "x²" becomes "x2", "ﬁ" becomes "fi", full-width
and circled forms lose their form, "µ" turns into Greek "μ" — which alters formulas, code and CJK text, so it is
left to the tokenizer to decide.

Every pattern is compiled once at import; the common case (already NFC, no control characters, no mojibake) costs a
few C-level scans per document.

Code is not prose: `normalize_code` (and `normalize_text(code=True)`) changes only line endings (CRLF and lone CR
become LF) and the end of the file (exactly one trailing newline; a file of nothing but line breaks becomes
empty). No Unicode normalisation, mojibake repair, control-character removal, trailing-space strip or blank-line
squeeze: indentation, tabs, form feeds, a BOM and string literals stay byte for byte.
"""

from __future__ import annotations

import re
import unicodedata

# C0 controls except \t and \n (\r is handled as a line break), DEL, C1 controls, zero-width space, BOM,
# soft hyphen and the bidi embedding/override controls — invisible characters that only disturb word statistics.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2028\u2029\u202a-\u202e\ufeff]")
_NEWLINE_RE = re.compile(r"\r\n?")
# Prose: a run of horizontal whitespace of length >= 2, or any single horizontal whitespace that is not a plain space
# (tab, NBSP, ideographic space, ...). Matching single spaces too would rewrite every space for nothing.
_HSPACE_RUN_RE = re.compile(r"[^\S\n]{2,}|[^\S \n]")
_HSPACE_HINT_RE = re.compile("[\t\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]|  ")  # same test, 3x faster search
_SPACE_AROUND_NEWLINE_RE = re.compile(r" *\n *")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")

# UTF-8 bytes decoded as cp1252/latin-1 leave these pairs behind: "Ã©" (é), "â€™" (’), "Â " (NBSP).
_MOJIBAKE_RE = re.compile("[\u00c2\u00c3][\u0080-\u00bf\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u2122\u0192]|\u00e2\u20ac")


def fix_mojibake(text: str) -> str:
    """Undo one round of UTF-8-read-as-cp1252 when its telltale pairs appear; return the text unchanged otherwise."""
    if text.isascii() or not ("\u00c3" in text or "\u00c2" in text or "\u00e2\u20ac" in text):
        return text
    if _MOJIBAKE_RE.search(text) is None:
        return text
    try:
        fixed = text.encode("cp1252").decode("utf-8")
    except UnicodeError:
        # Mixed text (some of it correct): repair only the broken runs.
        def _repair(m: re.Match[str]) -> str:
            try:
                return m.group(0).encode("cp1252").decode("utf-8")
            except UnicodeError:
                return m.group(0)

        fixed = _RUN_RE.sub(_repair, text)
    return fixed


# A run of characters that cp1252 can encode and that starts a mojibake pair.
_RUN_RE = re.compile("(?:[\u00c2-\u00f4][\u0080-\u00bf\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u2122\u0192\u20ac]+)+")


def normalize_code(text: str) -> str:
    """The code profile's only normalisation: CRLF / CR -> LF, and exactly one trailing newline."""
    if "\r" in text:
        text = _NEWLINE_RE.sub("\n", text)
    if text.endswith("\n") and not text.endswith("\n\n") and len(text) > 1:
        return text
    text = text.rstrip("\n")
    return text + "\n" if text else ""


def normalize_text(text: str, code: bool = False, mojibake: bool = True) -> str:
    """NFC, control characters removed, line breaks unified, whitespace collapsed.

    Prose: runs of spaces/tabs become one space, lines are stripped, three or more newlines become a paragraph
    break ("\\n\\n"); the result has no leading or trailing whitespace. Code (`code=True`): `normalize_code`
    only (`mojibake` is ignored).
    """
    if code:
        return normalize_code(text)
    if mojibake:
        text = fix_mojibake(text)
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = _NEWLINE_RE.sub("\n", text)
    if _CONTROL_RE.search(text) is not None:
        text = _CONTROL_RE.sub("", text)
    if _HSPACE_HINT_RE.search(text) is not None:
        text = _HSPACE_RUN_RE.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _SPACE_AROUND_NEWLINE_RE.sub("\n", text)
    if "\n\n\n" in text:
        text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()
