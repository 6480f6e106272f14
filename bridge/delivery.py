"""Delivery: take queued deliveries to Loops, one contact at a time, at each account's pace.

For one delivery, Loops must end up with the contact and, if the endpoint maps one, the
event. The calls, fewest first:

    contact unknown to the bridge in that account
        POST /contacts/create  {email, source, userGroup, names}
            200 -> known, names already set      409 -> known, names still to set
    endpoint maps a Loops event
        POST /events/send      {email, eventName, eventProperties, names still to set}
                               Idempotency-Key: stable per endpoint + provider event
    otherwise, names still to set
        PUT /contacts/update   {email, names}

Each step that succeeded is remembered (the contact table), so a retry resumes where the
last attempt stopped and never re-creates a contact or re-fires a workflow. Every call is
recorded with its answer. Outcomes (see :mod:`bridge.loops`): RETRY puts the delivery back in
the queue with exponential backoff and jitter, GIVE_UP fails it with Loops' message.

Retry schedule: 5 s (BRIDGE_RETRY_BASE_SECONDS), 10 s, 20 s, ... doubling up to 1 hour
between tries, each +-20 % jitter, for 3 days after it was queued (as long as Stripe
itself retries); then it fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

import providers
from bridge.loops import Answer, LoopsClient, Outcome
from bridge.models import (
    DELIVERED,
    FAILED,
    QUEUED,
    Connection,
    Contact,
    Delivery,
    Endpoint,
    LoopsCall,
)
from bridge.pacing import Pacer
from bridge.settings import Settings

__all__ = ["Worker", "backoff", "idempotency_key"]

log = logging.getLogger("bridge.delivery")

MAX_AGE = 3 * 24 * 3600.0
_LOOK_AGAIN_AFTER = 0.05
LONGEST_WAIT = 3600.0


def backoff(attempt: int, first: float) -> float:
    """Seconds to wait before try ``attempt + 1``, after ``attempt`` failed tries."""
    return min(LONGEST_WAIT, first * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def idempotency_key(endpoint_id: str, event_id: str) -> str:
    """Stable per endpoint and provider event, within Loops' 100 characters."""
    key = f"{endpoint_id}:{event_id}"
    return key if len(key) <= 100 else hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    endpoint_id: str
    event_id: str
    email: str
    attempts: int
    queued_at: float
    idempotency_key: str | None
    connection_id: int
    connection_name: str
    api_key: str
    provider: str
    user_group: str | None
    loops_event: str | None
    sync_names: bool

    @property
    def contact_key(self) -> tuple[int, str]:
        return self.connection_id, self.email.lower()

    def names(self, details: providers.Details) -> dict[str, str]:
        if not self.sync_names:
            return {}
        names = {"firstName": details.first_name, "lastName": details.last_name}
        return {k: v for k, v in names.items() if v}  # a missing name never clears one


@dataclass(slots=True)
class Progress:
    """What one attempt did so far, written with its outcome."""

    calls: list[Answer] = field(default_factory=list)
    contact_known: bool = False  # Loops has the contact now (created, or 409)


@dataclass(frozen=True, slots=True)
class Settled:
    status: str
    reason: str
    next_attempt_at: float | None = None


class Worker:
    def __init__(self, engine: Engine, settings: Settings, *, poll_seconds: float = 1.0) -> None:
        self._engine = engine
        self._settings = settings
        self._poll_seconds = poll_seconds
        self._client = LoopsClient(settings.loops_api_url)
        self._pacers: dict[int, Pacer] = {}
        self._busy_contacts: set[tuple[int, str]] = set()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("delivery worker started, sending to %s", self._settings.loops_api_url)
        try:
            while not self._stopping:
                self._wake.clear()
                if len(self._tasks) < self._settings.worker_concurrency:
                    self._start_due(await anyio.to_thread.run_sync(self._due_jobs))
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                except TimeoutError:
                    pass
                # A burst of webhooks wakes the worker thousands of times a second; look at
                # the queue at most 20 times a second all the same.
                await asyncio.sleep(_LOOK_AGAIN_AFTER)
            if self._tasks:
                await asyncio.wait(list(self._tasks.values()))
        finally:
            await self._client.aclose()
            log.info("delivery worker stopped")

    def _start_due(self, jobs: list[Job]) -> None:
        for job in jobs:
            if len(self._tasks) >= self._settings.worker_concurrency:
                return
            if job.id in self._tasks or job.contact_key in self._busy_contacts:
                continue  # one delivery per contact at a time, in arrival order
            self._busy_contacts.add(job.contact_key)
            task = asyncio.create_task(self._deliver(job), name=f"delivery-{job.id}")
            self._tasks[job.id] = task

    def _due_jobs(self) -> list[Job]:
        query = (
            select(
                Delivery.id,
                Delivery.endpoint_id,
                Delivery.event_id,
                Delivery.email,
                Delivery.attempts,
                Delivery.queued_at,
                Delivery.idempotency_key,
                Connection.id.label("connection_id"),
                Connection.name.label("connection_name"),
                Connection.api_key,
                Endpoint.provider,
                Endpoint.user_group,
                Endpoint.loops_event,
                Endpoint.sync_names,
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .join(Connection, Connection.id == Endpoint.connection_id)
            .where(
                Delivery.status == QUEUED,
                Delivery.next_attempt_at <= time.time(),
                Endpoint.paused.is_(False),  # type: ignore[attr-defined]
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(self._settings.worker_concurrency * 4)
        )
        with self._engine.connect() as conn:
            return [Job(**row._mapping) for row in conn.execute(query)]

    async def _deliver(self, job: Job) -> None:
        progress = Progress()
        try:
            try:
                settled = await self._attempt(job, progress)
            except Exception as exc:  # a bug must not lose the delivery: retry it later
                log.exception("delivery %s: unexpected error", job.id)
                settled = self._retry(job, f"internal error in the bridge: {exc}")
            # Settle before letting go of the contact, so the next poll sees the new state.
            await anyio.to_thread.run_sync(self._settle, job, settled, progress)
            log.info("delivery %s %s: %s", job.id, settled.status, settled.reason)
        except Exception:
            log.exception("delivery %s: could not record the outcome; it stays queued", job.id)
        finally:
            self._busy_contacts.discard(job.contact_key)
            self._tasks.pop(job.id, None)
            self._wake.set()

    async def _attempt(self, job: Job, progress: Progress) -> Settled:
        done: list[str] = []
        provider = providers.get(job.provider)
        # The body is read for the delivery being made, not for every candidate polled.
        payload, known = await anyio.to_thread.run_sync(self._payload_and_contact, job)
        details = provider.details(payload)
        names = job.names(details)
        if not known:
            contact = {"email": job.email, "source": provider.contact_source}
            if job.user_group:
                contact["userGroup"] = job.user_group
            answer = await self._call(job, progress, self._client.create_contact, contact | names)
            if answer.outcome is Outcome.DONE:
                names, done = {}, ["contact created"]
            elif answer.outcome is Outcome.ALREADY:
                done = ["contact already in Loops"]
            else:
                return self._failure(job, answer)
            progress.contact_known = True
        if job.loops_event:
            event = {
                "email": job.email,
                "eventName": job.loops_event,
                "eventProperties": details.properties,
                **names,
            }
            key = job.idempotency_key or idempotency_key(job.endpoint_id, job.event_id)
            answer = await self._call(job, progress, self._client.send_event, event, key)
            if answer.outcome is Outcome.ALREADY:
                done.append(f"event {job.loops_event} had already been sent (same idempotency key)")
            elif answer.outcome is Outcome.DONE:
                done.append(f"event {job.loops_event} sent")
            else:
                return self._failure(job, answer)
        elif names:
            contact = {"email": job.email, **names}
            answer = await self._call(job, progress, self._client.update_contact, contact)
            if answer.outcome is not Outcome.DONE:
                return self._failure(job, answer)
            done.append("names updated")
        return Settled(DELIVERED, "; ".join(done) or "contact already known, nothing to change")

    async def _call(self, job: Job, progress: Progress, method, *args) -> Answer:  # type: ignore[no-untyped-def]
        pacer = self._pacers.setdefault(job.connection_id, Pacer(self._settings.loops_rate_limit))
        await pacer.wait_turn()
        answer: Answer = await method(job.api_key, *args)
        if answer.status_code == 429:  # the whole account waits, not just this delivery
            pacer.hold(answer.retry_after or 1.0)
        progress.calls.append(answer)
        return answer

    def _failure(self, job: Job, answer: Answer) -> Settled:
        if answer.outcome is Outcome.RETRY:
            return self._retry(job, answer.message, answer.retry_after)
        hint = ""
        if answer.status_code in (401, 403):
            hint = f" (check the API key of Loops account {job.connection_name!r})"
        return Settled(FAILED, answer.message + hint)

    def _retry(self, job: Job, message: str, at_least: float | None = None) -> Settled:
        attempts = job.attempts + 1
        if time.time() - job.queued_at > MAX_AGE:
            return Settled(FAILED, f"gave up after {attempts} tries over 3 days: {message}")
        delay = max(backoff(attempts, self._settings.retry_base_seconds), at_least or 0.0)
        reason = f"{message}; try {attempts} failed, next try in {delay:.0f} s"
        return Settled(QUEUED, reason, time.time() + delay)

    # -- storage ------------------------------------------------------------------------------

    def _payload_and_contact(self, job: Job) -> tuple[bytes, bool]:
        with self._engine.connect() as conn:
            payload = conn.execute(
                select(Delivery.payload).where(Delivery.id == job.id)
            ).scalar_one()
            return payload, self._contact_known(job, conn)

    @staticmethod
    def _contact_known(job: Job, conn: sa.Connection) -> bool:
        query = select(Contact.email).where(
            Contact.connection_id == job.connection_id, Contact.email == job.contact_key[1]
        )
        return conn.execute(query).first() is not None

    def _settle(self, job: Job, settled: Settled, progress: Progress) -> None:
        """Record the attempt in one transaction: its Loops calls, the contact now known to
        exist, and the delivery's new state. (One write per delivery keeps the database's
        single write lock free for the inbox.)"""
        finished = time.time() if settled.status != QUEUED else None
        with self._engine.begin() as conn:
            if progress.calls:
                conn.execute(
                    insert(LoopsCall),
                    [
                        {
                            "delivery_id": job.id,
                            "method": a.method,
                            "path": a.path,
                            "request_body": a.request_body,
                            "status_code": a.status_code,
                            "response_body": a.response_body or a.message,
                            "started_at": a.started_at,
                            "duration_ms": a.duration_ms,
                        }
                        for a in progress.calls
                    ],
                )
            if progress.contact_known and not self._contact_known(job, conn):
                conn.execute(
                    insert(Contact).values(
                        connection_id=job.connection_id,
                        email=job.contact_key[1],
                        created_at=time.time(),
                    )
                )
            conn.execute(
                update(Delivery)
                .where(Delivery.id == job.id)
                .values(
                    status=settled.status,
                    reason=settled.reason,
                    attempts=job.attempts + 1,
                    next_attempt_at=settled.next_attempt_at,
                    finished_at=finished,
                )
            )
