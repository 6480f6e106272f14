"""Pacing: never send one Loops account more than its limit of requests per second, counted
over every worker process that shares the database.

Loops allows 10 requests per second per team and answers 429 beyond that
(https://loops.so/docs/api-reference/intro#rate-limiting); Loops raises the limit on request,
so the limit is per account. Instead of a bucket that allows bursts, each account's calls are
spaced evenly, a little wider than 1/limit, so that no one-second window seen by Loops holds
more than ``limit`` requests.

The account's next free request slot lives in the database (``account_states.next_slot``),
in the database's clock, so every process and machine shares one pace. A process reserves
slots for all of its callers waiting on an account with one UPDATE, then each caller sleeps
until its own slot. A caller that wakes up too late for its slot (a busy event loop) gives it
up and takes a new one: sent late, it would crowd the window after it. A 429 holds the whole
account: its next slot moves past the wait Loops asked for, for every process, and no
delivery for it is claimed until then (``held_until``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from bridge.models import AccountState

__all__ = ["Paces", "database_now", "ensure_account", "rate_in_use"]

_MARGIN = 1.05  # absorbs jitter between our send time and Loops' receive time
_LATE = 0.03  # seconds after its slot a caller may still send (< 1 s x (_MARGIN - 1))
_LEAD = 0.05  # a new slot is at least this far ahead: time for the answer to come back

_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from clock_timestamp())::float8",
}


def rate_in_use(own: int | None, default: int, reported: int | None) -> int:
    """Requests per second an account is paced to: its own limit or the default, or the
    limit Loops reported (x-ratelimit-limit) when that is lower."""
    configured = own or default
    return min(configured, reported) if reported else configured


def database_now(dialect: str) -> sa.ColumnElement[float]:
    """The database's clock in unix seconds: one clock for every worker on every machine."""
    return sa.literal_column(_NOW[dialect], sa.Float)


def ensure_account(conn: Connection, connection_id: int) -> None:
    """The account's state row, made on first use."""
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[conn.dialect.name]
    conn.execute(insert(AccountState).values(connection_id=connection_id).on_conflict_do_nothing())


@dataclass(slots=True)
class _Account:
    slots: deque[float] = field(default_factory=deque)  # reserved, in time.monotonic()
    waiting: int = 0
    held: int = 0  # counts holds: a slot reserved before a hold is void
    reported: int | None = None  # x-ratelimit-limit, as Loops last said it
    pace: int = 0  # requests per second the last reservation was made for
    reserving: asyncio.Lock = field(default_factory=asyncio.Lock)


class Paces:
    """This process's side of every account's shared pace."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._now = database_now(engine.dialect.name)
        self._accounts: dict[int, _Account] = {}
        self._known: set[int] = set()

    async def wait_turn(self, connection_id: int, per_second: int) -> None:
        account = self._accounts.setdefault(connection_id, _Account())
        account.waiting += 1
        try:
            while True:
                rate = account.pace = min(per_second, account.reported or per_second)
                interval = _MARGIN / rate
                if not account.slots:
                    async with account.reserving:
                        if not account.slots:
                            count = min(account.waiting, rate)
                            first = await anyio.to_thread.run_sync(
                                self._reserve, connection_id, count, interval
                            )
                            account.slots.extend(first + i * interval for i in range(count))
                slot, held = account.slots.popleft(), account.held
                if (delay := slot - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                if held == account.held and time.monotonic() - slot <= _LATE:
                    return
        finally:
            account.waiting -= 1

    def report_limit(self, connection_id: int, limit: int) -> bool:
        """Loops said the account's limit (x-ratelimit-limit); True if that is news. A lower
        limit voids the slots reserved at the old pace."""
        account = self._accounts.setdefault(connection_id, _Account())
        if limit == account.reported:
            return False
        if limit < account.pace:
            account.held += 1
            account.slots.clear()
        account.reported = limit
        return True

    async def hold(self, connection_id: int, seconds: float) -> None:
        """Let no call to this account through for ``seconds``, in any process (a 429)."""
        account = self._accounts.setdefault(connection_id, _Account())
        account.held += 1
        account.slots.clear()
        await anyio.to_thread.run_sync(self._hold, connection_id, seconds)

    def _reserve(self, connection_id: int, count: int, interval: float) -> float:
        """Reserve ``count`` slots; the first one, in this process's monotonic clock."""
        state = AccountState.__table__.c  # type: ignore[attr-defined]
        with self._engine.begin() as conn:
            if connection_id not in self._known:
                ensure_account(conn, connection_id)
                self._known.add(connection_id)
            soonest = self._now + _LEAD
            start = sa.case((state.next_slot > soonest, state.next_slot), else_=soonest)
            asked = time.monotonic()
            next_slot, now = conn.execute(
                sa.update(AccountState)
                .where(state.connection_id == connection_id)
                .values(next_slot=start + count * interval)
                .returning(state.next_slot, self._now)
            ).one()
            answered = time.monotonic()
        # The database's "now" fell somewhere between asking and the answer: take the middle.
        return (asked + answered) / 2 + (next_slot - count * interval - now)

    def _hold(self, connection_id: int, seconds: float) -> None:
        state = AccountState.__table__.c  # type: ignore[attr-defined]
        until = self._now + seconds
        with self._engine.begin() as conn:
            ensure_account(conn, connection_id)
            conn.execute(
                sa.update(AccountState)
                .where(state.connection_id == connection_id)
                .values(
                    next_slot=sa.case((state.next_slot > until, state.next_slot), else_=until),
                    held_until=sa.case(
                        (sa.func.coalesce(state.held_until, 0) > until, state.held_until),
                        else_=until,
                    ),
                )
            )
