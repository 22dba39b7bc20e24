"""Clean text from raw files before it reaches a prompt.

Raw metadata carries HTML: entity-escaped titles (``Tom &amp; Jerry``), tags
around the words, and values that are markup only (``<span class="a-size-medium
a-color-secondary"`` with no closing bracket, ``</span></span>``). A prompt must
read the words, once, and no single long field may eat the prompt.

:func:`clean_text` unescapes entities (twice, for double-escaped values),
strips tags (also a tag cut off at the end of the value), normalises
whitespace and caps the length at a word boundary; a value with no letter or
digit left is dropped (``None``).
"""

from __future__ import annotations

import html
import re
from typing import Optional

#: default cap of one field's text, in characters
MAX_CHARS = 120

_TAG = re.compile(r"<[^<>]*>|<[a-zA-Z/!][^<>]*$")
_WORD = re.compile(r"[0-9A-Za-z\u00C0-\uFFFF]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def cap(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary, with ``…`` when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def clean_text(value: object, limit: int = MAX_CHARS) -> Optional[str]:
    """Readable text of one raw value, or ``None`` when nothing but markup (or nothing) is left."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value)
    for _ in range(2):
        text = html.unescape(text)
    text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    if not _WORD.search(text):
        return None
    return cap(text, limit)


def first_sentence(value: object, limit: int = MAX_CHARS) -> Optional[str]:
    """The first sentence of the first non-empty text in ``value`` (a string or a list of strings)."""
    texts = value if isinstance(value, list) else [value]
    for raw in texts:
        text = clean_text(raw, limit=10_000)
        if text:
            return cap(_SENTENCE_END.split(text, maxsplit=1)[0], limit)
    return None
