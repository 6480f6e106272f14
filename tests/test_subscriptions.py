"""Subscription events (issue 13): their objects carry only a customer id, so the bridge looks
the customer's email and name up in Stripe at delivery, with the endpoint's Stripe API key.

The bridge runs in-process with the Loops sandbox (tests/harness.py) and its own delivery
worker, whose Stripe calls go to the Stripe stand-in (tests/stripe_standin.py) served on
loopback; only the worker's waits on a Stripe 429 are recorded rather than slept. Webhooks
are signed as Stripe signs them. Subscriptions are built from Stripe's documented
subscription object (tests/fixtures/stripe/stripe-docs/subscription.object.json, through
``stripe_standin.subscription``): 10.00 USD a month, price price_1MowQULkdIwHu7ixraBm864M of
product prod_Na6dGcTsmU0I4R.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bridge import registry
from bridge.delivery import Worker
from bridge.models import DELIVERED, FAILED, IGNORED, QUEUED
from bridge.registry import EndpointForm
from bridge.stripe_api import StripeAPI
from tests import stripe_standin
from tests.harness import FAST, Harness
from tests.helpers import fixture_json
from tests.stripe_standin import StripeStandin

SECRET = "whsec_Q7f3k9x2LookupTestSecret0001"
STRIPE_KEY = "rk_test_51Q7f3k9x2LookupKeyZ0000001"
SUBSCRIPTION_TYPES = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
]
LOOPS_EVENTS = {
    "customer.subscription.created": "subscriptionStarted",
    "customer.subscription.updated": "subscriptionChanged",
    "customer.subscription.deleted": "subscriptionEnded",
    "customer.subscription.trial_will_end": "trialEnding",
    "invoice.upcoming": "invoiceComing",
    "customer.updated": "customerChanged",
}
CREATED = 1_714_549_400  # 2024-05-01T07:43:20Z: when the test subscriptions start
MONTH = 1682288167 - 1679609767  # the documented subscription's period: 31 days


@dataclass
class Bridge:
    h: Harness
    stripe: StripeStandin
    waits: list[float]  # what the worker's Stripe client waited on 429s, in seconds


@pytest.fixture
def bridge(tmp_path: Path, stripe_standin: StripeStandin) -> Iterator[Bridge]:
    stripe = stripe_standin
    stripe.add_key(STRIPE_KEY)
    waits: list[float] = []
    url = stripe.url
    with Harness(tmp_path, worker=False, BRIDGE_STRIPE_API_URL=url) as h:
        worker = Worker(
            h.engine,
            h.settings,
            transport=httpx.ASGITransport(app=h.sandbox_app),
            intervals=FAST,
            poll_seconds=0.02,
            shutdown_grace=1.0,
            stripe_api=lambda key: StripeAPI(key, h.settings.stripe_api_url, sleep=waits.append),
        )
        running = h.loop.create_task(worker.run())
        try:
            yield Bridge(h, stripe, waits)
        finally:
            worker.stop()
            h.run(running)


def endpoint(h: Harness, types: list[str], *, account: str = "acme", key: bool = True) -> str:
    """A Stripe endpoint for ``types`` (and invoice.upcoming) with LOOPS_EVENTS, made as a
    person makes it: without the types that need a key, then the key, then those types."""
    if not any(a.name == account for a in registry.list_accounts(h.engine)):
        h.account(account, f"loops_key_{account}_Q7f3k9x2")
    endpoint_id = registry.create_endpoint(
        h.engine,
        name="Stripe",
        account=account,
        provider="stripe",
        event_types=["invoice.upcoming"],
        signing_secret=SECRET,
        loops_events={"invoice.upcoming": LOOPS_EVENTS["invoice.upcoming"]},
    )
    if key:
        registry.set_stripe_key(h.engine, endpoint_id, STRIPE_KEY)
    if types:
        wanted = ["invoice.upcoming", *types]
        registry.update_endpoint(
            h.engine,
            endpoint_id,
            EndpointForm(
                "Stripe",
                account,
                "stripe",
                wanted,
                loops_events={t: LOOPS_EVENTS[t] for t in wanted},
            ),
        )
    return endpoint_id


def customer(b: Bridge, index: int, **fields: object) -> str:
    """A customer in the Stripe stand-in; its id."""
    made = stripe_standin.customer(index, **fields)  # type: ignore[arg-type]
    b.stripe.add([made])
    return made["id"]


def subscription_event(event_type: str, customer_id: str, **fields: object) -> bytes:
    """A webhook body: ``event_type`` about a subscription of ``customer_id``."""
    obj = stripe_standin.subscription(customer_id, created=CREATED, **fields)  # type: ignore[arg-type]
    return json.dumps(stripe_standin.event(event_type, obj)).encode()


def settled(h: Harness, answer: dict) -> dict:
    """Run the bridge until the delivery Stripe was answered about is no longer queued."""
    assert answer["status"] == QUEUED, answer
    (row,) = h.until(
        lambda: [r for r in h.deliveries(id=answer["id"]) if r["status"] != QUEUED],
        what=f"delivery {answer['id']}",
    )
    return row


def lookups(b: Bridge, customer_id: str) -> list[int]:
    """The statuses Stripe answered the lookups of ``customer_id`` with."""
    return [r.status for r in b.stripe.calls(f"/v1/customers/{customer_id}")]


# -- delivered ---------------------------------------------------------------------------------


def test_each_subscription_event_reaches_loops_with_the_customers_email_and_properties(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, SUBSCRIPTION_TYPES)
    jenny = customer(bridge, 1, email="jenny.rosen@example.com", name="Jenny Rosen")
    trial_end = CREATED + 14 * 86_400
    bodies = {
        "customer.subscription.created": subscription_event("customer.subscription.created", jenny),
        "customer.subscription.updated": subscription_event(
            "customer.subscription.updated", jenny, cancel_at_period_end=True
        ),
        "customer.subscription.trial_will_end": subscription_event(
            "customer.subscription.trial_will_end", jenny, status="trialing", trial_end=trial_end
        ),
        "customer.subscription.deleted": subscription_event(
            "customer.subscription.deleted", jenny, status="canceled"
        ),
    }
    for event_type, body in bodies.items():
        row = settled(h, h.webhook(endpoint_id, body, SECRET).json())
        assert row["status"] == DELIVERED, row
        assert row["reason"].startswith(f"email looked up from Stripe customer {jenny}; "), row
        assert LOOPS_EVENTS[event_type] in row["reason"]

    (contact,) = h.loops_get("contacts")
    assert contact["email"] == "jenny.rosen@example.com"
    assert (contact["firstName"], contact["lastName"]) == ("Jenny", "Rosen")
    assert contact["source"] == "Stripe webhook"
    sent = h.loops_get("events")
    assert [(e["email"], e["eventName"]) for e in sent] == [
        ("jenny.rosen@example.com", LOOPS_EVENTS[t]) for t in bodies
    ]
    common = {
        "customerId": jenny,
        "priceId": "price_1MowQULkdIwHu7ixraBm864M",
        "productId": "prod_Na6dGcTsmU0I4R",
        "interval": "month",
        "intervalCount": 1,
        "quantity": 1,
        "currency": "USD",
        "amount": 10.0,
        "amountFormatted": "10.00 USD",
        "currentPeriodEnd": "2024-06-01T07:43:20Z",  # CREATED + the documented 31 days
        "livemode": False,
    }
    by_name = {e["eventName"]: e["eventProperties"] for e in sent}
    for event_type, body in bodies.items():
        properties = by_name[LOOPS_EVENTS[event_type]]
        assert properties.items() >= common.items(), (event_type, properties)
        assert properties["stripeEventType"] == event_type
        assert properties["stripeEventId"] == json.loads(body)["id"]
        assert properties["subscriptionId"].startswith("sub_")
    assert by_name["subscriptionStarted"]["status"] == "active"
    assert by_name["subscriptionStarted"]["cancelAtPeriodEnd"] is False
    assert "trialEnd" not in by_name["subscriptionStarted"]  # null in Stripe: left out
    assert by_name["subscriptionChanged"]["cancelAtPeriodEnd"] is True
    assert by_name["trialEnding"]["status"] == "trialing"
    assert by_name["trialEnding"]["trialEnd"] == "2024-05-15T07:43:20Z"
    assert by_name["subscriptionEnded"]["status"] == "canceled"
    # One customer, four events, one after the other: Stripe was asked once.
    assert lookups(bridge, jenny) == [200]
    # The log shows the email looked up, so it can be searched and joined to Loops' reports.
    assert {d["email"] for d in h.deliveries()} == {"jenny.rosen@example.com"}


def test_a_burst_about_one_customer_asks_stripe_once_per_customer(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.updated"])
    first, second = customer(bridge, 1), customer(bridge, 2)
    bodies = [
        subscription_event("customer.subscription.updated", who, index=n)
        for n in range(12)
        for who in (first, second)
    ]
    answers = h.webhooks(endpoint_id, bodies, SECRET)
    assert {a["status"] for a in answers} == {QUEUED}
    rows = h.settled(len(bodies))
    assert {r["status"] for r in rows} == {DELIVERED}, rows
    assert (lookups(bridge, first), lookups(bridge, second)) == ([200], [200])
    emails = [e["email"] for e in h.loops_get("events")]
    assert sorted(emails) == ["customer1@example.com"] * 12 + ["customer2@example.com"] * 12
    assert len(h.loops_calls("/contacts/create")) == 2  # one contact each


def test_deliveries_for_one_customer_at_once_share_one_stripe_call(bridge):
    # Two Loops accounts fed by one Stripe account: their deliveries run at the same time.
    h = bridge.h
    jenny = customer(bridge, 1)
    one = endpoint(h, ["customer.subscription.created"], account="one")
    other = endpoint(h, ["customer.subscription.created"], account="other")
    held = bridge.stripe.hold(f"/v1/customers/{jenny}")
    body = subscription_event("customer.subscription.created", jenny)
    answers = [h.webhook(one, body, SECRET).json(), h.webhook(other, body, SECRET).json()]
    h.until(held.reached.is_set, what="the first lookup to reach Stripe")

    def claimed() -> int:
        with h.engine.connect() as conn:
            query = "SELECT count(*) FROM deliveries WHERE claimed_by > ''"
            return conn.execute(text(query)).scalar_one()

    h.until(lambda: claimed() == 2, what="both deliveries to be under way")
    held.release()
    assert [settled(h, a)["status"] for a in answers] == [DELIVERED, DELIVERED]
    assert lookups(bridge, jenny) == [200]
    assert [e["email"] for e in h.loops_get("events")] == ["customer1@example.com"] * 2


def test_a_slow_lookup_keeps_no_other_customer_waiting(bridge):
    """Deliveries whose email is still to be looked up are their customer's, one customer's
    at a time, not the whole account's."""
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.created"])
    slow, other = customer(bridge, 1), customer(bridge, 2)
    held = bridge.stripe.hold(f"/v1/customers/{slow}")
    waiting = h.webhook(
        endpoint_id, subscription_event("customer.subscription.created", slow), SECRET
    ).json()
    h.until(held.reached.is_set, what="the slow customer's lookup to reach Stripe")
    also = h.webhook(
        endpoint_id, subscription_event("customer.subscription.created", other), SECRET
    ).json()
    assert settled(h, also)["status"] == DELIVERED  # while the first lookup is still held
    assert h.deliveries(id=waiting["id"])[0]["status"] == QUEUED
    held.release()
    assert settled(h, waiting)["status"] == DELIVERED
    assert [e["email"] for e in h.loops_get("events")] == [
        "customer2@example.com",
        "customer1@example.com",
    ]


def test_a_lookup_retried_after_a_loops_error_still_names_the_contact(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.created"])
    jenny = customer(bridge, 1, email="jenny.rosen@example.com", name="Jenny Rosen")
    h.fault(status=503, count=1)  # the first try's first Loops call
    body = subscription_event("customer.subscription.created", jenny)
    row = settled(h, h.webhook(endpoint_id, body, SECRET).json())
    assert (row["status"], row["attempts"]) == (DELIVERED, 2), row
    assert row["reason"].startswith(f"email looked up from Stripe customer {jenny}; "), row
    (contact,) = h.loops_get("contacts")
    assert (contact["email"], contact["firstName"], contact["lastName"]) == (
        "jenny.rosen@example.com",
        "Jenny",
        "Rosen",
    )


def test_a_customer_updated_makes_the_next_lookup_ask_stripe_again(bridge):
    """A customer's email changed: its customer.updated reaches the bridge, and the next
    subscription event goes to the new address, not to the one looked up minutes ago."""
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.updated", "customer.updated"])
    jenny = customer(bridge, 1, email="jenny@old.example")
    body = subscription_event("customer.subscription.updated", jenny, index=1)
    assert settled(h, h.webhook(endpoint_id, body, SECRET).json())["status"] == DELIVERED
    moved = stripe_standin.customer(1, email="jenny@new.example")
    bridge.stripe.add([moved])  # Stripe has the new address...
    changed = json.dumps(stripe_standin.event("customer.updated", moved)).encode()
    assert settled(h, h.webhook(endpoint_id, changed, SECRET).json())["status"] == DELIVERED
    later = subscription_event("customer.subscription.updated", jenny, index=2)
    assert settled(h, h.webhook(endpoint_id, later, SECRET).json())["status"] == DELIVERED

    assert lookups(bridge, jenny) == [200, 200]  # ...and is asked again after the update
    assert [(e["email"], e["eventName"]) for e in h.loops_get("events")] == [
        ("jenny@old.example", "subscriptionChanged"),
        ("jenny@new.example", "customerChanged"),
        ("jenny@new.example", "subscriptionChanged"),
    ]


def test_an_upcoming_invoice_without_an_email_is_delivered_to_its_customers_email(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, [])
    invoice = fixture_json("captured-test-mode/invoice.paid.event.json")
    invoice.update(id="evt_upcoming_without_email", type="invoice.upcoming")
    invoice["data"]["object"].update(customer_email=None, customer_name=None)
    made = stripe_standin.customer(3, email="invoiced@example.com", name="Ina Voice")
    made["id"] = invoice["data"]["object"]["customer"]
    bridge.stripe.add([made])

    row = settled(h, h.webhook(endpoint_id, json.dumps(invoice).encode(), SECRET).json())
    assert row["status"] == DELIVERED, row
    assert row["reason"].startswith(f"email looked up from Stripe customer {made['id']}")
    (event,) = h.loops_get("events")
    assert (event["email"], event["eventName"]) == ("invoiced@example.com", "invoiceComing")
    assert event["eventProperties"]["amountDueFormatted"] == "700.00 USD"


def test_a_test_event_from_the_admin_needs_no_lookup(bridge):
    # The sample's customer is made up, so the sample carries the typed address itself.
    h = bridge.h
    endpoint_id = endpoint(h, SUBSCRIPTION_TYPES)
    h.sign_in()
    h.connect_admin()
    answer = h.form(
        f"/admin/endpoints/{endpoint_id}/test",
        event_type="customer.subscription.trial_will_end",
        email="admin.test@example.com",
    )
    assert answer.status_code == 303, answer.text
    (row,) = h.settled(1)
    assert row["status"] == DELIVERED, row
    (event,) = h.loops_get("events")
    assert (event["email"], event["eventName"]) == ("admin.test@example.com", "trialEnding")
    assert event["eventProperties"]["status"] == "trialing"
    assert event["eventProperties"]["amountFormatted"] == "20.00 USD"
    assert bridge.stripe.calls() == []


# -- waited out, retried ------------------------------------------------------------------------


def test_stripe_429s_are_waited_out(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.created"])
    jenny = customer(bridge, 1)
    bridge.stripe.rate_limit(2, retry_after=3)
    body = subscription_event("customer.subscription.created", jenny)
    row = settled(h, h.webhook(endpoint_id, body, SECRET).json())
    assert row["status"] == DELIVERED, row
    assert row["attempts"] == 1  # waited within the one attempt, as Stripe asked
    assert bridge.waits == [3.0, 3.0]
    assert lookups(bridge, jenny) == [429, 429, 200]


def test_a_refused_stripe_key_is_retried_and_says_what_to_fix(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.created"])
    jenny = customer(bridge, 1)
    revoked = bridge.stripe.keys.pop(STRIPE_KEY)
    answer = h.webhook(
        endpoint_id, subscription_event("customer.subscription.created", jenny), SECRET
    )
    delivery_id = answer.json()["id"]
    (row,) = h.until(
        lambda: [r for r in h.deliveries(id=delivery_id) if r["attempts"] >= 2],
        what="two tries",
    )
    assert row["status"] == QUEUED, row
    assert f"could not look up the email of Stripe customer {jenny}" in row["reason"]
    assert "Stripe refused the API key rk_test_…0001 (401)" in row["reason"]
    assert "next try at" in row["reason"]
    assert h.loops_calls() == []

    bridge.stripe.keys[STRIPE_KEY] = revoked  # the key works again: the next try delivers
    assert settled(h, answer.json())["status"] == DELIVERED
    (event,) = h.loops_get("events")
    assert event["email"] == "customer1@example.com"


def test_a_new_key_sends_the_lookups_that_waited_on_the_backoff_at_once(offline):
    # No worker: what the refused key's tries left stays as they left it.
    h = offline
    endpoint_id = endpoint(h, ["customer.subscription.created"])
    waiting = h.webhook(
        endpoint_id, subscription_event("customer.subscription.created", "cus_Q7f3Waiting"), SECRET
    ).json()["id"]
    invoice = fixture_json("captured-test-mode/invoice.paid.event.json")  # has an email
    invoice.update(type="invoice.upcoming", id="evt_Q7f3k9x2WithAnEmail")
    with_email = h.webhook(endpoint_id, json.dumps(invoice).encode(), SECRET).json()["id"]
    hour_later = "next_attempt_at = strftime('%s', 'now') + 3600"
    with h.engine.begin() as conn:  # as Stripe refusing the old key left them: an hour to go
        conn.execute(text(f"UPDATE deliveries SET attempts = 4, {hour_later}"))
    new_key = "rk_test_51Q7f3k9x2ReplacedKeyZ000002"

    done = h.cli("endpoints", "set-stripe-key", endpoint_id, "-", "--no-check", stdin=new_key)

    assert done.stdout.strip().endswith(
        "1 queued delivery waiting to look a customer's email up in Stripe goes now."
    )
    with h.engine.connect() as conn:
        due = dict(conn.execute(text("SELECT id, next_attempt_at FROM deliveries")).all())
    assert due[waiting] <= time.time() < due[with_email]  # only the lookup goes now
    again = h.cli(
        "endpoints", "set-stripe-key", endpoint_id, "-", "--no-check", "--json", stdin=new_key
    )
    assert again["deliveries_resumed"] == 0  # nothing waits any more


# -- ignored, failed ------------------------------------------------------------------------------


def test_without_a_stripe_key_an_event_without_an_email_is_ignored_saying_so(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, [], key=False)
    invoice = fixture_json("captured-test-mode/invoice.paid.event.json")
    invoice.update(type="invoice.upcoming")
    invoice["data"]["object"]["customer_email"] = None
    customer_id = invoice["data"]["object"]["customer"]
    answer = h.webhook(endpoint_id, json.dumps(invoice).encode(), SECRET).json()
    assert answer["status"] == IGNORED
    assert answer["reason"] == (
        f"the event carries no email address, only Stripe customer {customer_id}, and this "
        "endpoint has no Stripe API key to look its email up with: add one "
        f"(`loops-bridge endpoints set-stripe-key {endpoint_id} -`, or on the endpoint's "
        "page in the admin)"
    )
    (row,) = h.deliveries()
    assert (row["status"], row["reason"]) == (IGNORED, answer["reason"])
    assert bridge.stripe.calls() == []


def test_a_customer_without_an_email_fails_and_a_retry_after_adding_one_delivers(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.created"])
    nobody = customer(bridge, 4, email=None)
    answer = h.webhook(
        endpoint_id, subscription_event("customer.subscription.created", nobody), SECRET
    ).json()
    row = settled(h, answer)
    assert row["status"] == FAILED
    assert row["reason"].startswith(
        f"Stripe customer {nobody} has no email address, so Loops cannot take this event"
    )
    assert h.loops_calls() == []

    bridge.stripe.add([stripe_standin.customer(4, email="found@example.com")])
    registry.retry_delivery(h.engine, answer["id"])
    h.until(lambda: h.deliveries(id=answer["id"])[0]["status"] == DELIVERED, what="the retry")
    assert [e["email"] for e in h.loops_get("events")] == ["found@example.com"]
    assert lookups(bridge, nobody) == [200, 200]  # a customer without an email is not kept


def test_a_customer_stripe_no_longer_has_fails(bridge):
    h = bridge.h
    endpoint_id = endpoint(h, ["customer.subscription.deleted"])
    gone = stripe_standin.customer(5)
    gone["deleted"] = True
    bridge.stripe.add([gone])
    unknown = "cus_NeverExisted0001"
    for who in (gone["id"], unknown):
        body = subscription_event("customer.subscription.deleted", who, status="canceled")
        row = settled(h, h.webhook(endpoint_id, body, SECRET).json())
        assert row["status"] == FAILED
        assert row["reason"].startswith(f"Stripe has no customer {who} (it was deleted")
    assert h.loops_calls() == []
