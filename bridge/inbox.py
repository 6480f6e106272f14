"""The inbox: where a verified provider event becomes a stored delivery.

It decides, for one endpoint, whether an event is *queued* for Loops, *ignored* (a type the
endpoint does not accept, or no email address and no customer the endpoint can look up), or
a *duplicate* (the provider retried), and
makes that decision durable before the webhook is answered::

    accept(route, event, body) -> Receipt   queued | ignored | duplicate, once on disk
                               -> raises StorageUnavailable: nothing was acknowledged

Writes use group commit, in the serving process, by one writer thread of the inbox's own
(started with the first event, stopped by :meth:`Inbox.drain`): the event loop hands it the
row and waits for the answer, never for the database. The thread writes whatever is waiting
as one batch, hands the answers back to the loop in one callback, and starts on what arrived
meanwhile. A batch is one ``INSERT ... ON CONFLICT (endpoint_id, event_id) DO NOTHING
RETURNING id`` and one commit, so one fsync: SQLite runs WAL with ``synchronous=FULL``
(:mod:`bridge.db`), PostgreSQL flushes its WAL at commit. Rows the database already had (the
provider retried) are read back in the same transaction, and their requests answer
``duplicate`` with the first delivery's id; of several requests for one event in a batch, the
first is written and the others are its duplicates. If the batch fails, every request in it
answers 503, nothing of it stays, and the provider retries.

On SQLite, a second thread of the inbox's (:class:`_Checkpoints`) copies the WAL into the
database file beside the writer, so that no batch waits for a checkpoint.

Why one writer thread that takes the next batch itself, rather than ``anyio.to_thread`` per
batch: measured with bench/ingest.py, each batch then also waited in the event loop's queue,
behind the requests being parsed, to start (4.5 ms) and to hand its answers back (2.5 ms),
on top of a 6.5 ms write: batches of 31 webhooks every 18 ms, against 16 every 6 ms now.
Why not a process of its own, as before issue 9 (a writer process speaking pickle over a
socket pair, with hand-written batch SQL): measured with ``make bench`` on this 2-core
machine, the thread does about as well as the process did (2,000 to 2,700 signed 7 KB
webhooks a second, 0.27 to 0.33 of a bare Starlette app; the process: 2,150, 0.30), far
above the 1,000 a second the floor asks and the 10 a second Loops takes per account. SQLite's
own work and the fsync run without the interpreter lock. The README's Speed section has the
numbers, and what keeps the p99 above 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import delete as sql_delete
from sqlalchemy import select, tuple_
from sqlalchemy.engine import Engine
from sqlmodel import Session

import providers
from bridge import db, logs, metrics
from bridge.lookups import Lookups
from bridge.models import (
    IGNORED,
    QUEUED,
    Delivery,
    Endpoint,
    Rejection,
    Secret,
    UnsupportedEvent,
)

__all__ = ["SHOWN_HEADERS", "Inbox", "Receipt", "Route", "StorageUnavailable", "redact"]

log = logging.getLogger("bridge.inbox")

DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
UNSUPPORTED = UnsupportedEvent.__table__  # type: ignore[attr-defined]
CHECKPOINT_BYTES = 1_000_000  # of webhook bodies: about 1.5 MB of WAL, a third of SQLite's own

Key = tuple[str, str]  # (endpoint_id, event_id): one delivery per event per endpoint
# A row handed to the writer thread, and the future its request waits on: (id, new).
_Waiting = tuple[dict, "asyncio.Future[tuple[int, bool]]"]


class StorageUnavailable(Exception):
    """The database could not take the write; the sender should retry later."""


@dataclass(frozen=True, slots=True)
class Route:
    """What the ingest path needs to know about one endpoint."""

    endpoint_id: str
    provider: providers.Provider
    secrets: tuple[str, ...]
    event_types: frozenset[str]
    # The endpoint has an API key of its platform (Stripe's) to look a customer's email up
    # with at delivery (providers.Event.lookup). Only whether it has one: the key itself is
    # not decrypted on the ingest path.
    can_look_up: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    status: str  # queued | ignored | duplicate
    delivery_id: int | None  # None: a type the bridge does not handle, only counted
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
        self._routes = Lookups(self._load_route, route_ttl)
        self._failures = logs.Share(1)  # lines a second per endpoint that cannot be read
        self._on_queued = on_queued
        self._insert = (
            db.insert(engine, DELIVERIES)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
            .returning(DELIVERIES.c.id, DELIVERIES.c.endpoint_id, DELIVERIES.c.event_id)
        )
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    # -- endpoints ------------------------------------------------------------------------

    async def route(self, endpoint_id: str) -> Route | None:
        """The endpoint's route (None: no such endpoint), read once for a burst and kept for
        ``route_ttl`` seconds (:mod:`bridge.lookups`)."""
        try:
            return await self._routes.get(endpoint_id)
        except Exception as exc:
            problem = db.problem(exc)
            if (unlogged := self._failures.to_log(endpoint_id)) is not None:
                log.error(
                    "could not read endpoint %s, so its webhooks are answered 503 and the "
                    "sender retries them: %s%s",
                    endpoint_id,
                    problem,
                    logs.unlogged(unlogged),
                )
            raise StorageUnavailable(problem) from exc

    def forget(self, endpoint_id: str) -> None:
        self._routes.forget(endpoint_id)

    def _load_route(self, endpoint_id: str) -> Route | None:
        with self._engine.connect() as conn:
            endpoint = conn.execute(
                select(
                    Endpoint.provider,
                    Endpoint.event_types,
                    Endpoint.stripe_api_key.is_not(None).label("can_look_up"),  # type: ignore[union-attr]
                ).where(Endpoint.id == endpoint_id)
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
                can_look_up=bool(endpoint.can_look_up),
            )

    # -- events ---------------------------------------------------------------------------

    async def accept(self, route: Route, event: providers.Event, payload: bytes) -> Receipt:
        """Store the event for this endpoint; return what was decided once it is on disk.
        Raises :class:`StorageUnavailable` if it could not be stored.

        An event of a type the provider does not handle at all (``stripe listen`` forwards
        every type) is not stored: it is counted per endpoint and type
        (:func:`unsupported_types`), so the log does not fill with them."""
        if event.type not in route.provider.event_types:
            reason = _unsupported(route, event)
            try:
                await anyio.to_thread.run_sync(self._count_unsupported, route.endpoint_id, event)
            except Exception as exc:
                raise StorageUnavailable(str(exc)) from exc
            return Receipt(IGNORED, None, reason)
        reason = _why_ignored(route, event)
        now = time.time()
        row = {
            "endpoint_id": route.endpoint_id,
            "event_id": event.id,
            "event_type": event.type,
            "occurred_at": event.occurred_at,
            "email": event.email,
            "user_id": event.user_id,
            "lookup": event.lookup,
            "deletion": event.deletion,
            "payload": payload,
            "status": IGNORED if reason else QUEUED,
            "reason": reason,
            "attempts": 0,
            "received_at": now,
            "queued_at": None if reason else now,
            "next_attempt_at": None if reason else now,
            "finished_at": now if reason else None,
        }
        stored: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        if self._writer is None or not self._writer.is_alive():  # or it died of a bug
            self._writer = threading.Thread(
                target=self._write_batches, args=(self._queue,), name="inbox-writer", daemon=True
            )
            self._writer.start()
        self._queue.put((row, stored))
        delivery_id, new = await stored
        if not new:
            return Receipt("duplicate", delivery_id, "this endpoint already received this event")
        if reason:
            return Receipt(IGNORED, delivery_id, reason)
        if self._on_queued:
            self._on_queued()
        return Receipt(QUEUED, delivery_id)

    async def drain(self) -> None:
        """Wait until everything handed to the inbox is written (or has failed), and stop
        the writer thread; the next event starts it again."""
        writer, waiting = self._writer, self._queue
        self._writer, self._queue = None, queue.SimpleQueue()
        if writer is not None:
            waiting.put(None)  # after everything handed over before it
            await anyio.to_thread.run_sync(writer.join)

    def _write_batches(self, waiting: queue.SimpleQueue[_Waiting | None]) -> None:
        """The writer thread: write whatever is waiting as one batch, then again, until
        told to stop. Each batch's answers go back to the event loop in one callback."""
        checkpoints = _Checkpoints(self._engine) if self._engine.dialect.name == "sqlite" else None
        try:
            while True:
                batch: list[_Waiting] = []
                item = waiting.get()  # blocks until there is something to write
                while item is not None:
                    batch.append(item)
                    try:
                        item = waiting.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    started = time.perf_counter()
                    outcomes = self._write(batch)
                    metrics.inbox_batch_written(time.perf_counter() - started)
                    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
                    for (_, future), outcome in zip(batch, outcomes, strict=True):
                        by_loop.setdefault(future.get_loop(), []).append((future, outcome))
                    for loop, answers in by_loop.items():
                        with contextlib.suppress(RuntimeError):  # that loop is closed
                            loop.call_soon_threadsafe(_settle, answers)
                    if checkpoints:
                        checkpoints.wrote(sum(len(row["payload"]) for row, _ in batch))
                if item is None:
                    return
        finally:
            if checkpoints:
                checkpoints.stop()

    def _write(self, batch: list[_Waiting]) -> list[tuple[int, bool] | str]:
        """Store the batch: for each of its requests, the delivery id and whether it is new
        (the first of its event in the batch, and not stored before), or why it failed."""
        firsts: dict[Key, dict] = {}
        for row, _ in batch:
            firsts.setdefault((row["endpoint_id"], row["event_id"]), row)
        # In key order: two processes writing batches that share events take their row locks
        # in the same order, so on PostgreSQL they wait for each other rather than deadlock.
        try:
            stored = self._insert_batch([firsts[key] for key in sorted(firsts)])
        except Exception as exc:  # storage down: every waiting request answers 503
            problem = db.problem(exc)
            log.error(
                "could not store %d webhook(s); they were answered 503, so the sender retries "
                "them: %s",
                len(batch),
                problem,
            )
            return [problem] * len(batch)
        outcomes: list[tuple[int, bool] | str] = []
        for row, _ in batch:
            key = (row["endpoint_id"], row["event_id"])
            found = stored.get(key)
            if found is None:  # it conflicted, then was gone before it could be read
                outcomes.append(f"delivery of event {key[1]} changed meanwhile")
            else:  # of several rows with one key, the first is the one written
                outcomes.append((found[0], found[1] and firsts[key] is row))
        return outcomes

    def _insert_batch(self, rows: list[dict]) -> dict[Key, tuple[int, bool]]:
        """In the writer thread: insert ``rows`` (one per key) in one transaction; for each
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

    def _count_unsupported(self, endpoint_id: str, event: providers.Event) -> None:
        now = time.time()
        insert = db.insert(self._engine, UNSUPPORTED).values(
            endpoint_id=endpoint_id, event_type=event.type, count=1, first_at=now, last_at=now
        )
        with self._engine.begin() as conn:
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["endpoint_id", "event_type"],
                    set_={"count": UNSUPPORTED.c.count + 1, "last_at": now},
                )
            )

    # -- refused requests ---------------------------------------------------------------------

    def record_rejection(
        self,
        endpoint_id: str,
        status_code: int,
        reason: str,
        headers: Mapping[str, str],
        provider: providers.Provider | None = None,
    ) -> None:
        """Keep the refused request's headers (as :func:`redact` shows them; never the
        body), at most ``REJECTIONS_KEPT`` per endpoint, for the admin's "why was this
        refused?"."""
        row = Rejection(
            endpoint_id=endpoint_id,
            at=time.time(),
            status_code=status_code,
            reason=reason,
            headers=json.dumps(redact(headers, provider)),
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
# Headers shown as they are: what a sender, a proxy or a client library sets, never a secret.
# A provider's own headers are shown its way (Provider.redact); any other header may be
# anyone's credential (X-Webhook-Secret, X-Hub-Signature-256, ...).
SHOWN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "forwarded",
        "host",
        "transfer-encoding",
        "user-agent",
        "via",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
    }
)


def redact(
    headers: Mapping[str, str], provider: providers.Provider | None = None
) -> dict[str, str]:
    """Headers as they can be shown: the provider's own as it shows them, the common ones of
    :data:`SHOWN_HEADERS` as they are, and of every other only its length and the start of
    its SHA-256, enough to tell whether two requests sent the same value."""
    shown: dict[str, str] = {}
    for name, value in list(headers.items())[:60]:
        name = name.lower()
        if provider and (own := provider.redact(name, value)) is not None:
            value = own
        elif name not in SHOWN_HEADERS:
            digest = hashlib.sha256(value.encode()).hexdigest()
            value = f"[{len(value)} chars, sha256 {digest[:8]}]"
        shown[name] = value if len(value) <= 300 else value[:300] + f"… ({len(value)} chars)"
    return shown


def unsupported_types(engine: Engine, endpoint_id: str) -> list[tuple[str, int, float]]:
    """The types the endpoint received that its provider does not handle: (event type, how
    many, last received, unix time), most recent first."""
    with engine.connect() as conn:
        return [
            (event_type, count, last_at)
            for event_type, count, last_at in conn.execute(
                select(UNSUPPORTED.c.event_type, UNSUPPORTED.c.count, UNSUPPORTED.c.last_at)
                .where(UNSUPPORTED.c.endpoint_id == endpoint_id)
                .order_by(UNSUPPORTED.c.last_at.desc())
            )
        ]


def _unsupported(route: Route, event: providers.Event) -> str:
    return (
        f"this bridge does not handle {route.provider.label} event type {event.type}; "
        "stop sending it from the provider (it is counted, not stored)"
    )


def _why_ignored(route: Route, event: providers.Event) -> str | None:
    if event.type not in route.event_types:
        enabled = ", ".join(sorted(route.event_types))
        return (
            f"event type {event.type} is not enabled on this endpoint (enabled: {enabled}); "
            "enable it on the endpoint, or stop sending it from the provider"
        )
    if event.email or (event.deletion and event.user_id):  # user.deleted: the id only
        return None
    if event.lookup and route.can_look_up:  # its email is looked up at delivery
        return None
    if event.lookup:
        label = route.provider.label
        return (
            f"the event carries no email address, only {label} customer {event.lookup}, and "
            f"this endpoint has no {label} API key to look its email up with: add one "
            f"(`loops-bridge endpoints set-stripe-key {route.endpoint_id} -`, or on the "
            "endpoint's page in the admin)"
        )
    return "the event carries no email address, and Loops only takes events that do"


class _Checkpoints:
    """SQLite: a thread that copies the WAL into the database file (a PASSIVE checkpoint,
    which runs beside the writer's next batches) after every :data:`CHECKPOINT_BYTES` of
    webhooks written, so that the WAL stays short and no commit of the writer has to do it.
    Otherwise the commit that takes the WAL past 1,000 pages (4 MB) does it, about one batch
    in ten, 15 to 20 ms longer (https://www.sqlite.org/wal.html#automatic_checkpoint).
    Measured with bench/ingest.py, in pairs of runs: 13 to 25 % more webhooks a second, and a
    p99 of 39 to 42 ms instead of 50 to 58. If this thread falls behind, the writer's commits
    checkpoint as before."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._written = 0
        self._due = self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbox-checkpoints", daemon=True)
        self._thread.start()

    def wrote(self, size: int) -> None:
        self._written += size
        if self._written >= CHECKPOINT_BYTES:
            self._written, self._due = 0, True
            self._wake.set()

    def stop(self) -> None:
        """Stop, after the checkpoint that is due, if one is."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._due:
                self._due = False
                try:
                    with self._engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception as exc:  # the writer's commits checkpoint instead
                    log.warning("could not checkpoint the SQLite WAL: %s", exc)
            if self._stopping:
                return


def _settle(answers: list[tuple[asyncio.Future[tuple[int, bool]], tuple[int, bool] | str]]) -> None:
    """On the event loop: answer the requests of a written batch that still wait."""
    for future, outcome in answers:
        if future.done():  # its sender hung up
            continue
        if isinstance(outcome, str):
            future.set_exception(StorageUnavailable(outcome))
        else:
            future.set_result(outcome)
