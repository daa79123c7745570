"""Values from outside (URL parameters, store contents, request headers) as literal Markdown.

Streamlit renders warnings, captions and titles as Markdown (GitHub flavour plus its own
colour, icon, emoji and maths syntax), so a value such as ``[Sign in](https://evil.example)``
would otherwise show as a live link. ``literal`` puts a value into a code span, where no
Markdown applies. Pure: no Streamlit.
"""
from __future__ import annotations

import re

LIMIT = 120          # characters of one value shown; longer values are cut with an ellipsis
_BACKTICKS = re.compile(r"`+")


def visible(value: object, limit: int = LIMIT) -> str:
    """``value`` as one line of printable text: control and bidi characters shown as escapes."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def literal(value: object, limit: int = LIMIT) -> str:
    """A Markdown code span that shows ``value`` verbatim (``''`` for an empty value)."""
    text = visible(value, limit) or "''"
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    # CommonMark strips one space on each side of a code span's content when both are there
    # (unless it is all spaces), so padding both sides keeps a value that starts or ends with
    # a backtick or a space intact.
    pad = " " if text.strip(" ") and (text[0] in "` " or text[-1] in "` ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def literal_list(values, limit: int = 8) -> str:
    """Up to ``limit`` values as comma-separated code spans ('none' when empty)."""
    values = list(values)
    shown = ", ".join(literal(v) for v in values[:limit])
    return (shown + (", …" if len(values) > limit else "")) or "none"


def parameter(key: str, *values: object) -> str:
    """A URL parameter as one code span, e.g. ```run='x'```: repr shows quotes, blanks and escapes."""
    return literal(f"{key}={', '.join(repr(str(v)) for v in values)}")
