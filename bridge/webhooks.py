"""``POST /webhooks/{endpoint_id}``: the public ingest route, the hot path.

It reads the body (refusing it past the size limit while reading), verifies the provider's
signature on the raw bytes, parses only what the inbox needs, waits for one durable write
and answers. Loops is never called here: the delivery worker does that after the answer,
so the provider is never kept waiting on Loops.

It is plain ASGI in front of the Starlette app rather than a Starlette route: on this path
the framework's request and response objects and its middleware stack cost about as much
as the bridge's own work (see bench/ingest.py). It answers every request under
``/webhooks/``, whatever the method, so that nothing about an endpoint id shows in how a
request for it is answered; everything else goes on to the app.

Answers, as JSON ``{"status": ..., "id" / "reason": ...}``:

    200  queued, duplicate or ignored
    400  rejected: signature, secret, not an event, Content-Length not the body's length
    404  rejected: no such endpoint. An unknown id and a malformed one (too long, bad
         characters, a '/', empty) get the very same bytes, so ids cannot be probed
    405  rejected: a method other than POST (any id, known or not)
    408  rejected: the body did not arrive within :data:`BODY_SECONDS`
    413  rejected: larger than BRIDGE_MAX_BODY_BYTES, refused while reading
    415  rejected: a Content-Encoding other than identity (Stripe never compresses)
    431  rejected: headers over :data:`MAX_HEADER_BYTES` together (uvicorn sets no limit)
    503  unavailable: storage unavailable, the provider retries later

Never a 500. Each answer to a POST is counted in ``loops_bridge_webhooks_total``
(:mod:`bridge.metrics`). A refusal for a known endpoint is logged and kept for the admin at
most :data:`REFUSALS_RECORDED_PER_SECOND` times a second per endpoint, so a flood of refused
requests costs no more than that in log lines and database writes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import anyio.to_thread
import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

import providers
from bridge import metrics
from bridge.inbox import Inbox, StorageUnavailable

__all__ = [
    "BODY_SECONDS",
    "MAX_HEADER_BYTES",
    "PREFIX",
    "REFUSALS_RECORDED_PER_SECOND",
    "WebhookReceiver",
]

log = logging.getLogger("bridge.webhooks")

PREFIX = "/webhooks/"
# The whole body must have arrived this long after the headers. A sender that stalls, or
# whose Content-Length is larger than its body, would otherwise hold the request forever:
# uvicorn has no body timeout of its own.
BODY_SECONDS = 10.0
# Names and values of all headers together. Stripe sends about 1 KB; h11 and Node refuse
# past 16 KiB, uvicorn's default parser (httptools) has no limit at all.
MAX_HEADER_BYTES = 16_384
REFUSALS_RECORDED_PER_SECOND = 5
# What bridge.registry.new_endpoint_id makes ("ep_" and 128 random bits in base64url), and
# the bare form of ids made before the prefix. Anything else is not looked up at all.
_ENDPOINT_ID = re.compile(r"(?:ep_)?[A-Za-z0-9_-]{22}")

_JSON = [(b"content-type", b"application/json")]
# The metrics outcome of an answer is its "status", except for these two refusals.
_OUTCOME_BY_CODE = {404: "not_found", 413: "too_large"}
_NOT_FOUND = (404, {"status": "rejected", "reason": "unknown endpoint: check the URL"})
_USE_POST = orjson.dumps({"status": "rejected", "reason": "send webhooks with POST"})
_BAD_LENGTH = (
    400,
    {
        "status": "rejected",
        "reason": "the body's length is not its Content-Length: send the body exactly as it "
        "was signed, with its own length",
    },
)
_HEADERS_TOO_LARGE = (
    431,
    {
        "status": "rejected",
        "reason": f"the request headers are larger than {MAX_HEADER_BYTES} bytes together; "
        "Stripe sends about 1 KB of them: check what a proxy in between adds",
    },
)


class _TooLarge(Exception):
    pass


class _BadLength(Exception):
    pass


class _Gone(Exception):
    """The sender hung up before the body was complete: there is no one to answer."""


class WebhookReceiver:
    def __init__(self, app: ASGIApp, inbox: Inbox, max_body_bytes: int) -> None:
        self.app = app
        self.inbox = inbox
        self.max_body_bytes = max_body_bytes
        self._slow: set[asyncio.Task[Any]] = set()  # reading a body past BODY_SECONDS
        # Per endpoint: [second, refusals recorded in it, refusals not recorded since].
        self._refusals: dict[str, list[int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _answer(send, 405, _USE_POST, [(b"allow", b"POST")])
            return
        endpoint_id = scope["path"][len(PREFIX) :]
        headers = Headers(scope=scope)
        try:
            status, answer = await self._receive(endpoint_id, headers, receive)
        except _Gone:
            return
        metrics.webhook_answered(_OUTCOME_BY_CODE.get(status) or answer["status"])
        await _answer(send, status, orjson.dumps(answer))
        if answer["status"] == "rejected" and status != 404:
            await self._refused(endpoint_id, status, answer["reason"], headers)

    async def _receive(
        self, endpoint_id: str, headers: Headers, receive: Receive
    ) -> tuple[int, dict[str, Any]]:
        try:
            # A malformed id is not looked up: it answers as an unknown one does.
            known = _ENDPOINT_ID.fullmatch(endpoint_id)
            route = await self.inbox.route(endpoint_id) if known else None
            if route is None:
                return _NOT_FOUND
            # One pass over the headers (ASGI names are lower-case) for what the body needs.
            size, declared, encoding = 0, None, None
            for name, value in headers.raw:
                size += len(name) + len(value)
                if name == b"content-length":
                    declared = value
                elif name == b"content-encoding":
                    encoding = value
            if size > MAX_HEADER_BYTES:
                return _HEADERS_TOO_LARGE
            if encoding and encoding.strip().lower() != b"identity":
                reason = (
                    f"Content-Encoding {encoding[:40].decode('latin-1')!r} is not accepted: "
                    "send the body uncompressed, as Stripe does (turn off request compression "
                    "in any proxy in between)"
                )
                return 415, {"status": "rejected", "reason": reason}
            try:
                body = await self._read_body(declared, receive)
            except _TooLarge:
                limit = self.max_body_bytes
                reason = f"body larger than BRIDGE_MAX_BODY_BYTES ({limit})"
                return 413, {"status": "rejected", "reason": reason}
            except _BadLength:
                return _BAD_LENGTH
            except TimeoutError:
                reason = (
                    f"the body did not arrive within {BODY_SECONDS:g} seconds; a "
                    "Content-Length larger than the body has the same effect"
                )
                return 408, {"status": "rejected", "reason": reason}
            route.provider.verify(body, headers, route.secrets)
            event = route.provider.parse(body)
            receipt = await self.inbox.accept(route, event, body)
        except providers.Rejected as exc:
            return 400, {"status": "rejected", "reason": str(exc)}
        except StorageUnavailable:
            return 503, {"status": "unavailable", "reason": "storage unavailable; retry later"}
        except _Gone:
            raise
        except Exception:  # never a 500 with a stack trace: make the sender retry instead
            log.exception("endpoint %s: unexpected error while receiving a webhook", endpoint_id)
            return 503, {"status": "unavailable", "reason": "internal error; retry later"}
        if receipt.status == "queued":
            return 200, {"status": "queued", "id": receipt.delivery_id}
        if receipt.status == "ignored":
            log.info(
                "delivery %s ignored: %s",
                receipt.delivery_id,
                receipt.reason,
                extra={
                    "delivery_id": receipt.delivery_id,
                    "endpoint_id": endpoint_id,
                    "event_id": event.id,
                    "status": "ignored",
                },
            )
        return 200, {"status": receipt.status, "id": receipt.delivery_id, "reason": receipt.reason}

    async def _read_body(self, declared: bytes | None, receive: Receive) -> bytes:
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise _BadLength
            if len(declared) > 15 or int(declared) > self.max_body_bytes:
                raise _TooLarge
        chunks, size, more = [], 0, True
        # What asyncio.timeout() does, at a third of its cost on every request.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        timer = asyncio.get_running_loop().call_later(BODY_SECONDS, self._too_slow, task)
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge
                chunks.append(chunk)
                more = message.get("more_body", False)
        except asyncio.CancelledError:
            if task in self._slow:
                self._slow.discard(task)
                if task.uncancel() <= cancelling:  # cancelled by the timer alone
                    raise TimeoutError from None
            raise
        finally:
            timer.cancel()
        # The server holds a request to its Content-Length; this is for one that does not.
        if declared is not None and size != int(declared):
            raise _BadLength
        return b"".join(chunks)

    def _too_slow(self, task: asyncio.Task[Any]) -> None:
        self._slow.add(task)
        task.cancel()

    async def _refused(self, endpoint_id: str, status: int, reason: str, headers: Headers) -> None:
        """Log the refusal and keep it for the admin, unless this endpoint has had its share
        of records this second: then it is only counted, and told with the next record."""
        second = int(time.monotonic())
        window = self._refusals.get(endpoint_id)
        if window is None or window[0] != second:
            unrecorded = window[2] if window else 0
            self._refusals[endpoint_id] = [second, 1, 0]
        elif window[1] < REFUSALS_RECORDED_PER_SECOND:
            window[1] += 1
            unrecorded, window[2] = window[2], 0
        else:
            window[2] += 1
            return
        also = f" ({unrecorded} more refused before this one, not logged)" if unrecorded else ""
        log.info(
            "endpoint %s refused a request (%s): %s%s",
            endpoint_id,
            status,
            reason,
            also,
            extra={"endpoint_id": endpoint_id, "status": "rejected"},
        )
        await anyio.to_thread.run_sync(
            self.inbox.record_rejection, endpoint_id, status, reason, dict(headers)
        )


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _JSON + length + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
