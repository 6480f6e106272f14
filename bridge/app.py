"""The web apps: the webhook routes (:mod:`bridge.webhooks`, and Loops' own webhooks in
:mod:`bridge.loops_webhooks`), the health check, the
Prometheus metrics (:mod:`bridge.metrics`), the admin, and the delivery worker running beside
them.

Where the operator's parts (the admin and ``/metrics``) are served is ``BRIDGE_ADMIN``::

    on      one app on BRIDGE_PORT: /webhooks/*, /loops-webhooks/*, /healthz, /metrics, /admin
    <port>  BRIDGE_PORT: the webhooks, /healthz     the port: /admin, /metrics, /healthz
    off     BRIDGE_PORT: the webhooks, /healthz     (metrics: ``worker --metrics-port``)

The public app answers any other path with the same JSON 404, so it does not tell the
internet whether an admin exists elsewhere. The delivery worker runs in the public app's
lifespan, once per process whichever apps are served; on the way out, the lifespan waits for
the inbox to have written every webhook it was handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import anyio.to_thread
from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bridge import alerts, loops_webhooks, metrics, webhooks
from bridge.admin import create_admin
from bridge.delivery import Worker
from bridge.inbox import Inbox
from bridge.settings import Settings

__all__ = ["Apps", "create_app", "create_apps"]

log = logging.getLogger("bridge.app")


class Apps(NamedTuple):
    public: Starlette
    """For BRIDGE_PORT; it runs the delivery worker."""
    admin: Starlette | None
    """For the port BRIDGE_ADMIN names; None with ``on`` (the admin is in ``public``) or
    ``off``."""


def create_app(
    settings: Settings, engine: Engine, *, run_worker: bool = True, worker: Worker | None = None
) -> Starlette:
    """The app on BRIDGE_PORT: with BRIDGE_ADMIN=on (the default), all of the bridge."""
    return create_apps(settings, engine, run_worker=run_worker, worker=worker).public


def create_apps(
    settings: Settings, engine: Engine, *, run_worker: bool = True, worker: Worker | None = None
) -> Apps:
    """``worker``: the delivery worker to run in the lifespan, if not the default one (tests
    give one that calls the Loops sandbox in-process); none with ``run_worker=False``."""
    if run_worker and worker is None:
        worker = Worker(engine, settings)
    elif not run_worker:
        worker = None
    inbox = Inbox(engine, on_queued=worker.wake if worker else None)

    async def not_found(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse({"status": "rejected", "reason": "not found"}, status_code=404)

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
        notifier = alerts.Notifier.from_settings(settings)
        watching = (
            asyncio.create_task(alerts.watch(engine, notifier), name="alerts")
            if worker and notifier.enabled
            else None
        )
        try:
            yield
        finally:
            if watching:
                watching.cancel()
            await inbox.drain()
            if worker and task:
                worker.stop()
                await task

    public: list[BaseRoute] = [
        webhooks.ROUTE,
        loops_webhooks.ROUTE,
        Route("/healthz", healthz, methods=["GET"]),
    ]
    operator = _operator_routes(settings, engine, inbox) if settings.admin != "off" else []
    app = Starlette(
        routes=public + operator if settings.admin == "on" else public,
        lifespan=lifespan,
        exception_handlers={404: not_found},
    )
    # No redirect to a path with or without a trailing slash: every path the public port
    # does not serve answers the same JSON 404, as it did before the webhook route was one.
    app.router.redirect_slashes = False
    app.state.webhooks = webhooks.Receiver(inbox, settings.max_body_bytes)
    app.state.loops_webhooks = loops_webhooks.Receiver(engine, settings.max_body_bytes)
    app.state.inbox = inbox  # for callers that run the app without its lifespan (tests)
    if settings.admin in ("on", "off"):
        return Apps(app, None)
    return Apps(app, Starlette(routes=[Route("/healthz", healthz, methods=["GET"]), *operator]))


def _operator_routes(settings: Settings, engine: Engine, inbox: Inbox) -> list[BaseRoute]:
    exposition = metrics.Exposition(engine)

    async def metrics_page(_: Request) -> Response:
        body = await anyio.to_thread.run_sync(exposition.render)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def home(request: Request) -> Response:
        """A person opening the bridge's address lands on the admin; anything else sent to
        "/" (a webhook pasted without its path) gets the JSON 404, never a redirect."""
        if request.method in ("GET", "HEAD"):
            return RedirectResponse("/admin/", 307)
        raise HTTPException(404)

    return [
        Route("/", home, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/admin", lambda _: RedirectResponse("/admin/", 308)),
        Mount("/admin", create_admin(settings, engine, inbox)),
    ]
