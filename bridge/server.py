"""How ``loops-bridge serve`` runs uvicorn, on both ports.

- Forwarded headers (``X-Forwarded-For``, ``X-Forwarded-Proto``) are believed only from the
  proxies ``BRIDGE_TRUSTED_PROXIES`` names; with none, not at all, so a client is the
  address it connects from (uvicorn otherwise believes any from 127.0.0.1).
- :class:`SlowClientGuard`: every request's headers must have arrived within
  :data:`HEADER_SECONDS` of its first byte, and take at most :data:`MAX_HEADER_BYTES`;
  a connection that sends nothing is closed after as long. uvicorn has neither limit with
  its httptools parser: a client sending a header line every few seconds, or a header of
  many megabytes, would hold its connection and that memory for as long as it liked. An
  idle connection between two requests is closed by uvicorn after ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.settings import Settings

__all__ = ["HEADER_SECONDS", "MAX_HEADER_BYTES", "SlowClientGuard", "config"]

HEADER_SECONDS = 10.0
# Request line and headers together. Far above what browsers and webhook platforms send, so
# that the webhook route's own limit (16 KiB, answered in JSON) comes first.
MAX_HEADER_BYTES = 65_536
KEEP_ALIVE_SECONDS = 5


def config(app: Any, settings: Settings, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of one of serve's ports (on ``settings.host``); ``options``
    over it."""
    defaults: dict[str, Any] = {
        "host": settings.host,
        "port": port,
        "http": SlowClientGuard,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    return uvicorn.Config(app, **(defaults | options))


class SlowClientGuard(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline and a size limit for each request's
    headers: past either, a 408 or 431 answer and the connection closed. A request answered
    before its body came whole (a 404 for an unknown webhook id, a 401 from the admin, a
    405) gets as long again for the rest of its body, then the connection is closed: no
    route reads it, so nothing else would end a body sent a byte at a time."""

    header_seconds = HEADER_SECONDS
    max_header_bytes = MAX_HEADER_BYTES
    _deadline: asyncio.TimerHandle | None = None
    _unread_body: asyncio.TimerHandle | None = None
    _header_bytes = 0  # received since the request began, its headers still incomplete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still waiting after this piece: all of it was request line and headers.
        if self._deadline is not None and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"The request headers are over {self.max_header_bytes} bytes.")

    def on_response_complete(self) -> None:
        answered = self.cycle  # super() may start the next pipelined request's cycle
        super().on_response_complete()
        if answered is not None and answered.more_body and not self.transport.is_closing():
            self._unread_body = self.loop.call_later(self.header_seconds, self.transport.close)

    def on_message_complete(self) -> None:
        self._forget_unread_body()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._forget_unread_body()
        super().connection_lost(exc)

    def _forget_unread_body(self) -> None:
        if self._unread_body is not None:
            self._unread_body.cancel()
            self._unread_body = None

    def _await_headers(self) -> None:
        self._header_bytes = 0
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_seconds, self._too_slow)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self._refuse(408, f"The request headers took over {self.header_seconds:g} s to arrive.")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close; just close if nothing was sent yet, or if an answer
        to an earlier request on this connection is still being written."""
        self._stop_waiting()
        if self.transport.is_closing():
            return
        if self._header_bytes and (self.cycle is None or self.cycle.response_complete):
            body = message.encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "content-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        self.transport.close()
