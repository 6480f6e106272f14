"""The web app: the public webhook route and the health check.

``POST /webhooks/{endpoint_id}`` is the hot path. It reads the body (refusing it past the size
limit while reading), verifies the provider's signature on the raw bytes, parses only what
the inbox needs, waits for one durable write and answers. Loops is never called here: the
delivery worker does that after the answer, so Stripe is never kept waiting on Loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
import orjson
from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Mount, Route

import providers
from bridge.delivery import Worker
from bridge.inbox import Inbox, StorageUnavailable
from bridge.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("bridge.app")


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _JSON(JSONResponse):
    def render(self, content: object) -> bytes:
        return orjson.dumps(content)  # the answer is on the hot path too


def _answer(status_code: int, status: str, **fields: object) -> JSONResponse:
    return _JSON({"status": status, **fields}, status_code=status_code)


def create_app(settings: Settings, engine: Engine, *, run_worker: bool = True) -> Starlette:
    worker = Worker(engine, settings) if run_worker else None
    inbox = Inbox(engine, on_queued=worker.wake if worker else None)

    async def receive_webhook(request: Request) -> JSONResponse:
        endpoint_id = request.path_params["endpoint_id"]
        try:
            route = await inbox.route(endpoint_id)
            if route is None:
                return _answer(404, "rejected", reason="unknown endpoint: check the URL")
            try:
                body = await _read_body(request, settings.max_body_bytes)
            except _TooLarge:
                reason = f"body larger than BRIDGE_MAX_BODY_BYTES ({settings.max_body_bytes})"
                return _refuse(request, endpoint_id, 413, reason)
            route.provider.verify(body, request.headers, route.secrets)
            event = route.provider.parse(body)
            receipt = await inbox.accept(route, event, body)
        except providers.Rejected as exc:
            return _refuse(request, endpoint_id, 400, str(exc))
        except StorageUnavailable:
            return _answer(503, "unavailable", reason="storage unavailable; retry later")
        except Exception:  # never a 500 with a stack trace: make the sender retry instead
            log.exception("endpoint %s: unexpected error while receiving a webhook", endpoint_id)
            return _answer(503, "unavailable", reason="internal error; retry later")
        if receipt.status == "ignored":
            log.info("delivery %s ignored: %s", receipt.delivery_id, receipt.reason)
            return _answer(200, "ignored", id=receipt.delivery_id, reason=receipt.reason)
        if receipt.status == "duplicate":
            return _answer(200, "duplicate", id=receipt.delivery_id, reason=receipt.reason)
        return _answer(200, "queued", id=receipt.delivery_id)

    def _refuse(request: Request, endpoint_id: str, code: int, reason: str) -> JSONResponse:
        log.info("endpoint %s refused a request (%s): %s", endpoint_id, code, reason)
        response = _answer(code, "rejected", reason=reason)
        response.background = BackgroundTask(
            anyio.to_thread.run_sync,
            inbox.record_rejection,
            endpoint_id,
            code,
            reason,
            dict(request.headers),
        )
        return response

    async def healthz(_: Request) -> JSONResponse:
        def ping() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await anyio.to_thread.run_sync(ping)
        except Exception as exc:
            log.error("health check: database unreachable: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(worker.run(), name="delivery-worker") if worker else None
        try:
            yield
        finally:
            await inbox.drain()
            if worker and task:
                worker.stop()
                await task

    from bridge.admin import create_admin

    return Starlette(
        routes=[
            Route("/webhooks/{endpoint_id}", receive_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/admin", lambda _: RedirectResponse("/admin/", 308)),
            Mount("/admin", create_admin(settings, engine, inbox)),
        ],
        lifespan=lifespan,
    )
