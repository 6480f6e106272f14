"""``POST /webhooks/{endpoint_id}``: the public ingest route, the hot path.

It reads the body (refusing it past the size limit while reading), verifies the provider's
signature on the raw bytes, parses only what the inbox needs, waits for one durable write
and answers. Loops is never called here: the delivery worker does that after the answer,
so the provider is never kept waiting on Loops.

It is plain ASGI in front of the Starlette app rather than a Starlette route: on this path
the framework's request and response objects and its middleware stack cost about as much
as the bridge's own work (see bench/ingest.py). Everything else, including other methods on
these URLs, goes on to the app.

Answers, as JSON ``{"status": ..., "id" / "reason": ...}``: 200 queued, duplicate or
ignored; 400 rejected (signature, secret, not an event); 404 unknown endpoint; 413 too
large; 503 storage unavailable (the provider retries later). Never a 500. Each answer is
counted in ``loops_bridge_webhooks_total`` (:mod:`bridge.metrics`).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

import providers
from bridge import metrics
from bridge.inbox import Inbox, StorageUnavailable

__all__ = ["PREFIX", "WebhookReceiver"]

log = logging.getLogger("bridge.webhooks")

PREFIX = "/webhooks/"
_JSON = [(b"content-type", b"application/json")]
# The metrics outcome of an answer is its "status", except for these two refusals.
_OUTCOME_BY_CODE = {404: "not_found", 413: "too_large"}


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The sender hung up before the body was complete: there is no one to answer."""


class WebhookReceiver:
    def __init__(self, app: ASGIApp, inbox: Inbox, max_body_bytes: int) -> None:
        self.app = app
        self.inbox = inbox
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        endpoint_id = scope["path"][len(PREFIX) :]
        headers = Headers(scope=scope)
        try:
            status, answer = await self._receive(endpoint_id, headers, receive)
        except _Gone:
            return
        metrics.webhook_answered(_OUTCOME_BY_CODE.get(status) or answer["status"])
        body = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if answer["status"] == "rejected" and status != 404:
            log.info(
                "endpoint %s refused a request (%s): %s",
                endpoint_id,
                status,
                answer["reason"],
                extra={"endpoint_id": endpoint_id, "status": "rejected"},
            )
            await anyio.to_thread.run_sync(
                self.inbox.record_rejection, endpoint_id, status, answer["reason"], dict(headers)
            )

    async def _receive(
        self, endpoint_id: str, headers: Headers, receive: Receive
    ) -> tuple[int, dict[str, Any]]:
        try:
            route = await self.inbox.route(endpoint_id) if "/" not in endpoint_id else None
            if route is None:
                return 404, {"status": "rejected", "reason": "unknown endpoint: check the URL"}
            try:
                body = await self._read_body(headers, receive)
            except _TooLarge:
                limit = self.max_body_bytes
                reason = f"body larger than BRIDGE_MAX_BODY_BYTES ({limit})"
                return 413, {"status": "rejected", "reason": reason}
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

    async def _read_body(self, headers: Headers, receive: Receive) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _TooLarge
        chunks, size, more = [], 0, True
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
        return b"".join(chunks)
