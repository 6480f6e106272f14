"""Text from outside, shown as what it is: control and bidi characters written as escapes.

A customer's name, a Loops message or a header value may hold characters that change how
the text around them reads: a line break that starts a log line of its choosing, an escape
sequence a terminal obeys, a right-to-left override (U+202E) that shows ``gpj.exe`` as
``exe.jpg``, a NUL. Wherever such text is shown (a text log line, an admin page), each of them
is written as its Python escape instead (``\\n``, ``\\x1b``, ``\\u202e``), so a person sees
that it is there. See https://www.unicode.org/reports/tr9/ for the bidi controls and
https://owasp.org/www-community/attacks/Log_Injection for why logs need it.
"""

from __future__ import annotations

import re

__all__ = ["visible"]

# C0 and C1 controls, DEL, the bidi controls, and the line and paragraph separators.
_CONTROLS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_ANY = re.compile(f"[{_CONTROLS}]")
_BUT_LAYOUT = re.compile(f"(?![\t\n])[{_CONTROLS}]")


def visible(text: str, *, layout: bool = False) -> str:
    """``text`` with each control or bidi character written as its escape; with ``layout``,
    line breaks and tabs stay as they are (for text laid out on several lines)."""
    return (_BUT_LAYOUT if layout else _ANY).sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    return found[0].encode("unicode_escape").decode("ascii")
