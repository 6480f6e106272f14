"""What only real processes can show: ``loops-bridge serve`` killed with SIGKILL or stopped
with SIGTERM in the middle of a drain, and a server and two ``loops-bridge worker``
processes sharing one PostgreSQL database. They deliver over HTTP to the Loops sandbox,
served from a thread of the test process (the bridge being a process is the point, the
sandbox being one is not). And issue 10's acceptance: a Clerk, a Supabase and a Stripe user's
life, sent through ``loops-bridge serve`` as each platform sends it. Every other delivery
behaviour is tested in-process (tests/test_delivery.py, tests/test_delivery_providers.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bridge import db, sandbox
from bridge.models import DELIVERED, Delivery
from tests.harness import Served, busiest_second, run_cli, stripe_event
from tests.helpers import signed_headers, svix_headers
from tests.servers import Bridge, Worker, bridge_env, wait_until

SECRET = "whsec_e2eTestSecretAAAAAAAAAAAAAAAA"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
CUSTOMER_UPDATED = "constructed/customer.updated.event.json"


class Loops:
    """The Loops sandbox app on a port of 127.0.0.1 (uvicorn in a thread of this process)."""

    def __init__(self, rate_limit: int = 10) -> None:
        self._served = Served(sandbox.create_app(rate_limit=rate_limit))
        self.url = self._served.url
        self.api_url = f"{self.url}/api/v1"

    def get(self, what: str) -> list[dict]:
        return httpx.get(f"{self.url}/_sandbox/{what}", timeout=5).json()

    def fault(self, **fault: object) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/faults", timeout=5).raise_for_status()

    def stop(self) -> None:
        self._served.stop()


@pytest.fixture
def engine(env: dict[str, str]) -> Iterator[Engine]:
    """The test's own connection to the bridge's database, to look at the queue."""
    engine = db.connect(env["BRIDGE_DATABASE_URL"])
    yield engine
    engine.dispose()


def make_endpoint(env: dict[str, str], events: str, **options: str) -> str:
    run_cli(env, "accounts", "add", "--name", "acme", "--api-key", "loops_key_acme_1234")
    flags = [item for name, value in options.items() for item in (f"--{name}", value)]
    created = run_cli(
        env, "endpoints", "create", "--name", "Stripe", "--account", "acme", "--events", events,
        "--signing-secret", SECRET, *flags, "--json",
    )  # fmt: skip
    return created["id"]


def customers(count: int, fixture: str = CUSTOMER_CREATED, prefix: str = "c") -> list[bytes]:
    return [
        stripe_event(fixture, f"evt_{prefix}{i}", email=f"c{i}@example.com") for i in range(count)
    ]


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

    answers = asyncio.run(run())
    assert {a["status"] for a in answers} == {"queued"}, answers
    return answers


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        counted = conn.execute(
            sa.select(Delivery.status, sa.func.count()).group_by(Delivery.status)
        ).all()
    return dict(counted)  # type: ignore[arg-type]


def claimed(engine: Engine) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(Delivery.claimed_by.is_not(None))  # type: ignore[union-attr]
        return conn.execute(query).scalar_one()


@pytest.fixture
def stop_at_end() -> Iterator[list]:
    """Servers to stop when the test ends, however it ends."""
    started: list = []
    yield started
    for server in reversed(started):
        if not hasattr(server, "proc") or server.proc.poll() is None:
            server.stop()


def deliveries_calls(loops: Loops) -> list[dict]:
    """The calls the deliveries made: not the key check of `accounts add`."""
    return [c for c in loops.get("requests") if not c["path"].endswith("/api-key")]


def start_loops(env: dict[str, str], stop_at_end: list, rate_limit: int = 10) -> Loops:
    loops = Loops(rate_limit)
    stop_at_end.append(loops)
    env["BRIDGE_LOOPS_API_URL"] = loops.api_url
    return loops


def test_kill_9_mid_drain_loses_nothing_and_a_restart_takes_up_the_claims(env, stop_at_end, engine):
    env.update(BRIDGE_LEASE_SECONDS="1", BRIDGE_LOOPS_RATE_LIMIT="100")
    loops = start_loops(env, stop_at_end, rate_limit=1000)
    bridge = Bridge(env)
    stop_at_end.append(bridge)
    count = 60
    endpoint = make_endpoint(env, "customer.created", **{"loops-event": "signedUp"})
    post_all(bridge, endpoint, customers(count))
    wait_until(lambda: len(loops.get("events")) >= 15, what="delivery to be under way")
    # Killed while a call is in flight (Loops slow to answer), not between two claims.
    sent = len(loops.get("requests"))
    loops.fault(delay=5.0)
    wait_until(lambda: len(loops.get("requests")) > sent, what="a call to be in flight")

    bridge.kill()
    loops.clear_faults()
    assert statuses(engine).get(DELIVERED, 0) < count
    assert claimed(engine) > 0  # what it was delivering stays claimed until the lease lapses
    bridge = Bridge(env)
    stop_at_end.append(bridge)
    wait_until(lambda: statuses(engine) == {DELIVERED: count}, timeout=60,
               what="every accepted event to be delivered after the restart")  # fmt: skip
    events = loops.get("events")
    assert len(events) == count
    assert len({e["email"] for e in events}) == count
    assert len(loops.get("contacts")) == count


def test_sigterm_lets_calls_in_flight_finish_and_leaves_nothing_claimed(env, stop_at_end, engine):
    env.update(BRIDGE_LOOPS_RATE_LIMIT="50")  # the pace is not the point here
    loops = start_loops(env, stop_at_end, rate_limit=50)
    bridge = Bridge(env)
    stop_at_end.append(bridge)
    endpoint = make_endpoint(env, "customer.created")
    loops.fault(delay=0.5)  # calls in flight a while
    post_all(bridge, endpoint, customers(20))
    wait_until(lambda: loops.get("requests"), what="a call to be in flight")

    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean stop too.
    assert bridge.stop() in (0, -15)
    assert "Application shutdown complete" in bridge.log()
    # A claim left behind would hold its delivery back for BRIDGE_LEASE_SECONDS (30 s).
    assert claimed(engine) == 0
    assert 0 < statuses(engine).get(DELIVERED, 0) < 20  # the calls in flight were finished

    loops.clear_faults()
    bridge = Bridge(env)
    stop_at_end.append(bridge)
    wait_until(lambda: statuses(engine) == {DELIVERED: 20}, what="the rest after a restart")
    calls = deliveries_calls(loops)
    assert len(calls) == 20 and {c["status"] for c in calls} == {200}  # none made twice
    assert len(loops.get("contacts")) == 20


def test_a_server_and_two_workers_on_postgresql_share_the_pace_and_each_contact(
    tmp_path, postgres_url, stop_at_end
):
    limit = 40  # 48 calls: more than a second's worth, so the shared pace is what holds
    env = bridge_env(tmp_path, BRIDGE_DATABASE_URL=postgres_url, BRIDGE_LOOPS_RATE_LIMIT=str(limit))
    loops = start_loops(env, stop_at_end, rate_limit=limit)
    bridge = Bridge(env)
    stop_at_end.append(bridge)
    workers = [Worker(env, tmp_path / f"worker{i}.log") for i in range(2)]
    stop_at_end.extend(workers)
    engine = db.connect(postgres_url)
    try:
        # Two events for each contact: two deliveries of one contact run at once would
        # both create it, and Loops would answer one of them 409.
        contacts = 24
        endpoint = make_endpoint(env, "customer.created,customer.updated")
        post_all(
            bridge,
            endpoint,
            customers(contacts) + customers(contacts, CUSTOMER_UPDATED, prefix="u"),
        )
        wait_until(lambda: statuses(engine) == {DELIVERED: 2 * contacts}, timeout=60,
                   what="the backlog to be delivered")  # fmt: skip
    finally:
        engine.dispose()

    calls = deliveries_calls(loops)
    assert {c["status"] for c in calls} == {200}, "no 429 (over the pace), no 409 (a contact twice)"
    assert len(calls) == 2 * contacts  # one create and one names update per contact
    assert busiest_second(calls) <= limit
    assert len(loops.get("contacts")) == contacts
    for worker in workers:  # every process took its share
        assert " delivered: " in worker.log()
    assert " delivered: " in bridge.log()


# -- Clerk, Supabase and Stripe through `loops-bridge serve` (issue 10) ----------------------
# One compact scenario per provider, sent over HTTP as each platform sends it; the bulk of
# what each event does in Loops is tested in-process in tests/test_delivery_providers.py.

CLERK_SECRET = "whsec_ZTJlIGNsZXJrIHNpZ25pbmcga2V5IQ=="
CLERK_OTHER_SECRET = "whsec_T3RoZXIgY2xlcmsgc2lnbmluZyBrZXkh"
SUPABASE_SECRET = "e2eSupabaseLoopsSecret-5b1d0c9e8f7a6b5c4d3e"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLERK_USER = "user_29w83sxmDNGwOuEthce5gg56FcC"  # the docs' user, in all three user.* files
SUPABASE_USER = "d0c6b5a2-3f4e-4b1a-9c8d-7e6f5a4b3c2d"  # the row in all auth.users files


def fixture(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def test_clerk_supabase_and_stripe_users_end_in_loops_through_serve(env, stop_at_end, engine):
    env.update(BRIDGE_LOOPS_RATE_LIMIT="100")
    loops = start_loops(env, stop_at_end, rate_limit=100)
    run_cli(env, "accounts", "add", "--name", "acme", "--api-key", "loops_key_acme_1234")

    def endpoint(provider: str, events: str, secret: str, *options: str) -> str:
        return run_cli(
            env, "endpoints", "create", "--name", provider, "--account", "acme",
            "--provider", provider, "--events", events, "--user-group", "app",
            "--signing-secret", secret, *options, "--json",
        )["id"]  # fmt: skip

    clerk = endpoint(
        "clerk", "user.created,user.updated,user.deleted,waitlistEntry.created", CLERK_SECRET,
        "--loops-events", "user.created=clerkSignUp,waitlistEntry.created=joinedWaitlist",
        "--mailing-lists", "news",
    )  # fmt: skip
    supabase = endpoint(
        "supabase", "INSERT,UPDATE,DELETE", SUPABASE_SECRET,
        "--loops-events", "INSERT=signUp", "--on-delete", "delete",
    )  # fmt: skip
    stripe = endpoint(
        "stripe", "customer.created,customer.deleted", SECRET,
        "--loops-events", "customer.created=newStripeCustomer",
    )  # fmt: skip
    bridge = Bridge(env)
    stop_at_end.append(bridge)

    def from_clerk(name: str, msg_id: str, secret: str = CLERK_SECRET, age: int = 0) -> dict:
        body = fixture(f"clerk/{name}.json")
        headers = svix_headers(body, secret, int(time.time()) - age, msg_id)
        return bridge.post(clerk, body, headers).json()

    def from_supabase(name: str, secret: str = SUPABASE_SECRET) -> dict:
        headers = {"Content-type": "application/json", "Loops-Secret": secret}
        return bridge.post(supabase, fixture(f"supabase/{name}.json"), headers).json()

    def from_stripe(body: bytes) -> dict:
        return bridge.post(stripe, body, signed_headers(body, SECRET)).json()

    # customer.deleted: the customer as it was, under the deletion's type (edited fixture).
    deleted = json.loads(stripe_event(CUSTOMER_CREATED, "evt_e2e_deleted", created=1714600000))
    deleted["type"] = "customer.deleted"
    answers = [
        from_clerk("user.created", "msg_e2e_created"),
        from_clerk("user.updated", "msg_e2e_updated"),  # a new primary email, a new name
        from_clerk("user.deleted", "msg_e2e_deleted"),
        from_clerk("waitlistEntry.created", "msg_e2e_waitlist"),
        from_supabase("INSERT"),
        from_supabase("UPDATE"),  # the email changed
        from_supabase("DELETE"),
        from_stripe(fixture(f"stripe/{CUSTOMER_CREATED}")),
        from_stripe(json.dumps(deleted).encode()),
    ]
    assert [a["status"] for a in answers] == ["queued"] * 9, answers

    # The clear answers, as Stripe's: refused with a reason, a resend is a duplicate, an
    # event the bridge does not take is ignored with one.
    assert "does not match" in from_clerk("user.created", "msg_x", CLERK_OTHER_SECRET)["reason"]
    assert "more than 300 s old" in from_clerk("user.created", "msg_x", age=400)["reason"]
    assert "does not match" in from_supabase("INSERT", "x" * 40)["reason"]
    assert from_clerk("user.created", "msg_e2e_created")["status"] == "duplicate"  # same svix-id
    assert from_supabase("INSERT")["status"] == "duplicate"  # the same body
    session = from_clerk("session.created", "msg_e2e_session")
    profiles = from_supabase("public.profiles.INSERT")
    assert (session["status"], profiles["status"]) == ("ignored", "ignored")
    assert "session.created" in session["reason"]
    assert "public.profiles.INSERT" in profiles["reason"]

    # Types the bridge does not handle are counted, not stored.
    wait_until(lambda: statuses(engine) == {DELIVERED: 9}, timeout=30,
               what="every queued event to be delivered")  # fmt: skip
    contacts = {c["userId"] or c["email"]: c for c in loops.get("contacts")}
    user = contacts.pop(CLERK_USER)  # created, renamed, then unsubscribed
    assert (user["email"], user["firstName"], user["lastName"]) == (
        "example.renamed@example.com", "Renamed", "Person",
    )  # fmt: skip
    assert (user["source"], user["userGroup"], user["mailingLists"]) == (
        "Clerk webhook", "app", {"news": True},
    )  # fmt: skip
    assert user["subscribed"] is False
    waitlisted = contacts.pop("john.doe@example.com")
    assert (waitlisted["source"], waitlisted["subscribed"]) == ("Clerk webhook", True)
    customer = contacts.pop("test12@email.com")
    assert (customer["source"], customer["userGroup"], customer["subscribed"]) == (
        "Stripe webhook", "app", False,
    )  # fmt: skip
    assert contacts == {}  # the Supabase user was deleted
    # Different contacts are delivered side by side: their events in any order.
    assert sorted((e["eventName"], e["userId"], e["email"]) for e in loops.get("events")) == [
        ("clerkSignUp", CLERK_USER, "example@example.org"),
        ("joinedWaitlist", None, "john.doe@example.com"),
        ("newStripeCustomer", None, "test12@email.com"),
        ("signUp", SUPABASE_USER, "ada.lovelace@example.com"),
    ]
    signed_up, changed, gone = [
        (c["path"].removeprefix("/api/v1"), c["body"])
        for c in loops.get("requests")
        if c["body"] and c["body"].get("userId") == SUPABASE_USER and "eventName" not in c["body"]
    ]
    assert signed_up == ("/contacts/create", {
        "userId": SUPABASE_USER, "email": "ada.lovelace@example.com", "source": "Supabase webhook",
        "userGroup": "app", "firstName": "Ada", "lastName": "Lovelace",
    })  # fmt: skip
    assert changed[0] == "/contacts/update"
    assert changed[1]["email"] == "ada.byron@example.com"
    assert gone == ("/contacts/delete", {"userId": SUPABASE_USER})
