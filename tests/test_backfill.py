"""Importing the customers Stripe already has (bridge/backfill.py, `loops-bridge backfill`):
the real app and worker in-process against the Loops sandbox, and the Stripe API stand-in
served on loopback (tests/stripe_standin.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading

import pytest

from bridge import backfill
from bridge.stripe_api import StripeAPI
from tests import servers, stripe_standin
from tests.harness import Harness
from tests.helpers import signed_headers
from tests.stripe_standin import StripeStandin

KEY = "rk_test_51BackfillTestKeyReadOnly00aa11bb"
SECRET = "whsec_backfill_test_secret_0123456789"


@pytest.fixture
def stripe(stripe_standin: StripeStandin) -> StripeStandin:
    stripe_standin.add_key(KEY)
    return stripe_standin


@pytest.fixture
def bridge(importing: Harness) -> Harness:
    return importing


def endpoint(bridge: Harness, **options) -> str:  # type: ignore[no-untyped-def]
    """A Stripe endpoint that sends newStripeCustomer on customer.created, with the key."""
    endpoint_id = bridge.endpoint(
        "customer.created,invoice.paid",
        secret=SECRET,
        loops_events={"customer.created": "newStripeCustomer"},
        user_group="Customers",
        **options,
    )
    done = bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", "--json", stdin=KEY)
    assert done["stripe_api_key"] == "rk_test_…11bb"
    return endpoint_id


def test_an_import_creates_each_customer_in_loops_once_and_sends_no_loops_event(bridge, stripe):
    stripe.add(stripe_standin.customers(130, without_email_every=10))  # 2 pages
    endpoint_id = endpoint(bridge)

    done = bridge.cli("backfill", endpoint_id, "--json")

    assert done["state"] == "done"
    assert (done["customers"], done["imported"], done["skipped"]) == (130, 117, 13)
    assert done["already_in_loops"] == 0 and done["failed"] == 0 and done["resumed"] is False
    rows = bridge.settled(117)
    assert {row["status"] for row in rows} == {"delivered"}
    assert all(row["reason"] == "contact created" for row in rows)
    contacts = {c["email"]: c for c in bridge.loops_get("contacts")}
    assert len(contacts) == 117
    sample = contacts["customer1@example.com"]
    assert (sample["source"], sample["userGroup"]) == ("Stripe webhook", "Customers")
    assert (sample["firstName"], sample["lastName"]) == ("Customer", "1")
    assert "customer9@example.com" not in contacts  # the 10th has no email
    assert bridge.loops_get("events") == []  # no welcome email for 117 old customers
    assert len(bridge.loops_calls()) == 117  # one call per customer new to Loops
    # The log shows each import, and the CLI the endpoint's state.
    assert rows[0]["event_id"].startswith("import:cus_")
    assert bridge.cli("backfill", endpoint_id, "--dry-run", "--json")["would_import"] == 0


def test_contacts_loops_or_the_bridge_already_has_are_left_as_they_are(bridge, stripe):
    stripe.add(stripe_standin.customers(3))
    endpoint_id = endpoint(bridge)
    # customer0 reached Loops through a webhook already; customer1 was added in Loops by hand.
    body = json.dumps(stripe_standin.event("customer.created", stripe.stored_customers()[0]))
    assert bridge.webhook(endpoint_id, body.encode(), SECRET).json()["status"] == "queued"
    bridge.settled(1)
    bridge.run(
        bridge.loops.post(
            "/api/v1/contacts/create",
            json={"email": "customer1@example.com", "firstName": "Kept"},
            headers={"Authorization": "Bearer loops_key_acme_1234"},
        )
    )
    calls_before = len(bridge.loops_calls())

    done = bridge.cli("backfill", endpoint_id, "--json")

    assert (done["imported"], done["already_in_loops"]) == (2, 1)  # customer0: no call at all
    bridge.settled(3)
    status = backfill.status(bridge.engine, endpoint_id, 10)
    assert (status.created, status.already_in_loops, status.failed) == (1, 2, 0)
    assert len(bridge.loops_calls()) - calls_before == 2  # one create each, 409 for customer1
    kept = [c for c in bridge.loops_get("contacts") if c["email"] == "customer1@example.com"]
    assert kept[0]["firstName"] == "Kept"  # a 409 changes nothing
    assert [e["eventName"] for e in bridge.loops_get("events")] == ["newStripeCustomer"]


def test_an_address_a_deleted_customer_shared_is_imported_for_the_customer_still_there(
    bridge, stripe
):
    """Two Stripe customers had one address; one was deleted (Loops had no such contact),
    the other is still a customer: the import creates its contact. The deletion is kept
    against events older than it, not against what Stripe says now."""
    (active,) = stripe_standin.customers(1)
    stripe.add([active])
    endpoint_id = endpoint(bridge, on_delete="delete")
    bridge.cli("endpoints", "edit", endpoint_id, "--events", "customer.created,customer.deleted")
    twin = {**stripe_standin.customer(7, email=active["email"]), "deleted": True}
    deleted = stripe_standin.event("customer.deleted", twin, created=active["created"] + 60)
    answer = bridge.webhook(endpoint_id, json.dumps(deleted).encode(), SECRET).json()
    (row,) = bridge.settled(1)
    assert (row["id"], row["reason"]) == (answer["id"], "nothing to delete in Loops")

    done = bridge.cli("backfill", endpoint_id, "--json")
    assert (done["imported"], done["already_in_loops"]) == (1, 0)
    imported = [r for r in bridge.settled(2) if r["event_id"].startswith("import:")]
    assert [r["reason"] for r in imported] == ["contact created"]
    assert [c["email"] for c in bridge.loops_get("contacts")] == [active["email"]]


def test_stopped_midway_it_continues_where_it_stopped_and_imports_nothing_twice(bridge, stripe):
    stripe.add(stripe_standin.customers(250))
    endpoint_id = endpoint(bridge)
    stop = threading.Event()
    pages: list[int] = []

    def on_page(state) -> None:  # type: ignore[no-untyped-def]
        pages.append(state.customers)
        if len(pages) == 2:
            stop.set()  # as Ctrl-C does

    api = StripeAPI(KEY, stripe.url)
    first = backfill.run(bridge.engine, endpoint_id, api, on_page=on_page, stop=stop)
    assert (first.state, first.customers, first.queued) == ("interrupted", 200, 200)

    again = bridge.cli("backfill", endpoint_id, "--json")
    assert again["resumed"] is True and again["state"] == "done"
    assert (again["customers"], again["imported"]) == (250, 250)
    pages_read = [r for r in stripe.calls("/v1/customers") if r.params["limit"] == ["100"]]
    assert len(pages_read) == 3  # pages 1-2, then 3: none read twice
    rows = bridge.deliveries()
    assert len({row["email"] for row in rows}) == len(rows) == 250  # one delivery each


def test_a_live_webhook_waits_for_at_most_the_imports_already_running(bridge, stripe):
    stripe.add(stripe_standin.customers(120))
    endpoint_id = endpoint(bridge)
    bridge.cli("endpoints", "pause", endpoint_id)  # so that both wait for the same claim
    bridge.cli("backfill", endpoint_id, "--json")  # 120 imports queued first
    invoice = stripe_standin.event("invoice.paid", stripe_standin.INVOICE)
    body = json.dumps(invoice).encode()
    assert bridge.webhook(endpoint_id, body, SECRET).json()["status"] == "queued"
    bridge.cli("endpoints", "resume", endpoint_id)

    bridge.settled(121)

    emails = [c["body"].get("email") for c in bridge.loops_calls()]
    live = emails.index(stripe_standin.INVOICE["customer_email"])
    concurrency = bridge.settings.worker_concurrency // 2  # the most one account may run
    assert live <= concurrency, f"the live webhook went out after {live} imports"


def test_a_dry_run_counts_and_estimates_without_changing_anything(bridge, stripe):
    stripe.add(stripe_standin.customers(130, without_email_every=13))
    endpoint_id = endpoint(bridge)
    bridge.cli("accounts", "set", "acme", "--rate-limit", "10")

    plan = bridge.cli("backfill", endpoint_id, "--dry-run", "--json")

    assert (plan["would_import"], plan["skipped"], plan["already_in_loops"]) == (120, 10, 0)
    assert plan["estimated_seconds"] == 12  # 120 calls at the account's 10 requests/s
    assert bridge.deliveries() == []
    assert backfill.status(bridge.engine, endpoint_id, 10) is None
    text = bridge.cli("backfill", endpoint_id, "--dry-run").stdout
    assert "Would import 120 customers" in text and "Nothing was changed" in text


def test_stripe_rate_limits_are_waited_out(bridge, stripe):
    stripe.add(stripe_standin.customers(150))
    endpoint_id = endpoint(bridge)
    stripe.rate_limit(2, retry_after=3)
    waits: list[float] = []

    done = backfill.run(bridge.engine, endpoint_id, StripeAPI(KEY, stripe.url, sleep=waits.append))

    assert (done.state, done.queued) == ("done", 150)
    assert waits == [3, 3]


def test_an_import_needs_a_stripe_endpoint_with_a_key(bridge, stripe):
    endpoint_id = bridge.endpoint("customer.created", secret=SECRET)
    refused = bridge.cli("backfill", endpoint_id, check=False)
    assert refused.returncode == 2
    assert f"endpoints set-stripe-key {endpoint_id} -" in refused.stderr
    # recover needs the same key, for Stripe's events: the message fits both.
    for command in (["backfill"], ["recover", "--since", "1h"]):
        refused = bridge.cli(command[0], endpoint_id, *command[1:], check=False)
        assert "has no Stripe API key to read Stripe's customers and events with" in refused.stderr
    clerk = bridge.endpoint("user.created", provider="clerk", name="Clerk")
    refused = bridge.cli("backfill", clerk, check=False)
    assert "only a Stripe endpoint reads Stripe's API (to import customers, or recover" in (
        refused.stderr
    )


def test_the_key_is_checked_stored_encrypted_and_shown_as_a_hint(bridge, stripe):
    endpoint_id = bridge.endpoint("customer.created", secret=SECRET)
    no_events = stripe.add_key("rk_test_51NoEventsKey000000000000cc22", ["rak_customer_read"])
    refused = bridge.cli(
        "endpoints", "set-stripe-key", endpoint_id, "-", stdin=no_events, check=False
    )
    assert refused.returncode == 2
    assert "Events" in refused.stderr and no_events not in refused.stderr + refused.stdout

    secret_key = stripe.add_key("sk_test_51SecretKeyFullAccess0000000dd33")
    done = bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=secret_key)
    assert "restricted key is safer" in done.stderr
    assert "sk_test_…dd33" in done.stdout and secret_key not in done.stdout
    with bridge.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT stripe_api_key FROM endpoints").scalar_one()
    assert stored and secret_key not in stored  # encrypted at rest
    shown = bridge.cli("endpoints", "show", endpoint_id, "--json")
    assert shown["stripe_api_key"] == "sk_test_…dd33"


def test_a_test_mode_key_is_refused_for_an_endpoint_receiving_live_events(bridge, stripe):
    endpoint_id = bridge.endpoint("customer.created", secret=SECRET)
    live = stripe_standin.event("customer.created", stripe_standin.customer(1, livemode=True))
    body = json.dumps(live).encode()
    answer = bridge.run(
        bridge.client.post(
            f"/webhooks/{endpoint_id}", content=body, headers=signed_headers(body, SECRET)
        )
    )
    assert answer.status_code == 200
    refused = bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=KEY, check=False)
    assert refused.returncode == 2
    assert "test-mode key" in refused.stderr and "live-mode events" in refused.stderr


def test_subscription_types_need_a_key_on_the_endpoint(bridge, stripe):
    bridge.account()
    refused = bridge.cli(
        "endpoints",
        "create",
        "--name",
        "Subs",
        "--account",
        "acme",
        "--events",
        "customer.subscription.created",
        check=False,
    )
    assert refused.returncode == 2
    assert "set-stripe-key" in refused.stderr
    endpoint_id = bridge.endpoint("customer.created", secret=SECRET)
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=KEY)
    edited = bridge.cli(
        "endpoints", "edit", endpoint_id, "--events", "customer.subscription.created", "--json"
    )
    assert edited["event_types"] == ["customer.subscription.created"]


def test_a_backfill_killed_mid_page_continues_and_imports_nothing_twice(bridge, stripe):
    """kill -9 of the `loops-bridge backfill` process while it waits for page 3: the pages
    written stay, the one in flight is read again, and nobody is queued twice."""
    stripe.add(stripe_standin.customers(250))
    endpoint_id = endpoint(bridge)
    held = stripe.hold(page=3)
    with subprocess.Popen(
        [str(servers.BIN), "backfill", endpoint_id],
        env=bridge.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as killed:
        try:
            assert held.reached.wait(30), "the backfill never asked for page 3"
        finally:
            killed.kill()
    held.release()
    assert killed.returncode == -signal.SIGKILL
    state = backfill.status(bridge.engine, endpoint_id, 200)
    assert (state.customers, state.queued) == (200, 200)

    again = servers.cli(bridge.env, "backfill", endpoint_id)
    assert "Continuing the import started" in again.stderr
    assert "200 customers read so far" in again.stderr
    assert "Import done: 250 customers read from Stripe, 250 imported" in again.stdout
    rows = bridge.deliveries()
    assert len({row["event_id"] for row in rows}) == len(rows) == 250  # one delivery each


def test_stripe_refusing_the_key_is_said_plainly_and_the_import_can_continue(bridge, stripe):
    stripe.add(stripe_standin.customers(150))
    endpoint_id = bridge.endpoint("customer.created", secret=SECRET)
    revoked = "rk_test_51RevokedKeyNotKnown000000000hh66"
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", "--no-check", stdin=revoked)

    dry = bridge.cli("backfill", endpoint_id, "--dry-run", check=False)
    failed = bridge.cli("backfill", endpoint_id, check=False)

    assert dry.returncode == 2 and "rk_test_…hh66" in dry.stderr
    assert failed.returncode == 1 and "rk_test_…hh66" in failed.stderr
    assert "Import stopped; run the same command again to continue" in failed.stdout
    assert revoked not in dry.stderr + failed.stderr + failed.stdout
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=KEY)
    assert bridge.cli("backfill", endpoint_id, "--json")["imported"] == 150
