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

Accounts. While an account is held (rate-limited, or with a problem: see
:mod:`bridge.accounts`, the one module that changes an account's state), no delivery of it
is claimed, except one *probe* for an account with a problem: its next queued delivery, due
or not, claimed when the hold ends. What an attempt showed of the account is handed to
:func:`bridge.accounts.record` in the same transaction as the attempt's outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from bridge import accounts, db
from bridge.db import now as database_now
from bridge.loops import Answer
from bridge.models import (
    DELIVERED,
    IGNORED,
    QUEUED,
    Account,
    AccountState,
    Contact,
    Delivery,
    Endpoint,
    LoopsCall,
    LoopsEvent,
)

__all__ = ["Job", "Progress", "Queue", "Settled"]

_CLAIM_LOCK = 0x100B5B71D6E  # pg_advisory_xact_lock key of the claim step


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery with what delivering it needs."""

    id: int
    endpoint_id: str
    event_id: str
    event_type: str
    occurred_at: int
    email: str | None
    user_id: str | None  # the platform's user id: the contact is matched on it in Loops
    lookup: str | None  # the platform's customer whose email is looked up at delivery
    deletion: bool
    backfill: bool  # made by an import: creates the contact, never sends a Loops event
    attempts: int
    received_at: float
    queued_at: float
    idempotency_key: str | None
    account_id: int
    account_name: str
    api_key: str
    rate_limit: int  # requests per second for this account, all workers together
    provider: str
    user_group: str | None
    loops_event: str | None
    loops_events: str | None  # JSON {event type: eventName}
    mailing_lists: str | None  # comma-separated list ids
    on_delete: str
    sync_names: bool
    stripe_api_key: str | None  # the endpoint's, for looking up a customer's email
    account_problem: str | None  # a problem_kind (bridge.accounts): this is its probe

    @property
    def contact_key(self) -> tuple[int, str]:
        """The contact in its Loops account: by userId where the platform has one."""
        return self.account_id, _identity(self.user_id, self.email, self.lookup)

    @property
    def loops_event_name(self) -> str | None:
        """The Loops event the endpoint sends for this event's type, if any: never for an
        import, which must not fire a workflow for every existing customer."""
        if self.backfill:
            return None
        return loops_event_for(self.event_type, self.loops_events, self.loops_event)


def loops_event_for(event_type: str, per_type: str | None, every_type: str | None) -> str | None:
    """The Loops event an endpoint sends for ``event_type``: its own (``per_type``, the
    endpoint's JSON mapping), else the one for every type."""
    return (json.loads(per_type) if per_type else {}).get(event_type) or every_type


def _identity(user_id: str | None, email: str | None, lookup: str | None = None) -> str:
    """What one contact's deliveries share: its userId, else its email (lowercased), else,
    while its email is still to be looked up, the platform's customer id."""
    return user_id or (email or "").lower() or (f"customer:{lookup}" if lookup else "")


@dataclass(frozen=True, slots=True)
class Known:
    """What earlier deliveries left known of a contact in Loops (``contacts``). Times are
    the provider's event times: an event older than them must not undo what they did."""

    exists: bool  # Loops has it (created by the bridge, or it answered 409)
    names_at: int | None = None  # of the names last sent
    email_at: int | None = None  # of the email last sent with the contact's userId
    deleted_at: int | None = None  # of the deletion that took it out of Loops


@dataclass(slots=True)
class Progress:
    """What one attempt did so far, written with its outcome."""

    calls: list[Answer] = field(default_factory=list)
    contact_known: bool = False  # Loops has the contact now (created, or 409)
    contact_gone: bool = False  # the contact was deleted in Loops
    names_sent: bool = False  # the event's names reached Loops
    email_sent: bool = False  # its email reached Loops with the contact's userId


@dataclass(frozen=True, slots=True)
class Settled:
    status: str
    reason: str
    next_attempt_at: float | None = None
    last: Answer | None = None  # the attempt's last answer: what it showed of the account


class Queue:
    def __init__(
        self,
        engine: Engine,
        worker: str,
        lease_seconds: float,
        rate_limit: int,
        intervals: accounts.Intervals | None = None,
    ) -> None:
        self._engine = engine
        self._intervals = intervals or accounts.Intervals()
        self._worker = worker
        self._lease = lease_seconds
        self._default_rate = rate_limit
        self._now = database_now(engine.dialect.name)
        self._postgres = engine.dialect.name == "postgresql"

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, room: int, running: dict[int, int], per_account: int) -> list[Job]:
        """Claim up to ``room`` deliveries, one per contact, at most ``per_account`` running
        per Loops account (``running``: this worker's deliveries per account).

        Each account's due deliveries are read per endpoint, oldest first and imports last,
        from the index (endpoint_id, status, backfill, next_attempt_at): an account that is
        held or has no room left is not read at all, so its backlog neither costs the poll
        anything nor hides another account's due deliveries. Accounts with fewer
        deliveries running go first.

        An account is refilled once half of its share has finished, not as each delivery
        finishes: one claim then takes several deliveries. A claim holds the database's write
        lock (SQLite's), for about 20 ms while webhooks arrive, and the inbox's batches wait
        for it: measured with bench/ingest.py while one account drained at 10 a second, 24
        claims in 10 s instead of 98, the inbox's wait to begin a batch 3.4 instead of 4.7 ms,
        and 2,010 instead of 1,790 webhooks a second (three pairs of runs). Half a share still
        holds several of the account's next calls, each waiting for its slot of the pace."""
        full = [account for account, count in running.items() if count > per_account // 2]
        # Most polls find nothing they may take, and then no write lock is taken: the
        # inbox's commits would wait for it (about 20 polls a second while a backlog waits
        # on an account's pace, measured with bench/ingest.py).
        with self._engine.connect() as conn:
            if not self._due_endpoints(conn, self._now, full) and not self._probes_due(conn):
                return []
        with self._engine.begin() as conn:
            if self._postgres:
                conn.execute(select(sa.func.pg_advisory_xact_lock(_CLAIM_LOCK)))
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            now = conn.execute(select(self._now)).scalar_one()
            busy = {
                (account_id, _identity(user_id, email, lookup))
                for account_id, user_id, email, lookup in conn.execute(
                    select(Endpoint.account_id, Delivery.user_id, Delivery.email, Delivery.lookup)
                    .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                    # "> ''" and not "IS NOT NULL": SQLite scans the whole table for the
                    # latter, and this runs up to 20 times a second (found by profiling).
                    .where(Delivery.claimed_by > "", Delivery.lease_until > now)  # type: ignore[operator]
                )
            }
            jobs: list[Job] = []
            counts = dict(running)

            def take(job: Job) -> None:
                jobs.append(job)
                busy.add(job.contact_key)
                counts[job.account_id] = counts.get(job.account_id, 0) + 1

            for account_id in self._probes_due(conn, now):
                if len(jobs) < room:
                    probe = conn.execute(self._due_query(1, now, probe_of=account_id)).first()
                    if probe is not None and self._job(probe).contact_key not in busy:
                        take(self._job(probe))
                        accounts.claim_probe(conn, account_id, now, self._lease)
            due = self._due_endpoints(conn, now, full)
            for account_id in sorted(due, key=lambda account: counts.get(account, 0)):
                rows = [
                    row
                    for endpoint_id in due[account_id]
                    for row in conn.execute(
                        self._due_query(room * 4, now).where(Delivery.endpoint_id == endpoint_id)
                    )
                ]
                # Imports last: a live webhook waits for at most the imports already running.
                for row in sorted(
                    rows, key=lambda row: (row.backfill, row.next_attempt_at, row.id)
                ):
                    if len(jobs) >= room or counts.get(account_id, 0) >= per_account:
                        break
                    job = self._job(row)
                    if job.contact_key not in busy:
                        take(job)
            if jobs:
                conn.execute(
                    update(Delivery)
                    .where(Delivery.id.in_([job.id for job in jobs]))  # type: ignore[union-attr]
                    .values(claimed_by=self._worker, lease_until=now + self._lease)
                )
            return jobs

    def _due_endpoints(
        self, conn: sa.Connection, now: object, full: list[int]
    ) -> dict[int, list[str]]:
        """The endpoints with a due, unclaimed delivery, by account, leaving out accounts
        that are held, have a problem (only their probe goes), or have no room (``full``)."""
        due = (
            select(Delivery.id)
            .where(
                Delivery.endpoint_id == Endpoint.id,
                Delivery.status == QUEUED,
                Delivery.next_attempt_at <= now,  # type: ignore[operator]
                sa.or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),  # type: ignore[union-attr, operator]
            )
            .exists()
        )
        found: dict[int, list[str]] = {}
        for account_id, endpoint_id in conn.execute(
            select(Endpoint.account_id, Endpoint.id)
            .outerjoin(AccountState, AccountState.account_id == Endpoint.account_id)
            .where(
                Endpoint.paused.is_(False),  # type: ignore[attr-defined]
                Endpoint.account_id.not_in(full),  # type: ignore[attr-defined]
                AccountState.problem_kind.is_(None),  # type: ignore[union-attr]
                sa.func.coalesce(AccountState.held_until, 0) <= now,
                due,
            )
        ):
            found.setdefault(account_id, []).append(endpoint_id)
        return found

    def _probes_due(self, conn: sa.Connection, now: object = None) -> list[int]:
        """Accounts with a problem whose hold has ended: each may send one probe."""
        now = self._now if now is None else now
        return list(
            conn.execute(
                select(AccountState.account_id).where(
                    AccountState.problem_kind.is_not(None),  # type: ignore[union-attr]
                    sa.func.coalesce(AccountState.held_until, 0)
                    <= (self._now if now is None else now),
                )
            ).scalars()
        )

    def _due_query(self, limit: int, now: object = None, probe_of: int | None = None) -> sa.Select:
        now = self._now if now is None else now
        query = (
            select(
                Delivery.id,
                Delivery.next_attempt_at,
                Delivery.endpoint_id,
                Delivery.event_id,
                Delivery.event_type,
                Delivery.occurred_at,
                Delivery.email,
                Delivery.user_id,
                Delivery.lookup,
                Delivery.deletion,
                Delivery.backfill,
                Delivery.attempts,
                Delivery.received_at,
                Delivery.queued_at,
                Delivery.idempotency_key,
                Account.id.label("account_id"),  # type: ignore[union-attr]
                Account.name.label("account_name"),
                Account.api_key,
                Account.rate_limit,
                AccountState.loops_limit,
                AccountState.problem_kind.label("account_problem"),  # type: ignore[union-attr]
                Endpoint.provider,
                Endpoint.user_group,
                Endpoint.loops_event,
                Endpoint.loops_events,
                Endpoint.mailing_lists,
                Endpoint.on_delete,
                Endpoint.sync_names,
                Endpoint.stripe_api_key,
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .join(Account, Account.id == Endpoint.account_id)
            .outerjoin(AccountState, AccountState.account_id == Account.id)
            .where(
                Delivery.status == QUEUED,
                sa.or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),  # type: ignore[union-attr, operator]
                Endpoint.paused.is_(False),  # type: ignore[attr-defined]
            )
            .order_by(Delivery.backfill, Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
            .with_for_update(of=Delivery, skip_locked=True)  # type: ignore[arg-type]
        )
        if probe_of is not None:  # the probe goes whether its own next try is due or not
            return query.where(Account.id == probe_of)
        return query.where(Delivery.next_attempt_at <= now)  # type: ignore[operator]

    def _job(self, row: sa.Row) -> Job:
        values = dict(row._mapping)
        del values["next_attempt_at"]  # for ordering the claim only
        own, reported = values.pop("rate_limit"), values.pop("loops_limit")
        return Job(**values, rate_limit=accounts.rate_in_use(own, self._default_rate, reported))

    def renew(self, jobs: Iterable[Job]) -> None:
        """Extend this worker's lease on the deliveries it is still working on, and the hold
        of each account whose probe is among them."""
        jobs = list(jobs)
        if jobs:
            with self._engine.begin() as conn:
                conn.execute(
                    update(Delivery)
                    .where(
                        Delivery.id.in_([job.id for job in jobs]),  # type: ignore[union-attr]
                        Delivery.claimed_by == self._worker,
                    )
                    .values(lease_until=self._now + self._lease)
                )
                probes = {job.account_id for job in jobs if job.account_problem}
                accounts.renew_probes(conn, probes, self._now + self._lease)

    def release_all(self) -> int:
        """Give back every claim of this worker (shutdown); how many there were."""
        with self._engine.begin() as conn:
            return conn.execute(
                update(Delivery)
                .where(Delivery.claimed_by == self._worker)
                .values(claimed_by=None, lease_until=None)
            ).rowcount

    # -- one attempt --------------------------------------------------------------------------

    def payload_and_contact(self, job: Job) -> tuple[bytes, Known]:
        """The raw event, and what earlier deliveries left known of its contact."""
        with self._engine.connect() as conn:
            payload = conn.execute(
                select(Delivery.payload).where(Delivery.id == job.id)
            ).scalar_one()
            row = conn.execute(
                select(Contact.names_at, Contact.email_at, Contact.deleted_at).where(
                    Contact.account_id == job.account_id, Contact.identity == job.contact_key[1]
                )
            ).first()
        if row is None:
            return payload, Known(exists=False)
        return payload, Known(row.deleted_at is None, row.names_at, row.email_at, row.deleted_at)

    def settle(self, job: Job, settled: Settled, progress: Progress) -> bool:
        """Record the attempt in one transaction: its Loops calls, the contact, the delivery's
        new state with its claim cleared, and what it showed about the account. False when
        this worker's claim had lapsed and another worker holds the delivery now."""
        finished = time.time() if settled.status != QUEUED else None
        with self._engine.begin() as conn:
            if progress.calls:
                conn.execute(insert(LoopsCall), [_call_row(job.id, a) for a in progress.calls])
            if progress.contact_gone:
                self._remember_deletion(conn, job)
            elif progress.contact_known:
                self._remember_contact(conn, job, progress)
            looked_up = {"email": job.email} if job.email else {}  # from Stripe, if it was
            owned = conn.execute(
                update(Delivery)
                .where(Delivery.id == job.id, Delivery.claimed_by == self._worker)
                .values(
                    **looked_up,
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

    def _remember_contact(self, conn: sa.Connection, job: Job, progress: Progress) -> None:
        """Loops has the contact: a deletion it outlived is forgotten, and the names and
        email it was sent are dated, the last by the provider's event time winning."""
        where = (Contact.account_id == job.account_id, Contact.identity == job.contact_key[1])
        conn.execute(
            db.insert(conn, Contact)
            .values(account_id=job.account_id, identity=job.contact_key[1], created_at=time.time())
            .on_conflict_do_update(
                index_elements=["account_id", "identity"],
                set_={"deleted_at": None},
                # A deletion newer than this event (settled meanwhile, by a delivery that ran
                # beside it under another key) stays kept.
                where=_no_deletion_since(job),
            )
        )
        for column, sent in (
            (Contact.names_at, progress.names_sent),
            (Contact.email_at, progress.email_sent),
        ):
            if sent:
                conn.execute(
                    update(Contact)
                    .where(*where, sa.or_(column.is_(None), column < job.occurred_at))  # type: ignore[union-attr, operator]
                    .values({column: job.occurred_at})
                )

    def _remember_deletion(self, conn: sa.Connection, job: Job) -> None:
        """The contact is not in Loops since the deletion ``job`` (deleted, or found gone):
        its row stays, dated, so that an event no newer is not sent (:class:`Known`)."""
        values = {"deleted_at": job.occurred_at, "names_at": None, "email_at": None}
        conn.execute(
            db.insert(conn, Contact)
            .values(
                account_id=job.account_id,
                identity=job.contact_key[1],
                created_at=time.time(),
                **values,
            )
            .on_conflict_do_update(
                index_elements=["account_id", "identity"],
                set_=values,
                where=_no_deletion_since(job),
            )
        )

    def _account_seen(self, conn: sa.Connection, job: Job, settled: Settled) -> None:
        last = settled.last
        key = select(Account.api_key).where(Account.id == job.account_id)
        accounts.record(
            conn,
            job.account_id,
            verdict=last.verdict if last else None,
            message=last.message if last else "",
            api_key=job.api_key,
            current_key=lambda: conn.execute(key).scalar_one(),
            was_probe=job.account_problem is not None,
            intervals=self._intervals,
        )

    def note_rate_limit(self, account_id: int, reported: int) -> None:
        """Loops reported this account's limit (x-ratelimit-limit), and it is news."""
        with self._engine.begin() as conn:
            accounts.note_limit(conn, account_id, reported)

    # -- retention ----------------------------------------------------------------------------

    def prune_payloads(self, older_than_days: float, batch: int = 1000) -> int:
        """Delete the raw payloads of delivered and ignored events, and the bodies of Loops'
        own webhooks, received more than ``older_than_days`` ago, a batch at a time; the
        rows stay (a delivery's outcome, a contact's timeline entry). How many."""
        cutoff = time.time() - older_than_days * 86400
        pruned = 0
        for model, done in (
            (Delivery, Delivery.status.in_((DELIVERED, IGNORED))),  # type: ignore[attr-defined]
            (LoopsEvent, sa.true()),
        ):
            while True:
                with self._engine.begin() as conn:
                    ids = (
                        select(model.id)
                        .where(
                            done,
                            model.received_at < cutoff,
                            model.payload.is_not(None),  # type: ignore[attr-defined]
                        )
                        .limit(batch)
                    )
                    count = conn.execute(
                        update(model)
                        .where(model.id.in_(ids.scalar_subquery()))  # type: ignore[attr-defined]
                        .values(payload=None)
                    ).rowcount
                pruned += count
                if count < batch:
                    break
        return pruned


def _no_deletion_since(job: Job) -> sa.ColumnElement[bool]:
    """The contact's row keeps no deletion as new as ``job``'s event."""
    return sa.or_(Contact.deleted_at.is_(None), Contact.deleted_at < job.occurred_at)  # type: ignore[union-attr, operator]


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
