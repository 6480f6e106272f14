"""Pacing: never send one Loops account more than its limit of requests per second, counted
over every worker process that shares the database.

Loops allows 10 requests per second per team and answers 429 beyond that
(https://loops.so/docs/api-reference/intro#rate-limiting); Loops raises the limit on request,
so the limit is per account. Instead of a bucket that allows bursts, each account's calls are
spaced evenly, a little wider than 1/limit, so that no one-second window seen by Loops holds
more than ``limit`` requests.

The account's next free request slot lives in the database (``account_states.next_slot``,
written only by :mod:`bridge.accounts`), in the database's clock, so every process and
machine shares one pace. A process reserves
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio.to_thread
from sqlalchemy.engine import Engine

from bridge import accounts

__all__ = ["Paces"]

_MARGIN = 1.05  # absorbs jitter between our send time and Loops' receive time
_LATE = 0.03  # seconds after its slot a caller may still send (< 1 s x (_MARGIN - 1))
_LEAD = 0.05  # a new slot is at least this far ahead: time for the answer to come back


@dataclass(slots=True)
class _Account:
    slots: deque[float] = field(default_factory=deque)  # reserved, in the clock's time
    waiting: int = 0
    held: int = 0  # counts holds: a slot reserved before a hold is void
    reported: int | None = None  # x-ratelimit-limit, as Loops last said it
    pace: int = 0  # requests per second the last reservation was made for
    reserving: asyncio.Lock = field(default_factory=asyncio.Lock)


class Paces:
    """This process's side of every account's shared pace."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._clock = clock  # tests pass a fake clock, and a sleep that moves it
        self._sleep = sleep
        self._accounts: dict[int, _Account] = {}

    async def wait_turn(self, account_id: int, per_second: int) -> None:
        account = self._accounts.setdefault(account_id, _Account())
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
                                self._reserve, account_id, count, interval
                            )
                            account.slots.extend(first + i * interval for i in range(count))
                slot, held = account.slots.popleft(), account.held
                if (delay := slot - self._clock()) > 0:
                    await self._sleep(delay)
                if held == account.held and self._clock() - slot <= _LATE:
                    return
        finally:
            account.waiting -= 1

    def report_limit(self, account_id: int, limit: int) -> bool:
        """Loops said the account's limit (x-ratelimit-limit); True if that is news. A lower
        limit voids the slots reserved at the old pace."""
        account = self._accounts.setdefault(account_id, _Account())
        if limit == account.reported:
            return False
        if limit < account.pace:
            account.held += 1
            account.slots.clear()
        account.reported = limit
        return True

    async def hold(self, account_id: int, seconds: float) -> None:
        """Let no call to this account through for ``seconds``, in any process (a 429)."""
        account = self._accounts.setdefault(account_id, _Account())
        account.held += 1
        account.slots.clear()
        async with account.reserving:  # no caller reserves a slot inside the wait meanwhile
            await anyio.to_thread.run_sync(self._hold, account_id, seconds)

    def _reserve(self, account_id: int, count: int, interval: float) -> float:
        """Reserve ``count`` slots; the first one, in this process's monotonic clock."""
        with self._engine.begin() as conn:
            # Every time, not once per process: SQLite gives a new account a deleted one's id.
            accounts.ensure(conn, account_id)
            asked = self._clock()
            first, now = accounts.reserve(conn, account_id, count, interval, _LEAD)
            answered = self._clock()
        # The database's "now" fell somewhere between asking and the answer: take the middle.
        return (asked + answered) / 2 + (first - now)

    def _hold(self, account_id: int, seconds: float) -> None:
        with self._engine.begin() as conn:
            accounts.hold(conn, account_id, seconds)
