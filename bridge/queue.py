"""The queue: the deliveries table as work shared by every worker process on one database.

Claiming. A worker claims due deliveries by writing its name and a lease on them
(``claimed_by``, ``lease_until``), renews the lease while it works, and clears both when it
records the outcome. A worker that dies loses its claims when the lease lapses (at most
BRIDGE_LEASE_SECONDS), and another worker takes them up. Claims are made one worker at a
time (PostgreSQL: one advisory transaction lock, rows read ``FOR UPDATE SKIP LOCKED``;
SQLite: ``BEGIN IMMEDIATE``), because a claim must see every other claim to keep its
promise that no two deliveries for the same contact in the same Loops account run at once.
A claim takes a few milliseconds, a worker makes at most 20 a second, and the claim is only
attempted when a read without locks found something due.

Accounts. What one Loops account is doing is shared in ``account_states`` (see
:mod:`bridge.models`). While an account is held (after a 429, or while it has a problem), no
delivery of it is claimed. An account with a problem gets one *probe* at a time: its next
queued delivery, due or not, is claimed when the hold ends. The probe's outcome decides for
the whole account::

    Loops answers (2xx, 409, 400, 404)   healthy: problem cleared, its queued deliveries due now
    5xx, timeout, connection error       outage: next probe in 1 s, 2 s, 4 s ... at most 20 s
    401, 403                             key refused: deliveries paused, probe every 30 s

So after an outage of any length, deliveries resume within about 20 s of Loops answering
again, however long each delivery's own backoff had grown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from bridge.loops import Answer
from bridge.models import (
    DELIVERED,
    IGNORED,
    QUEUED,
    AccountState,
    Connection,
    Contact,
    Delivery,
    Endpoint,
    LoopsCall,
)
from bridge.pacing import database_now, ensure_account, rate_in_use

__all__ = ["KEY", "OUTAGE", "Job", "Progress", "Queue", "Settled"]

OUTAGE, KEY = "outage", "key"  # account problems
_CLAIM_LOCK = 0x100B5B71D6E  # pg_advisory_xact_lock key of the claim step
_KEY_PROBE_EVERY = 30.0
_OUTAGE_PROBE_MAX = 20.0


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery with what delivering it needs."""

    id: int
    endpoint_id: str
    event_id: str
    occurred_at: int
    email: str
    attempts: int
    received_at: float
    queued_at: float
    idempotency_key: str | None
    connection_id: int
    connection_name: str
    api_key: str
    rate_limit: int  # requests per second for this account, all workers together
    provider: str
    user_group: str | None
    loops_event: str | None
    sync_names: bool
    account_problem: str | None  # OUTAGE or KEY: this delivery is the account's probe

    @property
    def contact_key(self) -> tuple[int, str]:
        return self.connection_id, self.email.lower()


@dataclass(slots=True)
class Progress:
    """What one attempt did so far, written with its outcome."""

    calls: list[Answer] = field(default_factory=list)
    contact_known: bool = False  # Loops has the contact now (created, or 409)
    names_sent: bool = False  # the event's names reached Loops


@dataclass(frozen=True, slots=True)
class Settled:
    status: str
    reason: str
    next_attempt_at: float | None = None
    account_problem: str | None = None  # OUTAGE or KEY: what this attempt saw of the account
    account_message: str = ""


class Queue:
    def __init__(self, engine: Engine, worker: str, lease_seconds: float, rate_limit: int) -> None:
        self._engine = engine
        self._worker = worker
        self._lease = lease_seconds
        self._default_rate = rate_limit
        self._now = database_now(engine.dialect.name)
        self._postgres = engine.dialect.name == "postgresql"

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, room: int, running: dict[int, int], per_account: int) -> list[Job]:
        """Claim up to ``room`` deliveries, one per contact, at most ``per_account`` running
        per Loops account (``running``: this worker's deliveries per account)."""
        with self._engine.connect() as conn:  # most polls find nothing: no lock for those
            due = conn.execute(self._due_query(1).with_only_columns(Delivery.id)).first()
            probe_due = conn.execute(
                select(AccountState.connection_id).where(
                    AccountState.problem_kind.is_not(None),  # type: ignore[union-attr]
                    sa.func.coalesce(AccountState.held_until, 0) <= self._now,
                )
            ).first()
            if due is None and probe_due is None:
                return []
        with self._engine.begin() as conn:
            if self._postgres:
                conn.execute(select(sa.func.pg_advisory_xact_lock(_CLAIM_LOCK)))
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            now = conn.execute(select(self._now)).scalar_one()
            busy = {
                (connection_id, email.lower())
                for connection_id, email in conn.execute(
                    select(Endpoint.connection_id, Delivery.email)
                    .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                    # "> ''" and not "IS NOT NULL": SQLite scans the whole table for the
                    # latter, and this runs up to 20 times a second (found by profiling).
                    .where(Delivery.claimed_by > "", Delivery.lease_until > now)  # type: ignore[operator]
                )
            }
            states = {
                row.connection_id: row
                for row in conn.execute(
                    select(AccountState).where(
                        sa.or_(
                            AccountState.held_until > now,  # type: ignore[operator]
                            AccountState.problem_kind.is_not(None),  # type: ignore[union-attr]
                        )
                    )
                )
            }
            jobs: list[Job] = []
            counts = dict(running)

            def take(job: Job) -> None:
                jobs.append(job)
                busy.add(job.contact_key)
                counts[job.connection_id] = counts.get(job.connection_id, 0) + 1

            for connection_id, state in states.items():
                if state.problem_kind and (state.held_until or 0) <= now and len(jobs) < room:
                    probe = conn.execute(self._due_query(1, now, probe_of=connection_id)).first()
                    if probe is not None and self._job(probe).contact_key not in busy:
                        take(self._job(probe))
                        conn.execute(
                            update(AccountState)
                            .where(AccountState.connection_id == connection_id)
                            .values(held_until=now + self._lease)
                        )
            for row in conn.execute(self._due_query(room * 4, now)):
                if len(jobs) >= room:
                    break
                job = self._job(row)
                if (
                    job.connection_id in states
                    or job.contact_key in busy
                    or counts.get(job.connection_id, 0) >= per_account
                ):
                    continue
                take(job)
            if jobs:
                conn.execute(
                    update(Delivery)
                    .where(Delivery.id.in_([job.id for job in jobs]))  # type: ignore[union-attr]
                    .values(claimed_by=self._worker, lease_until=now + self._lease)
                )
            return jobs

    def _due_query(self, limit: int, now: object = None, probe_of: int | None = None) -> sa.Select:
        now = self._now if now is None else now
        query = (
            select(
                Delivery.id,
                Delivery.endpoint_id,
                Delivery.event_id,
                Delivery.occurred_at,
                Delivery.email,
                Delivery.attempts,
                Delivery.received_at,
                Delivery.queued_at,
                Delivery.idempotency_key,
                Connection.id.label("connection_id"),  # type: ignore[union-attr]
                Connection.name.label("connection_name"),
                Connection.api_key,
                Connection.rate_limit,
                AccountState.loops_limit,
                AccountState.problem_kind.label("account_problem"),  # type: ignore[union-attr]
                Endpoint.provider,
                Endpoint.user_group,
                Endpoint.loops_event,
                Endpoint.sync_names,
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .join(Connection, Connection.id == Endpoint.connection_id)
            .outerjoin(AccountState, AccountState.connection_id == Connection.id)
            .where(
                Delivery.status == QUEUED,
                sa.or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),  # type: ignore[union-attr, operator]
                Endpoint.paused.is_(False),  # type: ignore[attr-defined]
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
            .with_for_update(of=Delivery, skip_locked=True)  # type: ignore[arg-type]
        )
        if probe_of is not None:  # the probe goes whether its own next try is due or not
            return query.where(Connection.id == probe_of)
        return query.where(Delivery.next_attempt_at <= now)  # type: ignore[operator]

    def _job(self, row: sa.Row) -> Job:
        values = dict(row._mapping)
        own, reported = values.pop("rate_limit"), values.pop("loops_limit")
        return Job(**values, rate_limit=rate_in_use(own, self._default_rate, reported))

    def renew(self, ids: Iterable[int]) -> None:
        """Extend this worker's lease on the deliveries it is still working on."""
        ids = list(ids)
        if ids:
            with self._engine.begin() as conn:
                conn.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids), Delivery.claimed_by == self._worker)  # type: ignore[union-attr]
                    .values(lease_until=self._now + self._lease)
                )

    def release_all(self) -> int:
        """Give back every claim of this worker (shutdown); how many there were."""
        with self._engine.begin() as conn:
            return conn.execute(
                update(Delivery)
                .where(Delivery.claimed_by == self._worker)
                .values(claimed_by=None, lease_until=None)
            ).rowcount

    # -- one attempt --------------------------------------------------------------------------

    def payload_and_names_at(self, job: Job) -> tuple[bytes, bool, int | None]:
        """The raw event, whether the contact is known to exist in Loops, and the provider
        event time of the names last sent for it."""
        with self._engine.connect() as conn:
            payload = conn.execute(
                select(Delivery.payload).where(Delivery.id == job.id)
            ).scalar_one()
            contact = conn.execute(
                select(Contact.names_at).where(
                    Contact.connection_id == job.connection_id, Contact.email == job.contact_key[1]
                )
            ).first()
        return payload, contact is not None, contact.names_at if contact else None

    def settle(self, job: Job, settled: Settled, progress: Progress) -> bool:
        """Record the attempt in one transaction: its Loops calls, the contact, the delivery's
        new state with its claim cleared, and what it showed about the account. False when
        this worker's claim had lapsed and another worker holds the delivery now."""
        finished = time.time() if settled.status != QUEUED else None
        with self._engine.begin() as conn:
            if progress.calls:
                conn.execute(insert(LoopsCall), [_call_row(job.id, a) for a in progress.calls])
            if progress.contact_known:
                self._remember_contact(conn, job, progress.names_sent)
            owned = conn.execute(
                update(Delivery)
                .where(Delivery.id == job.id, Delivery.claimed_by == self._worker)
                .values(
                    status=settled.status,
                    reason=settled.reason,
                    attempts=job.attempts + 1,
                    next_attempt_at=settled.next_attempt_at,
                    finished_at=finished,
                    claimed_by=None,
                    lease_until=None,
                )
            ).rowcount
            self._account_seen(conn, job, settled)
        return owned == 1

    def _remember_contact(self, conn: sa.Connection, job: Job, names_sent: bool) -> None:
        insert_ = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[conn.dialect.name]
        conn.execute(
            insert_(Contact)
            .values(
                connection_id=job.connection_id, email=job.contact_key[1], created_at=time.time()
            )
            .on_conflict_do_nothing()
        )
        if names_sent:  # last writer wins, by the provider's event time
            conn.execute(
                update(Contact)
                .where(
                    Contact.connection_id == job.connection_id,
                    Contact.email == job.contact_key[1],
                    sa.or_(Contact.names_at.is_(None), Contact.names_at < job.occurred_at),  # type: ignore[union-attr, operator]
                )
                .values(names_at=job.occurred_at)
            )

    def _account_seen(self, conn: sa.Connection, job: Job, settled: Settled) -> None:
        state = AccountState.__table__.c  # type: ignore[attr-defined]
        where = state.connection_id == job.connection_id
        if settled.account_problem is None:
            if job.account_problem is None:
                return
            # The probe got through: the account is healthy, and its deliveries go now.
            conn.execute(
                update(AccountState)
                .where(where)
                .values(
                    problem=None, problem_kind=None, problem_since=None, failures=0, held_until=None
                )
            )
            conn.execute(
                update(Delivery)
                .where(
                    Delivery.status == QUEUED,
                    Delivery.next_attempt_at > self._now,  # type: ignore[operator]
                    Delivery.endpoint_id.in_(  # type: ignore[attr-defined]
                        select(Endpoint.id).where(Endpoint.connection_id == job.connection_id)
                    ),
                )
                .values(next_attempt_at=self._now)
            )
            return
        ensure_account(conn, job.connection_id)
        key_now = select(Connection.api_key).where(Connection.id == job.connection_id)
        if conn.execute(key_now).scalar() != job.api_key:
            return  # the key was replaced while this attempt ran: it says nothing of the new one
        failures = conn.execute(select(state.failures).where(where)).scalar_one() + 1
        if settled.account_problem == KEY:
            wait = _KEY_PROBE_EVERY
        else:
            wait = min(_OUTAGE_PROBE_MAX, 2.0 ** (failures - 1)) * random.uniform(0.8, 1.0)
        conn.execute(
            update(AccountState)
            .where(where)
            .values(
                problem=settled.account_message,
                problem_kind=settled.account_problem,
                problem_since=sa.func.coalesce(state.problem_since, self._now),
                failures=failures,
                held_until=self._now + wait,
            )
        )

    def note_rate_limit(self, connection_id: int, reported: int) -> None:
        """Loops reported this account's limit (x-ratelimit-limit) and it differs from the
        one on record: every worker paces to it from its next claim."""
        with self._engine.begin() as conn:
            ensure_account(conn, connection_id)
            conn.execute(
                update(AccountState)
                .where(AccountState.connection_id == connection_id)
                .values(loops_limit=reported)
            )

    # -- retention ----------------------------------------------------------------------------

    def prune_payloads(self, older_than_days: float, batch: int = 1000) -> int:
        """Delete the raw payloads of delivered and ignored events received more than
        ``older_than_days`` ago, a batch at a time; the rows and their outcome stay."""
        cutoff = time.time() - older_than_days * 86400
        pruned = 0
        while True:
            with self._engine.begin() as conn:
                ids = (
                    select(Delivery.id)
                    .where(
                        Delivery.status.in_((DELIVERED, IGNORED)),  # type: ignore[attr-defined]
                        Delivery.received_at < cutoff,
                        Delivery.payload.is_not(None),  # type: ignore[union-attr]
                    )
                    .limit(batch)
                )
                count = conn.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids.scalar_subquery()))  # type: ignore[union-attr]
                    .values(payload=None)
                ).rowcount
            pruned += count
            if count < batch:
                return pruned


def _call_row(delivery_id: int, answer: Answer) -> dict:
    return {
        "delivery_id": delivery_id,
        "method": answer.method,
        "path": answer.path,
        "request_body": answer.request_body,
        "status_code": answer.status_code,
        "response_body": answer.response_body or answer.message,
        "started_at": answer.started_at,
        "duration_ms": answer.duration_ms,
    }
