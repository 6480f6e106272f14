"""Logging for every process of the bridge, in one of two formats (``BRIDGE_LOG_FORMAT``).

``text``, for people::

    2026-11-27 15:42:21,123 INFO bridge.delivery: delivery 42 delivered: contact created

``json``, one object per line, for log collectors::

    {"time": "2026-11-27T15:42:21.123Z", "level": "INFO", "logger": "bridge.delivery",
     "message": "delivery 42 delivered: contact created", "delivery_id": 42,
     "endpoint_id": "kq3...", "status": "delivered"}

A decision is logged once, with what it concerns passed as ``extra=`` (the names in
``FIELDS``); those become fields of their own in JSON. An exception goes into ``error``, on
the same line.

Nothing a record carries can start a line of its own: a customer's name or a Loops message
may hold a line break, an escape sequence or a right-to-left override. In text, every
control and bidi character of a record's line is written as its escape
(:mod:`bridge.visible`), and the lines of a traceback after it are indented, so none of them
passes for a record. (JSON escapes line breaks and the other C0 controls itself.)

Everything logs through the root logger, uvicorn's loggers included (serve runs uvicorn with
``log_config=None``), so every line of a process has the same format.
Messages never carry a secret: API keys and signing secrets are only ever logged masked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.visible import visible

__all__ = ["FIELDS", "TEXT_FORMAT", "JSONFormatter", "Share", "TextFormatter", "configure"]

FIELDS = ("delivery_id", "endpoint_id", "account", "event_id", "status")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, one line per record: every control and bidi character in it
    escaped; a traceback or stack after it, each of its lines indented and escaped."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        line, *details = super().format(record).split("\n")
        return "\n".join([line, *(f"    {visible(detail)}" for detail in details)])


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(log_format: str = "text") -> None:
    """Send every log record at INFO and above to stderr, in ``log_format`` (text or json).
    Called once, first thing, by each ``loops-bridge`` command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_bridge", False)]:
        root.removeHandler(old)
    handler._bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # each Loops call is logged by us
    logging.getLogger("alembic").setLevel(logging.WARNING)  # `migrate` says what it did


class Share:
    """How many lines of one kind are logged per key (an endpoint, a Loops account): at most
    ``per_second`` a second each, so a flood of refused or failing requests cannot flood the
    log; the next line logged says how many were not. Past :data:`Share.KEYS` keys (ids made
    up by a flood) it starts again."""

    KEYS = 10_000

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        # Per key: [second, lines logged in it, lines not logged since].
        self._windows: dict[str | int, list[int]] = {}

    def to_log(self, key: str | int) -> int | None:
        """Whether to log this one: None if ``key`` has had its share this second (it is only
        counted), else how many went unlogged before it."""
        second = int(self._clock())
        window = self._windows.get(key)
        if window is None or window[0] != second:
            if len(self._windows) >= self.KEYS:
                self._windows.clear()
            self._windows[key] = [second, 1, 0]
            return window[2] if window else 0
        if window[1] < self.per_second:
            window[1] += 1
            unlogged, window[2] = window[2], 0
            return unlogged
        window[2] += 1
        return None


def unlogged(count: int) -> str:
    """What the line logged after ``count`` unlogged ones adds: `` (3 more before this one,
    not logged)``."""
    return f" ({count} more before this one, not logged)" if count else ""
