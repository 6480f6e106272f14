"""The inbox: where a verified provider event becomes a stored delivery.

It decides, for one endpoint, whether an event is *queued* for Loops, *ignored* (a type the
endpoint does not accept, or no email address), or a *duplicate* (the provider retried), and
makes that decision durable before the webhook is answered::

    accept(route, event, body)  -> Receipt   queued | ignored | duplicate, once on disk
                                -> raises StorageUnavailable: nothing was acknowledged

Writes use group commit, in the serving process. One batch is written at a time, in a
worker thread (the event loop never waits on the database); requests that arrive while it
is being written join the next batch. A batch is one ``INSERT ... ON CONFLICT (endpoint_id,
event_id) DO NOTHING RETURNING`` and one commit: on SQLite (WAL, ``synchronous=FULL``, see
:mod:`bridge.db`) that commit is the batch's one fsync; on PostgreSQL, its one WAL flush.
Rows the database already had (the provider retried) come back from one ``SELECT`` in the
same transaction, so their requests answer ``duplicate`` with the first delivery's id.
Several requests for the same event in one batch: the first is written, the others are its
duplicates. If the batch fails, every request in it answers 503 and the provider retries.

Why a thread and not a process of its own (as before issue 9: a writer process speaking
pickle over a socket pair, with hand-written batch SQL): the plain design keeps the floor
``make bench`` checks (1,000 signed 7 KB webhooks a second, 0.20 of a bare Starlette app,
p99 under 50 ms) with room to spare; see bench/ingest.py and the README's Speed section
for the measured numbers.
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
from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

import providers
from bridge.models import IGNORED, QUEUED, Delivery, Endpoint, Rejection, Secret

__all__ = ["Inbox", "Receipt", "Route", "StorageUnavailable", "redact"]

log = logging.getLogger("bridge.inbox")

DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

Key = tuple[str, str]  # (endpoint_id, event_id): one delivery per event per endpoint


class StorageUnavailable(Exception):
    """The database could not take the write; the sender should retry later."""


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
        self._insert = (
            _INSERT[engine.dialect.name](DELIVERIES)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
            .returning(DELIVERIES.c.id, DELIVERIES.c.endpoint_id, DELIVERIES.c.event_id)
        )
        self._pending: list[tuple[dict, asyncio.Future[tuple[int, bool]]]] = []
        self._writing: asyncio.Task[None] | None = None

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
        """Store the event for this endpoint; return what was decided once it is on disk.
        Raises :class:`StorageUnavailable` if it could not be stored."""
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
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[tuple[int, bool]] = loop.create_future()
        self._pending.append((row, stored))
        if self._writing is None:
            self._writing = loop.create_task(self._write_pending(), name="inbox-writer")
        delivery_id, new = await stored
        if not new:
            return Receipt("duplicate", delivery_id, "this endpoint already received this event")
        if reason:
            return Receipt(IGNORED, delivery_id, reason)
        if self._on_queued:
            self._on_queued()
        return Receipt(QUEUED, delivery_id)

    async def drain(self) -> None:
        """Wait until everything handed to the inbox is written (or has failed)."""
        while self._writing is not None:
            await asyncio.wait([self._writing])

    async def _write_pending(self) -> None:
        """Write what is pending as one batch, then what arrived meanwhile, until none is."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)
        finally:
            self._writing = None

    async def _write(self, batch: list[tuple[dict, asyncio.Future[tuple[int, bool]]]]) -> None:
        firsts: dict[Key, dict] = {}
        for row, _ in batch:
            firsts.setdefault((row["endpoint_id"], row["event_id"]), row)
        # In key order: two processes writing batches that share events take their row locks
        # in the same order, so on PostgreSQL they wait for each other rather than deadlock.
        rows = [firsts[key] for key in sorted(firsts)]
        try:
            stored = await anyio.to_thread.run_sync(self._insert_batch, rows)
        except Exception as exc:  # storage down: every waiting request answers 503
            problem = _first_line(exc)
            log.error(
                "could not store %d webhook(s); they were answered 503, so the sender retries "
                "them: %s",
                len(batch),
                problem,
            )
            _fail(batch, problem)
            return
        except BaseException:  # cancelled (the loop is closing): nothing is acknowledged
            _fail(batch, "the bridge is stopping")
            raise
        for row, future in batch:
            if future.done():  # its sender hung up
                continue
            key = (row["endpoint_id"], row["event_id"])
            found = stored.get(key)
            if found is None:  # it conflicted, then was gone before it could be read
                future.set_exception(StorageUnavailable(f"delivery {key} changed meanwhile"))
            else:  # of several rows with one key, the first is the one written
                future.set_result((found[0], found[1] and firsts[key] is row))

    def _insert_batch(self, rows: list[dict]) -> dict[Key, tuple[int, bool]]:
        """In a worker thread: insert ``rows`` (one per key) in one transaction; for each
        key, the delivery id and whether this batch created it."""
        with self._engine.begin() as conn:
            stored = {
                (endpoint_id, event_id): (delivery_id, True)
                for delivery_id, endpoint_id, event_id in conn.execute(self._insert, rows)
            }
            keys = [(row["endpoint_id"], row["event_id"]) for row in rows]
            if seen := [key for key in keys if key not in stored]:
                found = conn.execute(
                    select(DELIVERIES.c.id, DELIVERIES.c.endpoint_id, DELIVERIES.c.event_id).where(
                        tuple_(DELIVERIES.c.endpoint_id, DELIVERIES.c.event_id).in_(seen)
                    )
                )
                stored.update({(e, v): (delivery_id, False) for delivery_id, e, v in found})
        return stored

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _fail(batch: list[tuple[dict, asyncio.Future[tuple[int, bool]]]], problem: str) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(StorageUnavailable(problem))
