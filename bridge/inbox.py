"""The inbox: where a verified provider event becomes a stored delivery.

It decides, for one endpoint, whether an event is *queued* for Loops, *ignored* (a type the
endpoint does not accept, or no email address), or a *duplicate* (the provider retried), and
makes that decision durable before the webhook is answered.

Writes use group commit: requests arriving while a batch is on its way to disk join the
next one, so a burst of webhooks costs one statement and one fsync per batch instead of one
per request, and nothing is acknowledged before it is stored. The batches are written by a
process of the inbox's own (:mod:`bridge.writer`), off the event loop's interpreter lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

import providers
from bridge.models import IGNORED, QUEUED, Delivery, Endpoint, Rejection, Secret
from bridge.writer import StorageUnavailable, WriterProcess

__all__ = ["Inbox", "Receipt", "Route"]

log = logging.getLogger("bridge.inbox")

DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Route:
    """What the ingest path needs to know about one endpoint."""

    endpoint_id: str
    provider: providers.Provider
    secrets: tuple[str, ...]
    event_types: frozenset[str]


@dataclass(frozen=True, slots=True)
class Receipt:
    status: str  # queued | ignored | duplicate
    delivery_id: int
    reason: str | None = None


class Inbox:
    def __init__(
        self,
        engine: Engine,
        *,
        route_ttl: float = 2.0,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._route_ttl = route_ttl
        self._routes: dict[str, tuple[float, Route | None]] = {}
        self._loading: dict[str, asyncio.Future[Route | None]] = {}
        self._on_queued = on_queued
        self._writer_process = WriterProcess(engine.url.render_as_string(hide_password=False))
        self._pending: list[tuple[dict, asyncio.Future[int | None]]] = []
        self._outstanding: set[asyncio.Future[int | None]] = set()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- endpoints ------------------------------------------------------------------------

    async def route(self, endpoint_id: str) -> Route | None:
        """The endpoint's route, cached for a moment so a burst reads the database once.
        Changes made elsewhere (CLI, admin in another process) show within ``route_ttl``."""
        now = time.monotonic()
        cached = self._routes.get(endpoint_id)
        if cached and cached[0] > now:
            return cached[1]
        # One read per endpoint however many requests are waiting for it.
        loading = self._loading.get(endpoint_id)
        if loading is None:
            loading = asyncio.ensure_future(anyio.to_thread.run_sync(self._load_route, endpoint_id))
            self._loading[endpoint_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(endpoint_id, None))
        try:
            route = await asyncio.shield(loading)
        except Exception as exc:
            raise StorageUnavailable(str(exc)) from exc
        if len(self._routes) > 10_000:  # unknown ids must not grow the cache without bound
            self._routes.clear()
        self._routes[endpoint_id] = (time.monotonic() + self._route_ttl, route)
        return route

    def forget(self, endpoint_id: str) -> None:
        self._routes.pop(endpoint_id, None)

    def _load_route(self, endpoint_id: str) -> Route | None:
        with self._engine.connect() as conn:
            endpoint = conn.execute(
                select(Endpoint.provider, Endpoint.event_types).where(Endpoint.id == endpoint_id)
            ).first()
            if endpoint is None:
                return None
            values = conn.execute(
                select(Secret.value).where(Secret.endpoint_id == endpoint_id).order_by(Secret.id)
            ).scalars()
            return Route(
                endpoint_id=endpoint_id,
                provider=providers.get(endpoint.provider),
                secrets=tuple(values),
                event_types=frozenset(t for t in endpoint.event_types.split(",") if t),
            )

    # -- events ---------------------------------------------------------------------------

    async def accept(self, route: Route, event: providers.Event, payload: bytes) -> Receipt:
        """Store the event for this endpoint; return what was decided once it is on disk."""
        reason = _why_ignored(route, event)
        now = time.time()
        row = {
            "endpoint_id": route.endpoint_id,
            "event_id": event.id,
            "event_type": event.type,
            "occurred_at": event.occurred_at,
            "email": event.email,
            "payload": payload,
            "status": IGNORED if reason else QUEUED,
            "reason": reason,
            "attempts": 0,
            "received_at": now,
            "queued_at": None if reason else now,
            "next_attempt_at": None if reason else now,
            "finished_at": now if reason else None,
        }
        inserted = await self._store(row)
        if inserted is None:
            existing = await anyio.to_thread.run_sync(self._existing_id, row)
            return Receipt("duplicate", existing, "this endpoint already received this event")
        if reason:
            return Receipt(IGNORED, inserted, reason)
        if self._on_queued:
            self._on_queued()
        return Receipt(QUEUED, inserted)

    def _existing_id(self, row: dict) -> int:
        with self._engine.connect() as conn:
            return conn.execute(
                select(DELIVERIES.c.id).where(
                    DELIVERIES.c.endpoint_id == row["endpoint_id"],
                    DELIVERIES.c.event_id == row["event_id"],
                )
            ).scalar_one()

    async def _store(self, row: dict) -> int | None:
        """Queue ``row`` for the next group commit; the new id, or None if it existed."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done():
            self._wake = asyncio.Event()
            self._writer = loop.create_task(self._write_batches(), name="inbox-writer")
        future: asyncio.Future[int | None] = loop.create_future()
        self._pending.append((row, future))
        self._outstanding.add(future)
        future.add_done_callback(self._outstanding.discard)
        assert self._wake is not None
        self._wake.set()
        return await asyncio.shield(future)

    async def _write_batches(self) -> None:
        """Hand whatever is pending to the writer as one batch. Two batches may be on their
        way at once, so the writer never idles while the next batch is handed over."""
        assert self._wake is not None
        in_flight = asyncio.Semaphore(2)
        while True:
            await self._wake.wait()
            await in_flight.acquire()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                in_flight.release()
                continue
            task = asyncio.create_task(self._write_batch(batch))
            task.add_done_callback(lambda _: in_flight.release())

    async def _write_batch(self, batch: list[tuple[dict, asyncio.Future[int | None]]]) -> None:
        try:
            new_ids = await self._writer_process.write([row for row, _ in batch])
        except Exception as exc:  # storage down: every waiting request answers 503
            log.error(
                "could not store %d webhook(s); they were answered 503, so the sender retries "
                "them: %s",
                len(batch),
                exc,
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(StorageUnavailable(str(exc)))
            return
        for row, future in batch:  # of two rows with one key, the second is a repeat
            new_id = new_ids.pop((row["endpoint_id"], row["event_id"]), None)
            if not future.done():
                future.set_result(new_id)

    def start(self) -> None:
        """Start the writer process now rather than on the first webhook."""
        self._writer_process.start()

    async def drain(self) -> None:
        """Wait until everything handed to the inbox is written, then stop the writer."""
        if self._outstanding:
            await asyncio.gather(*self._outstanding, return_exceptions=True)
        await self._writer_process.close()

    # -- refused requests ---------------------------------------------------------------------

    def record_rejection(
        self, endpoint_id: str, status_code: int, reason: str, headers: Mapping[str, str]
    ) -> None:
        """Keep the refused request's headers (secrets redacted, never the body), at most
        ``REJECTIONS_KEPT`` per endpoint, for the admin's "why was this refused?"."""
        row = Rejection(
            endpoint_id=endpoint_id,
            at=time.time(),
            status_code=status_code,
            reason=reason,
            headers=json.dumps(redact(headers)),
        )
        newest = (
            select(Rejection.id)
            .where(Rejection.endpoint_id == endpoint_id)
            .order_by(Rejection.id.desc())  # type: ignore[union-attr]
            .limit(REJECTIONS_KEPT)
        )
        try:
            with Session(self._engine) as session:
                session.add(row)
                session.flush()
                session.exec(
                    sql_delete(Rejection).where(
                        Rejection.endpoint_id == endpoint_id,
                        Rejection.id.not_in(newest.scalar_subquery()),  # type: ignore[union-attr]
                    )
                )
                session.commit()
        except Exception as exc:  # the log of refusals is a convenience; never fail for it
            log.warning("could not record a refused request for endpoint %s: %s", endpoint_id, exc)


REJECTIONS_KEPT = 50
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as they can be shown: credentials hidden, signatures cut to their scheme."""
    shown: dict[str, str] = {}
    for name, value in list(headers.items())[:60]:
        name = name.lower()
        if name in _SECRET_HEADERS:
            value = "[redacted]"
        elif name.endswith("signature"):
            value = ",".join(
                part.split("=", 1)[0] + "=…" if "=" in part and not part.startswith("t=") else part
                for part in value.split(",")
            )
        shown[name] = value if len(value) <= 300 else value[:300] + f"… ({len(value)} chars)"
    return shown


def _why_ignored(route: Route, event: providers.Event) -> str | None:
    if event.type not in route.event_types:
        enabled = ", ".join(sorted(route.event_types))
        return (
            f"event type {event.type} is not enabled on this endpoint (enabled: {enabled}); "
            "enable it on the endpoint, or stop sending it from the provider"
        )
    if not event.email:
        return "the event carries no email address, and Loops only takes events that do"
    return None
