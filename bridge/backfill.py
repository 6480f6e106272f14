"""Backfill: import the customers Stripe already has into the endpoint's Loops account.

Webhooks only tell the bridge what changes from now on; an import brings in everyone
before. It pages through Stripe's customers (100 a page, newest first) and turns each into
a delivery in the account's queue, the way a ``customer.created`` webhook would create the
contact (source, user group, mailing lists, names), with two differences the queue and the
worker honour (``Delivery.backfill``):

- it never sends a Loops event: importing 4,000 old customers must not send 4,000 welcome
  emails. Contacts Loops already has are left as they are (409 is done);
- it goes after every other due delivery of its account, so a live webhook waits for at
  most the imports already running, not for the whole import.

Skipped without a Loops call: deleted customers, customers without an email, and customers
the bridge already knows Loops has (the contacts table). Each page's deliveries, the cursor
(the last customer read) and the counts are written in one transaction, so a crash or
Ctrl-C loses nothing and imports nothing twice; running it again continues from the cursor.
An import that was done starts over, finding only what is new. The delivery log shows every
imported customer (event id ``import:cus_...``), and :func:`status` adds up how they went.

One import per endpoint runs at a time, in whichever process started it (the CLI or the
admin); a cancel from the admin is seen at its next page, and the imports it had queued but
not yet sent are set aside (``ignored``) until it runs again.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bridge import accounts, db
from bridge.delivery import ALREADY_IN_LOOPS
from bridge.models import (
    DEAD,
    DELIVERED,
    FAILED,
    IGNORED,
    QUEUED,
    Account,
    AccountState,
    Backfill,
    Contact,
    Delivery,
    Endpoint,
)
from bridge.registry import Invalid, NotFound, livemode_seen
from bridge.stripe_api import KeyCheck, StripeAPI, StripeAPIError

__all__ = ["Run", "Status", "cancel", "check_key", "estimate", "run", "status"]

DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
EVENT_TYPE = "customer.created"  # what each import creates the contact as
RUNNING, DONE, CANCELLED, INTERRUPTED = "running", "done", "cancelled", "interrupted"
ALIVE_SECONDS = 120.0  # a running import that wrote no page for this long has died
CANCELLED_REASON = (
    "not sent: the import was cancelled before this customer reached Loops; "
    "running the import again sends it"
)


@dataclass(frozen=True, slots=True)
class Run:
    """How one run of an import went, as counted when it ended."""

    state: str  # done | cancelled | interrupted
    resumed: bool  # it continued an earlier run rather than starting
    customers: int  # read from Stripe, in all runs of this import
    queued: int  # handed to the account's queue to be created in Loops, in all runs
    skipped: int  # deleted, or no email
    known: int  # already in Loops as far as the bridge knows: no call made
    problem: str | None = None  # why it stopped early


@dataclass(frozen=True, slots=True)
class Status:
    """An endpoint's import as the admin and the CLI show it."""

    state: str  # running | done | cancelled | interrupted
    started_at: float
    updated_at: float
    finished_at: float | None
    customers: int
    skipped: int
    known: int
    queued: int
    created: int  # imports Loops created a contact for
    already_in_loops: int  # known before the import, plus imports Loops answered 409
    failed: int  # imports Loops refused (failed or dead)
    pending: int  # imports still in the queue
    rate: int  # the account's requests per second
    problem: str | None

    @property
    def eta_seconds(self) -> float:
        """Seconds until the queued imports are in Loops, at the account's pace."""
        return self.pending / self.rate if self.rate else 0.0

    def as_dict(self) -> dict:
        return {
            "state": self.state,
            "customers": self.customers,
            "imported": self.queued,
            "skipped": self.skipped,
            "failed": self.failed,
            "already_in_loops": self.already_in_loops,
            "created_in_loops": self.created,
            "pending": self.pending,
            "eta_seconds": round(self.eta_seconds),
            "problem": self.problem,
        }


def _endpoint(session: Session, endpoint_id: str) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"No endpoint with id {endpoint_id!r}; see loops-bridge endpoints list.")
    if endpoint.provider != "stripe":
        raise Invalid(
            f"Endpoint {endpoint_id} receives {endpoint.provider} webhooks: only a Stripe "
            "endpoint reads Stripe's API (to import customers, or recover missed events)."
        )
    if not endpoint.stripe_api_key:
        raise Invalid(
            f"Endpoint {endpoint_id} has no Stripe API key to read Stripe's customers and "
            "events with: add "
            f"one first with `loops-bridge endpoints set-stripe-key {endpoint_id} -` (a "
            "restricted key with Customers and Events read is enough)."
        )
    return endpoint


def api_for(engine: Engine, endpoint_id: str, base_url: str) -> StripeAPI:
    """The Stripe API as the endpoint's key reaches it; Invalid if it has no key."""
    with Session(engine) as session:
        key = _endpoint(session, endpoint_id).stripe_api_key
    return StripeAPI(key or "", base_url)


def _rate(session: Session, account_id: int, default_rate: int) -> int:
    own = session.get(Account, account_id)
    state = session.get(AccountState, account_id)
    return accounts.rate_in_use(
        own.rate_limit if own else None, default_rate, state.loops_limit if state else None
    )


def _sort(customers: list[dict], known: set[str]) -> tuple[list[dict], int, int]:
    """(customers to import, skipped, already known) of one page."""
    new: list[dict] = []
    skipped = already = 0
    for customer in customers:
        email = customer.get("email")
        if customer.get("deleted") or not isinstance(email, str) or "@" not in email:
            skipped += 1
        elif email.lower() in known:
            already += 1
        else:
            new.append(customer)
    return new, skipped, already


def _known(conn: sa.Connection, account_id: int, customers: list[dict]) -> set[str]:
    emails = [c["email"].lower() for c in customers if isinstance(c.get("email"), str)]
    if not emails:
        return set()
    return set(
        conn.execute(
            sa.select(Contact.identity).where(
                Contact.account_id == account_id,
                Contact.identity.in_(emails),  # type: ignore[attr-defined]
                Contact.deleted_at.is_(None),  # type: ignore[union-attr]  # a kept deletion: gone
            )
        ).scalars()
    )


def _row(endpoint_id: str, customer: dict, now: float) -> dict:
    event_id = f"import:{customer['id']}"
    created = customer.get("created")
    created = created if isinstance(created, int) else int(now)
    # Stored as the event a webhook would have carried, so the provider reads it alike.
    payload = {
        "id": event_id,
        "object": "event",
        "type": EVENT_TYPE,
        "created": created,
        "livemode": customer.get("livemode"),
        "data": {"object": customer},
    }
    return {
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "event_type": EVENT_TYPE,
        # What Stripe said when it was read, not when the customer was made: a deletion of
        # the same address since (a customer.deleted delivered meanwhile) keeps it out, and
        # an older one (of another customer with that address) does not.
        "occurred_at": int(now),
        "email": customer["email"],
        "user_id": None,
        "deletion": False,
        "backfill": True,
        "payload": orjson.dumps(payload),
        "status": QUEUED,
        "reason": None,
        "attempts": 0,
        "received_at": now,
        "queued_at": now,
        "next_attempt_at": now,
        "finished_at": None,
    }


def _begin(engine: Engine, endpoint_id: str, now: float) -> tuple[str | None, bool, str]:
    """Start or continue the endpoint's import: (its cursor, whether it continues one, the
    run's name). Invalid if another process is running it."""
    with Session(engine) as session:
        _endpoint(session, endpoint_id)
        found = session.get(Backfill, endpoint_id)
        if found and _alive(found, now):
            raise Invalid(
                f"An import of endpoint {endpoint_id} is already running (started "
                f"{_ago(now - found.started_at)} ago, last page {_ago(now - found.updated_at)}"
                " ago). Wait for it, or cancel it on the endpoint's page in the admin."
            )
        resumed = found is not None and found.state != DONE
        if found is None or not resumed:
            found = Backfill(endpoint_id=endpoint_id, state=RUNNING, started_at=now, updated_at=now)
        found.state, found.updated_at, found.problem = RUNNING, now, None
        found.runner = runner = f"{RUNNER}:{secrets.token_hex(4)}"
        found.finished_at = None
        found.runs += 1
        session.add(found)
        # What a cancel set aside goes back in the queue, behind every live delivery.
        session.execute(
            sa.update(Delivery)
            .where(
                Delivery.endpoint_id == endpoint_id,
                Delivery.backfill.is_(True),  # type: ignore[attr-defined]
                Delivery.status == IGNORED,
                Delivery.reason == CANCELLED_REASON,
            )
            .values(
                status=QUEUED, reason=None, queued_at=now, next_attempt_at=now, finished_at=None
            )
        )
        session.commit()
        return found.cursor, resumed, runner


def run(
    engine: Engine,
    endpoint_id: str,
    api: StripeAPI,
    *,
    on_page: Callable[[Backfill], None] = lambda _: None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> Run:
    """Import the endpoint's Stripe customers until the last page, ``stop`` is set (Ctrl-C),
    or a cancel from the admin. ``on_page`` sees the counts after each page is written."""
    cursor, resumed, runner = _begin(engine, endpoint_id, clock())
    insert = (
        db.insert(engine, DELIVERIES)
        .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
        .returning(DELIVERIES.c.id)
    )
    state, problem = DONE, None
    try:
        for customers, last in api.customer_pages(cursor):
            with Session(engine) as session:
                endpoint = _endpoint(session, endpoint_id)
                backfill = session.get(Backfill, endpoint_id)
                if backfill is None or backfill.state != RUNNING or backfill.runner != runner:
                    state = CANCELLED  # cancelled meanwhile (and maybe started again since)
                    break
                conn = session.connection()
                known = _known(conn, endpoint.account_id, customers)
                new, skipped, already = _sort(customers, known)
                now = clock()
                queued = (
                    len(conn.execute(insert, [_row(endpoint_id, c, now) for c in new]).all())
                    if new
                    else 0
                )
                backfill.customers += len(customers)
                backfill.skipped += skipped
                backfill.known += already + len(new) - queued  # queued by an earlier run
                backfill.queued += queued
                backfill.cursor = last or backfill.cursor
                backfill.updated_at = now
                session.add(backfill)
                session.commit()
                session.refresh(backfill)
                on_page(backfill)
            if stop is not None and stop.is_set():  # Ctrl-C: after the page, before the next
                state = INTERRUPTED
                break
    except StripeAPIError as exc:
        state, problem = INTERRUPTED, str(exc)
    except BaseException:
        _end(engine, endpoint_id, runner, INTERRUPTED, "the import stopped with an error", clock())
        raise
    if state != CANCELLED:
        _end(engine, endpoint_id, runner, state, problem, clock())
    with Session(engine) as session:
        final = session.get(Backfill, endpoint_id)
        assert final is not None
        return Run(
            state=state,
            resumed=resumed,
            customers=final.customers,
            queued=final.queued,
            skipped=final.skipped,
            known=final.known,
            problem=problem,
        )


def _end(
    engine: Engine, endpoint_id: str, runner: str, state: str, problem: str | None, now: float
) -> None:
    with Session(engine) as session:
        backfill = session.get(Backfill, endpoint_id)
        if backfill is None or backfill.state != RUNNING or backfill.runner != runner:
            return  # cancelled, or another run took over
        backfill.state, backfill.problem, backfill.updated_at = state, problem, now
        backfill.finished_at = now if state == DONE else None
        session.add(backfill)
        session.commit()


def cancel(engine: Engine, endpoint_id: str, clock: Callable[[], float] = time.time) -> int:
    """Stop the endpoint's import at its next page and set aside the imports it queued that
    have not gone to Loops yet; the number set aside. Running it again sends them."""
    now = clock()
    with Session(engine) as session:
        backfill = session.get(Backfill, endpoint_id)
        if backfill is None or (backfill.state == DONE and not _pending(session, endpoint_id)):
            raise Invalid(f"Endpoint {endpoint_id} has no import to cancel.")
        backfill.state, backfill.updated_at = CANCELLED, now
        backfill.problem = "cancelled from the admin"
        session.add(backfill)
        set_aside = session.execute(
            sa.update(Delivery)
            .where(
                Delivery.endpoint_id == endpoint_id,
                Delivery.backfill.is_(True),  # type: ignore[attr-defined]
                Delivery.status == QUEUED,
                sa.or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),  # type: ignore[union-attr, operator]
            )
            .values(status=IGNORED, reason=CANCELLED_REASON, finished_at=now)
        ).rowcount
        session.commit()
        return set_aside


def _pending(session: Session, endpoint_id: str) -> int:
    return session.execute(
        sa.select(sa.func.count()).where(
            Delivery.endpoint_id == endpoint_id,
            Delivery.backfill.is_(True),  # type: ignore[attr-defined]
            Delivery.status == QUEUED,
        )
    ).scalar_one()


def status(
    engine: Engine, endpoint_id: str, default_rate: int, clock: Callable[[], float] = time.time
) -> Status | None:
    """The endpoint's import with how its deliveries went; None if it never had one."""
    with Session(engine) as session:
        backfill = session.get(Backfill, endpoint_id)
        if backfill is None:
            return None
        endpoint = session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        counts: dict[str, int] = {}
        already = sa.case(
            (Delivery.reason.like(f"{ALREADY_IN_LOOPS}%"), True),  # type: ignore[union-attr]
            else_=False,
        )
        for state, was_known, count in session.execute(
            sa.select(Delivery.status, already, sa.func.count())
            .where(Delivery.endpoint_id == endpoint_id, Delivery.backfill.is_(True))  # type: ignore[attr-defined]
            .group_by(Delivery.status, already)
        ):
            key = "already" if state == DELIVERED and was_known else state
            counts[key] = counts.get(key, 0) + count
        state = backfill.state
        if state == RUNNING and not _alive(backfill, clock()):
            state = INTERRUPTED  # the process running it stopped without saying so
        return Status(
            state=state,
            started_at=backfill.started_at,
            updated_at=backfill.updated_at,
            finished_at=backfill.finished_at,
            customers=backfill.customers,
            skipped=backfill.skipped,
            known=backfill.known,
            queued=backfill.queued,
            created=counts.get(DELIVERED, 0),
            already_in_loops=backfill.known + counts.get("already", 0),
            failed=counts.get(FAILED, 0) + counts.get(DEAD, 0),
            pending=counts.get(QUEUED, 0),
            rate=_rate(session, endpoint.account_id, default_rate),
            problem=backfill.problem,
        )


def duration(seconds: float) -> str:
    """A time an import takes, or still needs, as the CLI and the admin say it: ``16 min``;
    a part of a second counts as one."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(plan: dict[str, float | int]) -> str:
    """What :func:`estimate` found, in words: the CLI's ``--dry-run``, the admin's Preview."""
    takes = duration(float(plan["estimated_seconds"]))
    return (
        f"Would import {plan['would_import']:,} customers into Loops "
        f"({'continuing the import: ' if plan['continues'] else ''}"
        f"{plan['customers']:,} read from Stripe; {plan['skipped']:,} skipped: deleted or "
        f"without an email; {plan['already_in_loops']:,} already in Loops). At the "
        f"account's {plan['rate_limit']} requests/s that takes about {takes}. Nothing was "
        "changed."
    )


def estimate(
    engine: Engine, endpoint_id: str, api: StripeAPI, default_rate: int
) -> dict[str, float | int]:
    """What an import would do, from where it would start, without writing anything:
    ``would_import``, ``skipped``, ``already_in_loops`` and ``estimated_seconds`` at the
    account's pace (one Loops call per customer new to Loops)."""
    with Session(engine) as session:
        endpoint = _endpoint(session, endpoint_id)
        backfill = session.get(Backfill, endpoint_id)
        cursor = backfill.cursor if backfill and backfill.state != DONE else None
        rate = _rate(session, endpoint.account_id, default_rate)
        account_id = endpoint.account_id
    would = skipped = already = customers = 0
    for page, _ in api.customer_pages(cursor):
        with engine.connect() as conn:
            known = _known(conn, account_id, page)
            imported = set(
                conn.execute(
                    sa.select(Delivery.event_id).where(
                        Delivery.endpoint_id == endpoint_id,
                        Delivery.event_id.in_([f"import:{c['id']}" for c in page]),  # type: ignore[attr-defined]
                    )
                ).scalars()
            )
        new, skip, known_count = _sort(page, known)
        fresh = [c for c in new if f"import:{c['id']}" not in imported]
        customers += len(page)
        would += len(fresh)
        skipped += skip
        already += known_count + len(new) - len(fresh)
    return {
        "customers": customers,
        "would_import": would,
        "skipped": skipped,
        "already_in_loops": already,
        "estimated_seconds": round(would / rate) if rate else 0,
        "rate_limit": rate,
        "continues": cursor is not None,
    }


RUNNER = f"{socket.gethostname()}:{os.getpid()}"  # and a token per run: host:pid:token


def _alive(backfill: Backfill, now: float) -> bool:
    """Whether the process running ``backfill`` is still at it: it wrote a page lately and,
    if it runs on this machine, it still exists (a kill -9 says nothing otherwise)."""
    if backfill.state != RUNNING or now - backfill.updated_at >= ALIVE_SECONDS:
        return False
    host, _, pid = (backfill.runner or "").rsplit(":", 1)[0].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: its pages say whether it lives
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def check_key(
    engine: Engine, endpoint_id: str, key: str, base_url: str
) -> tuple[KeyCheck, list[str]]:
    """Stripe's answer on ``key`` (:meth:`StripeAPI.check`) and every problem that keeps the
    endpoint from it: Stripe's, and a key of the other mode than the events the endpoint
    receives, whose customers such a key cannot see (not known before its first webhook
    says its mode). Raises StripeAPIError when Stripe cannot be asked. The CLI's
    set-stripe-key and the admin ask this before they save a key."""
    check = StripeAPI(key, base_url).check()
    seen = livemode_seen(engine, endpoint_id)
    if check.livemode is None or seen is None or check.livemode == seen:
        return check, list(check.problems)
    mismatch = (
        f"The key {check.hint} is a {'live' if check.livemode else 'test'}-mode key, but this "
        f"endpoint receives {'live' if seen else 'test'}-mode events: paste a key of the same "
        "mode."
    )
    return check, [*check.problems, mismatch]
