"""``POST /webhooks/{endpoint_id}``: the public ingest route, the hot path.

It reads the body (refusing it past the size limit while reading), verifies the provider's
signature on the raw bytes, parses only what the inbox needs, waits for the inbox to have
the event on disk (:mod:`bridge.inbox`) and answers. Loops is never called here: the
delivery worker does that after the answer, so the provider is never kept waiting on Loops.

It is a plain Starlette route, :data:`ROUTE`. Every method reaches it, and anything but
POST gets the same 405 whatever the id, so that nothing about an endpoint id shows in how a
request for it is answered. Until issue 9 it was hand-written ASGI in front of the app, to
skip Starlette's routing, request and response objects. Measured in-process, the route costs
about 13 us a request more (an unknown id: 47 us then, 60 us now), against about 400 us of
server CPU for a stored webhook under ``make bench``: not worth a mechanism of its own.

Answers, as JSON ``{"status": ..., "id" / "reason": ...}``:

    200  queued, duplicate or ignored (a type the bridge does not handle: counted, no id)
    400  rejected: signature, secret, not an event, Content-Length not the body's length
    404  rejected: no such endpoint. An unknown id and a malformed one (too long, bad
         characters, a '/', empty) get the very same bytes, so ids cannot be probed
    405  rejected: a method other than POST (any id, known or not), with Allow: POST
    408  rejected: the body did not arrive within :data:`BODY_SECONDS`
    413  rejected: larger than BRIDGE_MAX_BODY_BYTES, refused while reading
    415  rejected: a Content-Encoding other than identity (no webhook platform compresses)
    431  rejected: headers over :data:`MAX_HEADER_BYTES` together (uvicorn sets no limit)
    503  unavailable: storage unavailable, the provider retries later

Never a 500. Each answer to a POST is counted in ``loops_bridge_webhooks_total``
(:mod:`bridge.metrics`). A refusal for a known endpoint is logged and kept for the admin at
most :data:`REFUSALS_RECORDED_PER_SECOND` times a second per endpoint
(:class:`bridge.logs.Share`), so a flood of refused requests costs no more than that in log
lines and database writes.

The app puts a :class:`Receiver` in ``app.state.webhooks``: the inbox, the body limit, and
the count of refusals recorded per endpoint. :func:`read_body` (the 408, 413, 415, 431 and
the Content-Length 400) serves Loops' own webhooks too (:mod:`bridge.loops_webhooks`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import anyio.to_thread
import orjson
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.endpoints import HTTPEndpoint
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

import providers
from bridge import logs, metrics
from bridge.inbox import Inbox, StorageUnavailable

__all__ = [
    "BODY_SECONDS",
    "MAX_HEADER_BYTES",
    "REFUSALS_RECORDED_PER_SECOND",
    "ROUTE",
    "JSONAnswer",
    "Receiver",
    "Refused",
    "read_body",
    "receive_webhook",
]

log = logging.getLogger("bridge.webhooks")

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

# The metrics outcome of an answer is its "status", except for these two refusals.
_OUTCOME_BY_CODE = {404: "not_found", 413: "too_large"}
_NOT_FOUND = (404, {"status": "rejected", "reason": "unknown endpoint: check the URL"})
_USE_POST = {"status": "rejected", "reason": "send webhooks with POST"}
_BAD_LENGTH = (
    "the body's length is not its Content-Length: send the body exactly as it was signed, "
    "with its own length"
)
_HEADERS_TOO_LARGE = (
    f"the request headers are larger than {MAX_HEADER_BYTES} bytes together; webhook "
    "platforms send about 1 KB of them: check what a proxy in between adds"
)


class Receiver:
    """What the route keeps between requests."""

    def __init__(self, inbox: Inbox, max_body_bytes: int) -> None:
        self.inbox = inbox
        self.max_body_bytes = max_body_bytes
        self.refusals = logs.Share(REFUSALS_RECORDED_PER_SECOND)


class JSONAnswer(Response):
    """A webhook route's answer: ``{"status": ..., "id" / "reason": ...}`` as JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Refused(Exception):
    """A request :func:`read_body` refuses: the HTTP status, and the reason for the sender."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.answer = {"status": "rejected", "reason": reason}


async def receive_webhook(request: Request) -> Response:
    """``POST /webhooks/{endpoint_id}``."""
    receiver: Receiver = request.app.state.webhooks
    endpoint_id: str = request.path_params["endpoint_id"]
    try:
        status, answer = await _receive(receiver, endpoint_id, request)
    except ClientDisconnect:  # the sender hung up before its body was whole: no one to answer
        return Response(status_code=400)
    metrics.webhook_answered(_OUTCOME_BY_CODE.get(status) or answer["status"])
    refused = answer["status"] == "rejected" and status != 404
    unrecorded = receiver.refusals.to_log(endpoint_id) if refused else None
    if unrecorded is None:
        return JSONAnswer(answer, status)
    record = BackgroundTask(
        _record_refusal, receiver.inbox, endpoint_id, status, answer["reason"], unrecorded,
        request.headers,
    )  # fmt: skip
    return JSONAnswer(answer, status, background=record)


class _Webhooks(HTTPEndpoint):
    post = staticmethod(receive_webhook)

    async def method_not_allowed(self, request: Request) -> Response:
        return JSONAnswer(_USE_POST, 405, headers={"allow": "POST"})


ROUTE = Route("/webhooks/{endpoint_id:path}", _Webhooks)


async def _receive(
    receiver: Receiver, endpoint_id: str, request: Request
) -> tuple[int, dict[str, Any]]:
    try:
        # A malformed id is not looked up: it answers as an unknown one does.
        known = _ENDPOINT_ID.fullmatch(endpoint_id)
        route = await receiver.inbox.route(endpoint_id) if known else None
        if route is None:
            return _NOT_FOUND
        body = await read_body(request, receiver.max_body_bytes)
        route.provider.verify(body, request.headers, route.secrets)
        event = route.provider.parse(body, request.headers)
        receipt = await receiver.inbox.accept(route, event, body)
    except Refused as refused:
        return refused.status, refused.answer
    except providers.Rejected as exc:
        return 400, {"status": "rejected", "reason": str(exc)}
    except StorageUnavailable:
        return 503, {"status": "unavailable", "reason": "storage unavailable; retry later"}
    except ClientDisconnect:
        raise
    except Exception:  # never a 500 with a stack trace: make the sender retry instead
        log.exception("endpoint %s: unexpected error while receiving a webhook", endpoint_id)
        return 503, {"status": "unavailable", "reason": "internal error; retry later"}
    if receipt.status == "queued":
        return 200, {"status": "queued", "id": receipt.delivery_id}
    if receipt.delivery_id is None:  # a type the bridge does not handle: counted, not stored
        return 200, {"status": receipt.status, "reason": receipt.reason}
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a webhook request, read within the limits of every webhook route, or
    :class:`Refused`: 431 headers over :data:`MAX_HEADER_BYTES` together, 415 a
    Content-Encoding other than identity, 400 a Content-Length not the body's length, 413
    larger than ``limit`` (refused while reading, so never whole in memory), 408 not all
    there within :data:`BODY_SECONDS`. ClientDisconnect passes: the sender hung up."""
    # One pass over the headers (ASGI names are lower-case) for what the body needs.
    size, declared, encoding = 0, None, None
    for name, value in request.headers.raw:
        size += len(name) + len(value)
        if name == b"content-length":
            declared = value
        elif name == b"content-encoding":
            encoding = value
    if size > MAX_HEADER_BYTES:
        raise Refused(431, _HEADERS_TOO_LARGE)
    if encoding and encoding.strip().lower() != b"identity":
        raise Refused(
            415,
            f"Content-Encoding {encoding[:40].decode('latin-1')!r} is not accepted: send the "
            "body uncompressed, as webhook platforms do (turn off request compression in any "
            "proxy in between)",
        )
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await _read_within(request, declared, limit)
    except TimeoutError:
        raise Refused(
            408,
            f"the body did not arrive within {BODY_SECONDS:g} seconds; a Content-Length "
            "larger than the body has the same effect",
        ) from None


async def _read_within(request: Request, declared: bytes | None, limit: int) -> bytes:
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Refused(400, _BAD_LENGTH)
        if len(declared) > 15 or int(declared) > limit:
            raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    # The server holds a request to its Content-Length; this is for one that does not.
    if declared is not None and size != int(declared):
        raise Refused(400, _BAD_LENGTH)
    return b"".join(chunks)


def _too_large(limit: int) -> Refused:
    return Refused(413, f"body larger than BRIDGE_MAX_BODY_BYTES ({limit})")


async def _record_refusal(
    inbox: Inbox, endpoint_id: str, status: int, reason: str, unrecorded: int, headers: Headers
) -> None:
    """After the answer: log the refusal and keep it for the admin, telling how many went
    unrecorded before it."""
    also = f" ({unrecorded} more refused before this one, not logged)" if unrecorded else ""
    log.info(
        "endpoint %s refused a request (%s): %s%s",
        endpoint_id,
        status,
        reason,
        also,
        extra={"endpoint_id": endpoint_id, "status": "rejected"},
    )
    try:
        route = await inbox.route(endpoint_id)  # cached: it was looked up for the request
    except StorageUnavailable:
        return  # nowhere to keep it; the log line above has it
    provider = route.provider if route else None
    await anyio.to_thread.run_sync(
        inbox.record_rejection, endpoint_id, status, reason, dict(headers), provider
    )
