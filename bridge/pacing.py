"""Pacing: never send one Loops account more than its limit of requests per second.

Loops allows 10 requests per second per team and answers 429 beyond that
(https://loops.so/docs/api-reference/intro#rate-limiting). Instead of a bucket that allows
bursts, each account's calls are spaced evenly, a hair wider than 1/limit, so that no
one-second window seen by Loops ever holds more than ``limit`` requests. A 429 pushes the
account's next slot back for everyone at once. (``x-ratelimit-remaining: 0`` alone is no
reason to wait: at full pace the tenth request of every window sees it.)
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pacer"]

_MARGIN = 1.03  # absorbs jitter between our send time and Loops' receive time


class Pacer:
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._next_slot = 0.0

    @property
    def interval(self) -> float:
        return _MARGIN / self.per_second

    async def wait_turn(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """Let no call through for ``seconds`` (after a 429)."""
        self._next_slot = max(self._next_slot, time.monotonic() + seconds)
