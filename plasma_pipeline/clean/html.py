"""HTML to text with selectolax's lexbor parser.

Boilerplate containers (script, style, nav, footer, header, aside, form, ...) are removed with their content. Block
elements end a line: a newline is inserted before each block boundary tag before parsing, so inline markup
("Hello <b>world</b>") stays on one line while paragraphs, list items, rows and headings become lines.
"""

from __future__ import annotations

import json
import re

from selectolax.lexbor import LexborHTMLParser

BOILERPLATE_TAGS = [
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "footer",
    "header",
    "aside",
    "form",
    "iframe",
    "svg",
    "button",
    "select",
]
_BLOCK_TAGS = (
    "p|div|br|li|ul|ol|dl|dt|dd|h[1-6]|tr|table|thead|tbody|blockquote|pre|section|article|main|figure|figcaption"
    "|caption|hr|address|details|summary|title"
)
# Opening or closing block tag: a line break goes before it.
_BLOCK_RE = re.compile(rf"<(?:/?(?:{_BLOCK_TAGS}))\b", re.IGNORECASE)
_HTML_HINT_RE = re.compile(r"<(?:!doctype|html|body|head|p|div|br|span|a|table|ul|li|h[1-6])\b", re.IGNORECASE)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document, one block element per line (whitespace not yet normalised)."""
    tree = LexborHTMLParser(_BLOCK_RE.sub(lambda m: "\n" + m.group(0), html))
    tree.strip_tags(BOILERPLATE_TAGS)
    node = tree.body if tree.body is not None else tree.root
    if node is None:
        return ""
    return node.text(deep=True, separator="", strip=False)


def looks_like_html(text: str, meta: str | None) -> bool:
    """Auto-detection for `CleanConfig.html = None`: meta says so, or the text itself starts as HTML markup.

    Meta is the JSON string of DOC_SCHEMA; collectors mark HTML with `"format": "html"` (or a content type / mime
    containing "html"). Only a cheap substring test runs before the JSON is parsed. The URL alone is not trusted:
    a ".html" address often carries text a collector already extracted.
    """
    if meta and "html" in meta:
        try:
            m = json.loads(meta)
        except ValueError:
            m = None
        if isinstance(m, dict):
            for key in ("format", "content_type", "mime", "mimetype", "type"):
                value = m.get(key)
                if isinstance(value, str) and "html" in value.lower():
                    return True
    head = text[:512].lstrip()
    return head.startswith("<") and _HTML_HINT_RE.search(head) is not None
