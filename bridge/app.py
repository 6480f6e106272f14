"""The web app: the webhook receiver (:mod:`bridge.webhooks`), the health check, the
Prometheus metrics (:mod:`bridge.metrics`), the admin, and the delivery worker running beside
them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from bridge import metrics
from bridge.admin import create_admin
from bridge.delivery import Worker
from bridge.inbox import Inbox
from bridge.settings import Settings
from bridge.webhooks import WebhookReceiver

__all__ = ["create_app"]

log = logging.getLogger("bridge.app")


def create_app(settings: Settings, engine: Engine, *, run_worker: bool = True) -> Starlette:
    worker = Worker(engine, settings) if run_worker else None
    inbox = Inbox(engine, on_queued=worker.wake if worker else None)
    exposition = metrics.Exposition(engine)

    async def use_post(_: Request) -> JSONResponse:
        return JSONResponse(
            {"status": "rejected", "reason": "send webhooks with POST"}, status_code=405
        )

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

    async def metrics_page(_: Request) -> Response:
        body = await anyio.to_thread.run_sync(exposition.render)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        inbox.start()
        task = asyncio.create_task(worker.run(), name="delivery-worker") if worker else None
        try:
            yield
        finally:
            await inbox.drain()
            if worker and task:
                worker.stop()
                await task

    app = Starlette(
        routes=[
            # POST is taken by WebhookReceiver before the app sees it.
            Route(
                "/webhooks/{endpoint_id}",
                use_post,
                methods=["GET", "HEAD", "PUT", "PATCH", "DELETE"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/admin", lambda _: RedirectResponse("/admin/", 308)),
            Mount("/admin", create_admin(settings, engine, inbox)),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(WebhookReceiver, inbox=inbox, max_body_bytes=settings.max_body_bytes)
        ],
    )
    app.state.inbox = inbox  # for callers that run the app without its lifespan (tests)
    return app
