"""Text from outside (an upstream's close reason, a tapped message, a name in a
configuration file) made safe to show on a terminal: control characters become their
escapes (``\\x1b``, ``\\n``), so that no escape sequence reaches the operator's screen
(a window title set, the screen cleared, a hyperlink planted) and one line stays one."""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # every control character
_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # ... but newline and tab


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode()


def printable(text: str, lines: bool = False) -> str:
    """``text`` with its control characters escaped (``lines``: newlines and tabs kept,
    as a traceback needs them)."""
    return (_LINES if lines else CONTROL).sub(_escape, text)
