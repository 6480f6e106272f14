"""What a webhook route looks up for each request, kept for a moment: an endpoint's route
(:mod:`bridge.inbox`), an account by its Loops webhook token (:mod:`bridge.loops_webhooks`).

Each is read from the database in a thread, once per key however many requests wait for
it, and kept ``ttl`` seconds, so that a burst of webhooks reads the database once and a
change made elsewhere (the CLI, the admin in another process) shows within ``ttl``. A read
that fails is not kept: every request that waited for it gets its exception, and the next
request reads again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import anyio.to_thread

__all__ = ["Lookups"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

KEPT = 10_000  # keys kept at most: unknown ids or tokens must not grow the cache without bound


class Lookups(Generic[K, V]):
    def __init__(self, load: Callable[[K], V], ttl: float) -> None:
        self._load = load  # runs in a worker thread
        self._ttl = ttl
        self._kept: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        kept = self._kept.get(key)
        if kept and kept[0] > time.monotonic():
            return kept[1]
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(anyio.to_thread.run_sync(self._load, key))
            self._loading[key] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: a request that hangs up does not cancel the read the others wait for.
        value = await asyncio.shield(loading)
        if len(self._kept) >= KEPT:
            self._kept.clear()
        self._kept[key] = (time.monotonic() + self._ttl, value)
        return value

    def forget(self, key: K) -> None:
        """Read ``key`` again on its next request (this process changed it)."""
        self._kept.pop(key, None)
