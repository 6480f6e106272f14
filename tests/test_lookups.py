"""bridge/lookups.py: what the webhook routes look up per request, read once for a burst."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bridge.lookups import Lookups


class Reads:
    """A load that counts its calls, and holds each until ``release`` (a burst arrives
    while the first read is still running)."""

    def __init__(self, fail: bool = False) -> None:
        self.keys: list[str] = []
        self.fail = fail
        self.release = threading.Event()

    def __call__(self, key: str) -> str:
        self.keys.append(key)
        assert self.release.wait(10), "the test never released the read"
        if self.fail:
            raise OSError("database is locked")
        return f"value of {key}"


async def burst(lookups: Lookups[str, str], reads: Reads, count: int) -> list:
    waiting = [asyncio.ensure_future(lookups.get("ep_1")) for _ in range(count)]
    await asyncio.sleep(0)  # each request runs until it waits: the first on its read
    reads.release.set()
    return await asyncio.gather(*waiting, return_exceptions=True)


def test_a_burst_for_one_key_reads_it_once_and_then_keeps_it() -> None:
    reads = Reads()
    lookups: Lookups[str, str] = Lookups(reads, ttl=60)

    async def run() -> tuple[list, str, str]:
        answers = await burst(lookups, reads, 50)
        again = await lookups.get("ep_1")
        other = await lookups.get("ep_2")
        return answers, again, other

    answers, again, other = asyncio.run(run())
    assert answers == ["value of ep_1"] * 50
    assert again == "value of ep_1"
    assert other == "value of ep_2"
    assert reads.keys == ["ep_1", "ep_2"]  # the burst and the request after it: one read


def test_a_failed_read_reaches_every_waiting_request_and_is_not_kept() -> None:
    reads = Reads(fail=True)
    lookups: Lookups[str, str] = Lookups(reads, ttl=60)

    async def run() -> tuple[list, str]:
        answers = await burst(lookups, reads, 5)
        reads.fail = False
        return answers, await lookups.get("ep_1")

    answers, after = asyncio.run(run())
    assert [type(a) for a in answers] == [OSError] * 5
    assert after == "value of ep_1"  # read again once the database answers
    assert reads.keys == ["ep_1", "ep_1"]


def test_a_request_that_hangs_up_does_not_cancel_the_read_others_wait_for() -> None:
    reads = Reads()
    lookups: Lookups[str, str] = Lookups(reads, ttl=60)

    async def run() -> str:
        first = asyncio.ensure_future(lookups.get("ep_1"))
        await asyncio.sleep(0)  # it has started the read
        second = asyncio.ensure_future(lookups.get("ep_1"))
        await asyncio.sleep(0)
        first.cancel()  # its sender hung up
        reads.release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(run()) == "value of ep_1"
    assert reads.keys == ["ep_1"]


@pytest.mark.parametrize(
    ("ttl", "forget", "reads_made"), [(60, False, 1), (60, True, 2), (0, False, 2)]
)
def test_a_value_is_read_again_once_its_time_is_up_or_it_was_forgotten(
    ttl: float, forget: bool, reads_made: int
) -> None:
    reads = Reads()
    reads.release.set()
    lookups: Lookups[str, str] = Lookups(reads, ttl=ttl)

    async def run() -> None:
        await lookups.get("ep_1")
        if forget:  # the admin changed the endpoint in this process
            lookups.forget("ep_1")
        await lookups.get("ep_1")

    asyncio.run(run())
    assert len(reads.keys) == reads_made
