"""Delivery under faults, as Stripe and a user would see it: the bridge (and extra workers)
as real processes, the Loops sandbox over HTTP playing outages, refused keys and 429s, and
``kill -9`` in the middle of a burst. See bridge/delivery.py and bridge/queue.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import sqlalchemy as sa

from bridge import db
from bridge.models import DELIVERED, FAILED, IGNORED, QUEUED, Delivery
from bridge.queue import Queue
from tests.helpers import fixture_bytes, signed_headers
from tests.servers import Bridge, Sandbox, Worker, bridge_env, cli, wait_until
from tests.test_end_to_end import (
    CUSTOMER_CREATED,
    CUSTOMER_UPDATED,
    INVOICE_PAID,
    SECRET,
    deliver,
    delivery,
    make_endpoint,
    with_email,
)


def statuses(env: dict) -> dict[str, int]:
    counted: dict[str, int] = {}
    for row in cli(env, "deliveries", "list", "--limit", "100000", "--json"):
        counted[row["status"]] = counted.get(row["status"], 0) + 1
    return counted


def post_all(bridge: Bridge, endpoint: str, bodies: list[bytes]) -> list[dict]:
    """POST every body at once, like Stripe sending a month of invoices."""

    async def run() -> list[dict]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=bridge.url, limits=limits, timeout=60) as client:
            posts = [
                client.post(f"/webhooks/{endpoint}", content=b, headers=signed_headers(b, SECRET))
                for b in bodies
            ]
            return [r.json() for r in await asyncio.gather(*posts)]

    return asyncio.run(run())


def customers(count: int, prefix: str = "c") -> list[bytes]:
    return [
        with_email(CUSTOMER_CREATED, f"{prefix}{i}@example.com", f"evt_{prefix}{i}")
        for i in range(count)
    ]


def busiest_second(calls: list[dict]) -> int:
    times = sorted(c["at"] for c in calls)
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Callable[..., tuple[Sandbox, Bridge]]]:
    """Start the Loops sandbox (with these arguments) and the bridge pointed at it, once the
    test has put what it needs in ``env``; both are stopped at the end."""
    started: list[Sandbox | Bridge] = []

    def start_(*sandbox_args: str) -> tuple[Sandbox, Bridge]:
        sandbox = Sandbox(env, *sandbox_args)
        env["BRIDGE_LOOPS_API_URL"] = sandbox.api_url
        started.append(sandbox)
        started.append(Bridge(env))
        return sandbox, started[-1]  # type: ignore[return-value]

    yield start_
    for server in reversed(started):
        server.stop()


# -- faults at Loops ------------------------------------------------------------------------


def test_after_an_outage_everything_resumes_within_30_s_of_loops_answering(env, start):
    # Each delivery's own backoff would be a minute or more: the account's probe, not the
    # delivery's schedule, must bring them back.
    env["BRIDGE_RETRY_BASE_SECONDS"] = "60"
    sandbox, bridge = start()
    endpoint = make_endpoint(env, loops_event="successfulPayment", signing_secret=SECRET)
    sandbox.post("faults", {"status": 503}).raise_for_status()
    answers = post_all(bridge, endpoint, [
        with_email(INVOICE_PAID, f"o{i}@example.com", f"evt_o{i}") for i in range(6)
    ])  # fmt: skip
    # The account is probed one delivery at a time, 1 s, 2 s, 4 s ... apart.
    wait_until(lambda: len(sandbox.calls()) >= 3, what="the account to be probed")
    met = [delivery(env, a["id"]) for a in answers]
    assert {d["status"] for d in met} == {QUEUED}
    assert any("503" in (d["reason"] or "") and "next try in" in d["reason"] for d in met)
    httpx.delete(f"{sandbox.url}/_sandbox/faults", timeout=5).raise_for_status()
    wait_until(lambda: statuses(env) == {DELIVERED: 6}, timeout=30,
               what="every delivery within 30 s of Loops answering again")  # fmt: skip
    # The account was probed one request at a time, not hammered by every delivery.
    during = [c for c in sandbox.calls() if c["status"] == 503]
    assert len(during) <= 6, [c["at"] for c in during]
    assert len(sandbox.get("events")) == 6


def test_a_refused_key_pauses_the_account_until_loops_takes_it_again(env, start):
    sandbox, bridge = start()
    endpoint = make_endpoint(env, loops_event="successfulPayment", signing_secret=SECRET)
    sandbox.post("faults", {"status": 401}).raise_for_status()
    answers = post_all(bridge, endpoint, [
        with_email(INVOICE_PAID, f"k{i}@example.com", f"evt_k{i}") for i in range(4)
    ])  # fmt: skip
    wait_until(lambda: "paused" in (delivery(env, answers[0]["id"])["reason"] or "")
               or "paused" in (delivery(env, answers[-1]["id"])["reason"] or ""),
               what="the account to be paused")  # fmt: skip
    paused = [delivery(env, a["id"]) for a in answers]
    assert {d["status"] for d in paused} == {QUEUED}  # paused, not failed
    (first,) = [d for d in paused if d["reason"]]  # the others were not even tried
    assert "API key of account 'acme'" in first["reason"]
    assert "loops_key_acme_1234" not in bridge.log()
    refused = len(sandbox.calls())
    httpx.delete(f"{sandbox.url}/_sandbox/faults", timeout=5).raise_for_status()
    wait_until(lambda: statuses(env) == {DELIVERED: 4}, timeout=45,
               what="the paused deliveries to resume by themselves")  # fmt: skip
    assert refused <= 4 + 2  # one probe at a time while the key was refused
    assert len(sandbox.get("events")) == 4


def test_a_delivery_retried_past_its_maximum_age_is_dead(env, start):
    env["BRIDGE_MAX_AGE_HOURS"] = str(1.5 / 3600)  # 1.5 s
    sandbox, bridge = start()
    endpoint = make_endpoint(env, signing_secret=SECRET)
    sandbox.post("faults", {"status": 502}).raise_for_status()
    answer = deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))
    shown = delivery(env, answer["id"], until="dead")
    assert "tries stop 0.000416667 hours after it was queued" in shown["reason"]
    assert "502" in shown["reason"]
    assert cli(env, "deliveries", "list", "--status", "dead", "--json")[0]["id"] == answer["id"]


def test_a_storm_of_429s_for_one_account_never_slows_another(env, sandbox, bridge):
    acme = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    cli(env, "accounts", "add", "--name", "beta", "--api-key", "loops_key_beta_5678")
    beta = make_endpoint(env, events="customer.created", account="beta", signing_secret=SECRET)
    sandbox.post("faults", {"status": 429, "key": "loops_key_acme_1234"}).raise_for_status()

    post_all(bridge, acme, customers(20, "a"))
    wait_until(lambda: len(sandbox.calls()) >= 5, what="acme to be refused")
    post_all(bridge, beta, customers(40, "b"))
    wait_until(lambda: len(sandbox.get("contacts", key="…5678")) == 40, timeout=30,
               what="beta's deliveries")  # fmt: skip

    calls = [c for c in sandbox.calls() if c["key"] == "…5678"]
    assert {c["status"] for c in calls} == {200}
    times = sorted(c["at"] for c in calls)
    assert (len(times) - 1) / (times[-1] - times[0]) >= 8.0, "beta kept its own pace"
    assert busiest_second(calls) <= 10
    waiting = cli(env, "deliveries", "list", "--endpoint", acme, "--json")
    assert {d["status"] for d in waiting} == {QUEUED}  # held back, not failed

    httpx.delete(f"{sandbox.url}/_sandbox/faults", timeout=5).raise_for_status()
    wait_until(lambda: len(sandbox.get("contacts", key="…1234")) == 20, timeout=30,
               what="acme's deliveries once Loops takes them")  # fmt: skip


def test_the_pace_follows_the_limit_loops_reports(env, start):
    # The bridge assumes 10/s; this account only has 4.
    sandbox, bridge = start("--rate-limit", "4")
    endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    post_all(bridge, endpoint, customers(24))
    wait_until(lambda: statuses(env) == {DELIVERED: 24}, timeout=30, what="the deliveries")
    calls = sandbox.calls()
    first = min(c["at"] for c in calls)
    later = [c for c in calls if c["at"] > first + 2]  # once Loops has said its limit
    assert later and {c["status"] for c in later} == {200}
    assert busiest_second(later) <= 4


# -- order ----------------------------------------------------------------------------------


def customer_updated(name: str, created: int, event_id: str) -> bytes:
    event = json.loads(fixture_bytes(CUSTOMER_UPDATED))
    event.update(id=event_id, created=created)
    event["data"]["object"].update(name=name, email="order@example.com")
    return json.dumps(event).encode()


def test_an_older_event_arriving_late_does_not_overwrite_newer_names(env, sandbox, bridge):
    endpoint = make_endpoint(
        env, events="customer.updated", loops_event="customerUpdated", signing_secret=SECRET
    )
    newer = customer_updated("Grace Hopper", 1_714_600_000, "evt_newer")
    older = customer_updated("Grace Brewster", 1_714_500_000, "evt_older")
    delivery(env, deliver(bridge, endpoint, newer)["id"], until="delivered")
    shown = delivery(env, deliver(bridge, endpoint, older)["id"], until="delivered")

    (contact,) = sandbox.get("contacts")
    assert (contact["firstName"], contact["lastName"]) == ("Grace", "Hopper")
    assert "newer event" in shown["reason"]
    assert [e["eventName"] for e in sandbox.get("events")] == ["customerUpdated"] * 2
    # A newer one still wins over what is there.
    newest = customer_updated("Grace Murray", 1_714_700_000, "evt_newest")
    delivery(env, deliver(bridge, endpoint, newest)["id"], until="delivered")
    (contact,) = sandbox.get("contacts")
    assert contact["lastName"] == "Murray"


# -- crashes and shutdown -------------------------------------------------------------------


def test_kill_9_mid_burst_then_restart_delivers_every_event_exactly_once(tmp_path):
    env = bridge_env(tmp_path, BRIDGE_LEASE_SECONDS="3", BRIDGE_LOOPS_RATE_LIMIT="300")
    sandbox = Sandbox(env, "--rate-limit", "300")
    env["BRIDGE_LOOPS_API_URL"] = sandbox.api_url
    bridge = Bridge(env)
    count = 1500
    try:
        endpoint = make_endpoint(
            env, events="customer.created", loops_event="signedUp", signing_secret=SECRET
        )
        answers = post_all(bridge, endpoint, customers(count))
        assert {a["status"] for a in answers} == {"queued"}
        wait_until(lambda: len(sandbox.get("events")) >= 200, timeout=60,
                   what="delivery to be under way")  # fmt: skip
        bridge.kill()
        bridge = Bridge(env)
        wait_until(lambda: statuses(env) == {DELIVERED: count}, timeout=120,
                   what="every accepted event to be delivered after the restart")  # fmt: skip
        events = sandbox.get("events")
        assert len(events) == count
        assert len({e["email"] for e in events}) == count
        assert len(sandbox.get("contacts")) == count
        assert "delivery worker" in bridge.log()
    finally:
        bridge.stop()
        sandbox.stop()


def test_sigterm_gives_back_what_is_in_flight_and_nothing_stays_claimed(env):
    sandbox = Sandbox(env)
    env["BRIDGE_LOOPS_API_URL"] = sandbox.api_url
    bridge = Bridge(env)
    try:
        endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
        sandbox.post("faults", {"delay": 8}).raise_for_status()  # calls hang past the grace
        post_all(bridge, endpoint, customers(5))
        wait_until(lambda: len(sandbox.calls()) >= 1, what="a call to be in flight")
        started = time.monotonic()
        assert bridge.stop() in (0, -15)
        assert time.monotonic() - started < 15
        engine = db.connect(env["BRIDGE_DATABASE_URL"])
        with engine.connect() as conn:
            claimed = conn.execute(
                sa.select(sa.func.count()).where(Delivery.claimed_by.is_not(None))
            ).scalar_one()
        assert claimed == 0
        httpx.delete(f"{sandbox.url}/_sandbox/faults", timeout=5).raise_for_status()
        bridge = Bridge(env)
        wait_until(lambda: statuses(env) == {DELIVERED: 5}, what="the rest after a restart")
        assert len(sandbox.get("contacts")) == 5
    finally:
        bridge.stop()
        sandbox.stop()


# -- retention ------------------------------------------------------------------------------


def test_payloads_of_old_finished_deliveries_are_pruned_and_their_outcome_kept(tmp_path):
    engine = db.connect(f"sqlite:///{tmp_path / 'bridge.db'}")
    old, new = time.time() - 40 * 86400, time.time()
    cli_env = bridge_env(tmp_path)
    make_endpoint(cli_env, signing_secret=SECRET)
    endpoint = cli(cli_env, "endpoints", "list", "--json")[0]["id"]
    rows = [
        (DELIVERED, old), (IGNORED, old), (FAILED, old), (QUEUED, old), (DELIVERED, new),
    ]  # fmt: skip
    with engine.begin() as conn:
        for i, (status, received) in enumerate(rows):
            conn.execute(sa.insert(Delivery).values(
                endpoint_id=endpoint, event_id=f"evt_{i}", event_type="invoice.paid",
                occurred_at=0, email="a@example.com", payload=b"{}", status=status,
                reason="kept", received_at=received,
            ))  # fmt: skip
    queue = Queue(engine, "test", 30, 10)
    assert queue.prune_payloads(30, batch=1) == 2
    with engine.connect() as conn:
        kept = conn.execute(
            sa.select(Delivery.status, Delivery.payload, Delivery.reason).order_by(Delivery.id)
        ).all()
    assert [(s, p is not None) for s, p, _ in kept] == [
        (DELIVERED, False), (IGNORED, False), (FAILED, True), (QUEUED, True), (DELIVERED, True),
    ]  # fmt: skip
    assert {r for _, _, r in kept} == {"kept"}


# -- several processes on PostgreSQL --------------------------------------------------------


def test_two_workers_and_a_server_on_postgresql_share_the_rate_limit(tmp_path, postgres_url):
    env = bridge_env(tmp_path, BRIDGE_DATABASE_URL=postgres_url, BRIDGE_LEASE_SECONDS="5")
    sandbox = Sandbox(env)
    env["BRIDGE_LOOPS_API_URL"] = sandbox.api_url
    bridge = Bridge(env)
    workers = [Worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    count = 60
    try:
        endpoint = make_endpoint(
            env, events="customer.created", loops_event="signedUp", signing_secret=SECRET
        )
        post_all(bridge, endpoint, customers(count))
        backlog_from = time.monotonic()  # the sandbox stamps calls with the same clock
        wait_until(lambda: statuses(env) == {DELIVERED: count}, timeout=60,
                   what="the backlog to be delivered")  # fmt: skip
        calls = sandbox.calls()
        assert {c["status"] for c in calls} == {200}, "no 429, no 409: no second over the limit"
        assert len(calls) == 2 * count
        assert busiest_second(calls) <= 10
        # From the end of the burst to the last second of work: after that, the few
        # deliveries left wait on each other's answers, not on the pace.
        times = sorted(c["at"] for c in calls if c["at"] >= backlog_from)[:-10]
        used = (len(times) - 1) / (times[-1] - times[0])
        assert len(times) > count
        assert used >= 9.0, f"{used:.2f} requests/s of 10 while there was a backlog"
        assert len(sandbox.get("events")) == count
        for worker in workers:  # every process took its share
            assert " delivered: " in worker.log()
        assert " delivered: " in bridge.log()
    finally:
        for worker in workers:
            worker.stop()
        bridge.stop()
        sandbox.stop()
