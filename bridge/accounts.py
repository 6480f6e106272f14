"""How each Loops account is doing: the one module that changes it.

Every worker process on one database shares an account's state in ``account_states`` (see
:mod:`bridge.models`), and only the functions here write it. Everything else reads it (the
queue to know what it may claim, the admin and the metrics to show it) or asks for a
transition by calling one of them. The states, and what moves an account between them::

                  429 (retry after W)
        healthy ───────────────────────► rate-limited until now + W ──(W passes)──► healthy
           │ ▲
           │ │ a probe gets an answer (2xx, 409, 400, 404), or the key is replaced
           │ └───────────────────────────────────────────────────┐
           │  5xx, timeout, network                              │
           ├───────────────────────► outage: held, probed after 1 s, 2 s, 4 s ... 20 s
           │  401, 403                                           │
           └───────────────────────► key refused: held, probed every 30 s

While an account is held no delivery of it is claimed, except its *probe*: one queued
delivery, tried when the hold ends. The probe's answer decides for the whole account, so
after an outage of any length its deliveries resume within one probe interval of Loops
answering again. The intervals are :class:`Intervals`, so tests can make a 30 s probe
take milliseconds.

The account's *pace* lives here too: ``next_slot`` is its next free request slot in the
database's clock, shared by every process (the in-process side is :mod:`bridge.pacing`);
``loops_limit`` is the limit Loops reports in ``x-ratelimit-limit``.

Times are the database's clock (:func:`bridge.db.now`), one clock for every worker on every
machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select, update

from bridge import db
from bridge.db import now as database_now
from bridge.loops import Verdict
from bridge.models import QUEUED, AccountState, Delivery, Endpoint

__all__ = [
    "KEY",
    "OUTAGE",
    "Intervals",
    "claim_probe",
    "ensure",
    "forget",
    "hold",
    "key_replaced",
    "next_probe",
    "note_limit",
    "rate_in_use",
    "record",
    "renew_probes",
    "reserve",
]

OUTAGE, KEY = "outage", "key"  # problem_kind: Loops unreachable, or the key refused
_STATE = AccountState.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Intervals:
    """How long an account with a problem waits between probes."""

    key_probe: float = 30.0  # a refused key: every this many seconds
    outage_probe_max: float = 20.0  # an outage: 1 s, 2 s, 4 s ... up to this


def rate_in_use(own: int | None, default: int, reported: int | None) -> int:
    """Requests per second an account is paced to: its own limit or the default, or the
    limit Loops reported (x-ratelimit-limit) when that is lower."""
    configured = own or default
    return min(configured, reported) if reported else configured


def next_probe(
    verdict: Verdict,
    failures: int,
    intervals: Intervals,
    jitter: Callable[[float, float], float] = random.uniform,
) -> tuple[str, float] | None:
    """The problem an answer shows and the wait before the next probe, after ``failures``
    failed probes in a row (this one included); None when the answer shows no problem."""
    if verdict is Verdict.KEY_REFUSED:
        return KEY, intervals.key_probe
    if verdict is Verdict.HOLD:
        wait = min(intervals.outage_probe_max, 2.0 ** (failures - 1))
        return OUTAGE, wait * jitter(0.8, 1.0)  # probes of many accounts spread out
    return None


def ensure(conn: sa.Connection, account_id: int) -> None:
    """The account's state row, made on first use."""
    conn.execute(
        db.insert(conn, AccountState).values(account_id=account_id).on_conflict_do_nothing()
    )


def reserve(conn: sa.Connection, account_id: int, count: int, interval: float, lead: float):  # type: ignore[no-untyped-def]
    """Take ``count`` request slots ``interval`` apart, the first at least ``lead`` seconds
    from now; returns (the first slot, the database's now), both in its clock."""
    now = database_now(conn.dialect.name)
    soonest = now + lead
    start = sa.case((_STATE.next_slot > soonest, _STATE.next_slot), else_=soonest)
    next_slot, at = conn.execute(
        update(AccountState)
        .where(_STATE.account_id == account_id)
        .values(next_slot=start + count * interval)
        .returning(_STATE.next_slot, now)
    ).one()
    return next_slot - count * interval, at


def hold(conn: sa.Connection, account_id: int, seconds: float) -> None:
    """Rate-limited: no call to the account, from any process, for ``seconds`` (a 429)."""
    ensure(conn, account_id)
    until = database_now(conn.dialect.name) + seconds
    conn.execute(
        update(AccountState)
        .where(_STATE.account_id == account_id)
        .values(
            next_slot=sa.case((_STATE.next_slot > until, _STATE.next_slot), else_=until),
            held_until=sa.case(
                (sa.func.coalesce(_STATE.held_until, 0) > until, _STATE.held_until),
                else_=until,
            ),
        )
    )


def claim_probe(conn: sa.Connection, account_id: int, now: float, lease: float) -> None:
    """One delivery of an account with a problem was claimed as its probe: no other is,
    until the probe is recorded or its lease lapses."""
    conn.execute(
        update(AccountState).where(_STATE.account_id == account_id).values(held_until=now + lease)
    )


def renew_probes(conn: sa.Connection, account_ids: Collection[int], until: Any) -> None:
    """The probes of these accounts are still running (a Stripe lookup can outlast a lease):
    their accounts stay held with them, so that no second probe starts beside them."""
    if account_ids:
        conn.execute(
            update(AccountState)
            .where(_STATE.account_id.in_(account_ids), _STATE.problem_kind.is_not(None))
            # Never shorter: a new problem's hold may end later than this probe's lease.
            .values(held_until=sa.case((_STATE.held_until > until, _STATE.held_until), else_=until))
        )


def record(
    conn: sa.Connection,
    account_id: int,
    *,
    verdict: Verdict | None,
    message: str,
    api_key: str,
    current_key: Callable[[], str],
    was_probe: bool,
    intervals: Intervals,
) -> None:
    """What an attempt's last answer (``verdict``; None: no call was made) shows of the
    account. Only the first sign of a problem and the probes' answers count: the attempts
    that were in flight when a problem began say nothing new, and an answer through a key
    that was replaced meanwhile says nothing at all. ``current_key`` reads the account's
    key as stored now; it is asked only for an answer that shows a problem, so recording a
    delivery that went through reads (and decrypts) nothing more."""
    if verdict is None:  # no call was made: nothing learned of Loops
        if was_probe:  # the next delivery probes instead, at once
            conn.execute(
                update(AccountState)
                .where(_STATE.account_id == account_id)
                .values(held_until=database_now(conn.dialect.name))
            )
        return
    if next_probe(verdict, 0, intervals) is None:
        if was_probe:  # Loops answered: the problem is over (a 429's wait still holds)
            _healthy(conn, account_id, keep_hold=verdict is Verdict.RETRY_AFTER)
        return
    if current_key() != api_key:
        return
    ensure(conn, account_id)
    where = _STATE.account_id == account_id
    kind_now, failures = conn.execute(
        select(_STATE.problem_kind, _STATE.failures).where(where)
    ).one()
    if kind_now is not None and not was_probe:
        return
    failures += 1
    kind, wait = next_probe(verdict, failures, intervals)  # type: ignore[arg-type, misc]
    now = database_now(conn.dialect.name)
    conn.execute(
        update(AccountState)
        .where(where)
        .values(
            problem=message,
            problem_kind=kind,
            problem_since=sa.func.coalesce(_STATE.problem_since, now),
            failures=failures,
            held_until=now + wait,
        )
    )


def key_replaced(conn: sa.Connection, account_id: int) -> int:
    """A new API key: whatever the old key showed says nothing of it, so the account is
    healthy and its queued deliveries are due now. How many were made due."""
    return _healthy(conn, account_id)


def forget(conn: sa.Connection, account_id: int) -> None:
    """The account is being deleted."""
    conn.execute(sa.delete(AccountState).where(_STATE.account_id == account_id))


def note_limit(conn: sa.Connection, account_id: int, reported: int) -> None:
    """Loops reported the account's limit (x-ratelimit-limit): every worker paces to it
    from its next claim."""
    ensure(conn, account_id)
    conn.execute(
        update(AccountState).where(_STATE.account_id == account_id).values(loops_limit=reported)
    )


def _healthy(conn: sa.Connection, account_id: int, keep_hold: bool = False) -> int:
    """No problem any more; ``keep_hold``: a 429's wait (which :func:`hold` put in
    ``next_slot``) still holds, not the probe's claim."""
    now = database_now(conn.dialect.name)
    held = sa.case((_STATE.next_slot > now, _STATE.next_slot), else_=None) if keep_hold else None
    conn.execute(
        update(AccountState)
        .where(_STATE.account_id == account_id)
        .values(problem=None, problem_kind=None, problem_since=None, failures=0, held_until=held)
    )
    next_try = Delivery.next_attempt_at
    return conn.execute(
        update(Delivery)
        .where(
            Delivery.status == QUEUED,
            Delivery.endpoint_id.in_(  # type: ignore[attr-defined]
                select(Endpoint.id).where(Endpoint.account_id == account_id)
            ),
        )
        .values(next_attempt_at=sa.case((next_try > now, now), else_=next_try))  # type: ignore[operator]
    ).rowcount
