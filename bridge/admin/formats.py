"""How the admin pages show stored values: times, JSON, counts, numbers from URLs, and any
text at all (:func:`shown`)."""

from __future__ import annotations

import json
import time
from typing import Any

from markupsafe import Markup

from bridge.models import ID_RANGE, row_id
from bridge.visible import visible

__all__ = [
    "COUNT_CAP",
    "ID_RANGE",
    "ago",
    "count",
    "hours",
    "int_or_none",
    "json_object",
    "pretty",
    "row_id",
    "shown",
    "when",
]

COUNT_CAP = 100_000  # a count stops here, so that a page costs the same however busy


def shown(value: Any) -> Any:
    """Every value a page shows (Jinja's ``finalize``, before it is HTML-escaped): a string's
    control and bidi characters written as escapes, so that a customer's name holding a
    right-to-left override or a NUL shows them (:mod:`bridge.visible`). Line breaks and tabs
    stay: they lay out the JSON and the bodies shown in ``<pre>``."""
    if not isinstance(value, str):
        return value
    escaped = visible(value, layout=True)
    return Markup(escaped) if isinstance(value, Markup) else escaped


def when(epoch: float | None, zone: bool = True) -> str:
    """A stored time as people read it: UTC, to the second, on one line."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d\u00a0%H:%M:%S", time.gmtime(epoch)) + (" UTC" if zone else "")


def ago(epoch: float, now: float | None = None) -> str:
    """``"3 s ago"``, ``"in 12 s"``, ``"2 h ago"``."""
    seconds = (time.time() if now is None else now) - epoch
    size = abs(seconds)
    if size < 120:
        text = f"{size:.0f} s"
    elif size < 7200:
        text = f"{size / 60:.0f} min"
    elif size < 172_800:
        text = f"{size / 3600:.0f} h"
    else:
        text = f"{size / 86400:.0f} days"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def hours(seconds: float) -> str:
    """A stretch of time in hours: ``"72 hours"``, ``"1 hour"``, ``"0.5 hours"``."""
    value = seconds / 3600
    number = f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
    return f"{number} hour" if number == "1" else f"{number} hours"


def count(number: int) -> str:
    """``1234`` -> ``"1,234"``; past the cap, ``"100,000+"``."""
    return f"{COUNT_CAP:,}+" if number > COUNT_CAP else f"{number:,}"


def pretty(raw: bytes | str | None) -> str:
    """JSON indented for reading; anything else as the text it is."""
    if raw is None:
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def json_object(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
