"""bridge/pacing.py: every caller of a Loops account gets its turn at the account's pace, on
a real SQLite database, in virtual time.

``Paces`` takes its clock and its sleep. :class:`VirtualTime` gives it a sleep that waits
for no real time: when every caller is asleep, the one due first wakes with the clock moved
to its slot. The clock runs with real time as well, plus every sleep skipped: ``Paces``
places a slot in its own clock by the database's clock (``first - now``, read in one
statement), which runs with real time, so a clock that moved only by skipped sleeps would
lose the real time spent between two reservations and could see two slots crowd together
on a slow machine. While a woken caller runs on, up to its next wait, the clock stands at
the time it woke: the turn a test records is when ``Paces`` let it call. Turns are compared
with each other, never with an absolute time. Real time may overtake a slot while callers
line up (a loaded machine), and then ``Paces`` lets a caller up to 30 ms late call anyway:
turns are spaced at least ``1.05 / limit - 0.03`` apart, and no second holds more than
``limit``; that is what the tests hold it to.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from bridge import db, registry, vault
from bridge.pacing import Paces

MARGIN = 1.05  # bridge.pacing spaces calls 1.05 / limit apart
LATE = 0.03  # bridge.pacing lets a caller that woke late send up to this after its slot
ERROR = 0.05  # where the database's "now" fell within a reservation's round trip


class VirtualTime:
    """A clock and a sleep for :class:`Paces`, and :meth:`run` to drive the callers."""

    def __init__(self, stalls: dict[int, float] | None = None) -> None:
        self._stalls = stalls or {}  # wake number (1, 2 ...) -> seconds it comes late
        self._wakes = 0
        self._skipped = 0.0  # seconds of sleep skipped so far
        self._standing: float | None = None  # the clock stands here while a caller wakes
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._active = 0  # callers not finished
        self._read: dict[asyncio.Task[Any] | None, float] = {}  # the clock as a task last read it

    def clock(self) -> float:
        now = self._standing if self._standing is not None else time.monotonic() + self._skipped
        try:
            self._read[asyncio.current_task()] = now
        except RuntimeError:  # no event loop in this thread: a reservation in its thread
            pass
        return now

    def let_through(self) -> float:
        """When ``Paces`` let the current task's caller through: the clock as it last read it
        in this task, to decide that the turn came (not a moment later, as a loaded machine
        may take a while to run the caller's next line)."""
        return self._read[asyncio.current_task()]

    async def sleep(self, seconds: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.clock() + seconds, next(self._order), woken))
        await woken

    async def run(self, *callers: Awaitable[Any]) -> list[Any]:
        """Run ``callers`` to their end. Only when each one still running is asleep (none
        is reserving slots, holding, or about to sleep) does the first one due wake up."""

        async def counted(caller: Awaitable[Any]) -> Any:
            try:
                return await caller
            finally:
                self._active -= 1

        self._active += len(callers)
        tasks = [asyncio.ensure_future(counted(c)) for c in callers]
        while not all(task.done() for task in tasks):
            if self._sleepers and len(self._sleepers) == self._active:
                due, _, woken = heapq.heappop(self._sleepers)
                self._wakes += 1
                due += self._stalls.get(self._wakes, 0.0)  # a busy event loop
                self._standing = max(due, self.clock())
                woken.set_result(None)
                await asyncio.sleep(0)  # the woken caller runs up to its next wait
                self._skipped = self._standing - time.monotonic()
                self._standing = None
            else:
                await asyncio.sleep(0.001)  # a reservation or a hold is in its thread
        failed = [error for task in tasks if (error := task.exception())]
        if failed:
            raise failed[0]
        return [task.result() for task in tasks]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    connected = db.connect(f"sqlite:///{tmp_path / 'bridge.db'}", secret_key=vault.new_key())
    yield connected
    connected.dispose()


def add_account(engine: Engine, name: str) -> int:
    account = registry.add_account(engine, name, f"loops_key_{name}_00001234")
    assert account.id is not None
    return account.id


def turn(paces: Paces, time_: VirtualTime, account: int, limit: int) -> Awaitable[float]:
    """A caller: the virtual time it got its turn at."""

    async def caller() -> float:
        await paces.wait_turn(account, limit)
        return time_.let_through()

    return caller()


def gaps(turns: list[float]) -> list[float]:
    ordered = sorted(turns)
    return [b - a for a, b in itertools.pairwise(ordered)]


def assert_paced(turns: list[float], limit: int) -> None:
    """No 1 s window holds more than ``limit`` turns, and they are spaced as the slots are
    but for a late caller's 30 ms."""
    assert busiest_second(turns) <= limit, sorted(turns)
    assert min(gaps(turns)) >= MARGIN / limit - LATE, sorted(turns)


def busiest_second(turns: list[float]) -> int:
    """The most turns in any window of 1 s."""
    ordered = sorted(turns)
    return max(sum(1 for t in ordered[i:] if t < start + 1.0) for i, start in enumerate(ordered))


@pytest.mark.parametrize(("callers", "limit"), [(25, 10), (12, 3), (40, 40)])
def test_callers_of_one_account_get_turns_at_its_pace(
    engine: Engine, callers: int, limit: int
) -> None:
    account = add_account(engine, "acme")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)

    turns = asyncio.run(time_.run(*(turn(paces, time_, account, limit) for _ in range(callers))))
    assert len(turns) == callers
    assert_paced(turns, limit)


def test_a_caller_that_wakes_too_late_for_its_slot_takes_a_new_one(engine: Engine) -> None:
    """A busy event loop wakes the third caller 80 ms after its slot: sent then, it would
    crowd the fourth (25 ms apart); it gives the slot up and takes the next free one."""
    account = add_account(engine, "acme")
    time_ = VirtualTime(stalls={3: 0.08})
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)

    turns = asyncio.run(time_.run(*(turn(paces, time_, account, 10) for _ in range(12))))
    assert len(turns) == 12
    assert_paced(turns, 10)


def test_two_accounts_are_paced_independently(engine: Engine) -> None:
    acme, beta = add_account(engine, "acme"), add_account(engine, "beta")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)

    callers = [turn(paces, time_, acme, 10) for _ in range(15)]
    callers += [turn(paces, time_, beta, 5) for _ in range(15)]
    turns = asyncio.run(time_.run(*callers))
    acme_turns, beta_turns = turns[:15], turns[15:]
    assert_paced(acme_turns, 10)
    assert_paced(beta_turns, 5)
    # One pace for both would let no more than 10 through in a second.
    assert busiest_second(turns) > 10


def test_an_account_waits_not_behind_slots_another_reserved(engine: Engine) -> None:
    acme, beta = add_account(engine, "acme"), add_account(engine, "beta")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)

    async def scenario() -> tuple[float, float]:
        await time_.run(*(turn(paces, time_, acme, 10) for _ in range(30)))
        started = time_.clock()  # acme has slots reserved 3 s ahead by now
        (beta_turn,) = await time_.run(turn(paces, time_, beta, 10))
        return started, beta_turn

    started, beta_turn = asyncio.run(scenario())
    assert beta_turn - started < 1.0  # not behind acme's 3 s of slots


def test_a_lower_reported_limit_voids_reserved_slots_and_slows_the_pace(engine: Engine) -> None:
    account = add_account(engine, "acme")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)
    reported: list[float] = []

    async def told_the_limit() -> float:
        """The fourth caller's answer says x-ratelimit-limit: 4, as the worker passes on."""
        await paces.wait_turn(account, 10)
        at = time_.let_through()
        if len(reported) == 3:
            assert paces.report_limit(account, 4) is True
            assert paces.report_limit(account, 4) is False  # not news
            reported.append(at)
            return at
        reported.append(at)
        return at

    turns = asyncio.run(time_.run(*(told_the_limit() for _ in range(20))))
    told_at = reported[3]
    before = sorted(t for t in turns if t <= told_at)
    after = sorted(t for t in turns if t > told_at)
    assert len(before) == 4 and len(after) == 16
    assert_paced(before, 10)
    # The slots reserved at 10/s after the fourth went unused: the next turn is not the
    # fourth's neighbour at the old pace, and every later one follows the lower pace.
    assert after[0] - told_at >= MARGIN / 4 - ERROR
    assert_paced(after, 4)
    assert min(gaps(after)) == pytest.approx(MARGIN / 4, abs=LATE)


def test_a_higher_reported_limit_does_not_raise_the_pace(engine: Engine) -> None:
    account = add_account(engine, "acme")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)
    assert paces.report_limit(account, 50) is True

    turns = asyncio.run(time_.run(*(turn(paces, time_, account, 10) for _ in range(15))))
    assert_paced(turns, 10)


def test_a_hold_voids_reserved_slots_and_no_turn_comes_before_it_ends(engine: Engine) -> None:
    account = add_account(engine, "acme")
    other = add_account(engine, "beta")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)
    held_at: list[float] = []

    async def answered_429() -> float:
        """The third caller's answer is a 429 asking for 3 s, as the worker passes on."""
        await paces.wait_turn(account, 10)
        at = time_.let_through()
        held_at.append(at)
        if len(held_at) == 3:
            await paces.hold(account, 3.0)
        return at

    callers = [answered_429() for _ in range(12)]
    callers += [turn(paces, time_, other, 10) for _ in range(5)]
    turns = asyncio.run(time_.run(*callers))
    mine, others = turns[:12], turns[12:]
    hold_start = held_at[2]
    before = [t for t in mine if t <= hold_start]
    after = sorted(t for t in mine if t > hold_start)
    assert len(before) == 3 and len(after) == 9
    assert after[0] >= hold_start + 3.0 - ERROR  # nothing while Loops asked to wait
    assert_paced(after, 10)
    assert busiest_second(mine) <= 10
    # The other account was not held.
    assert sum(1 for t in others if t < hold_start + 3.0) == 5


def test_an_account_deleted_and_its_id_reused_is_paced_again(engine: Engine) -> None:
    """SQLite gives a new account the id of the one deleted last; a worker that paced the
    old one must pace the new one (its state row was deleted with the old account)."""
    old = add_account(engine, "acme")
    time_ = VirtualTime()
    paces = Paces(engine, clock=time_.clock, sleep=time_.sleep)

    async def scenario() -> list[float]:
        await time_.run(turn(paces, time_, old, 10))
        registry.delete_account(engine, old)
        new = add_account(engine, "beta")
        assert new == old
        return await time_.run(*(turn(paces, time_, new, 10) for _ in range(3)))

    turns = asyncio.run(scenario())
    assert_paced(turns, 10)
