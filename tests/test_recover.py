"""Recovering missed events from Stripe's Events API (bridge/recover.py,
`loops-bridge recover`): the real app and worker in-process against the Loops sandbox, the
Stripe API stand-in served on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import recover
from bridge.registry import Invalid
from tests import stripe_standin
from tests.harness import Harness
from tests.stripe_standin import StripeStandin

KEY = "rk_test_51RecoverTestKeyReadOnly000ee44ff"
SECRET = "whsec_recover_test_secret_0123456789"
DAY = 86_400


@pytest.fixture
def stripe(stripe_standin: StripeStandin) -> StripeStandin:
    stripe_standin.add_key(KEY)
    return stripe_standin


@pytest.fixture
def bridge(tmp_path: Path, stripe_standin: StripeStandin) -> Iterator[Harness]:
    with Harness(tmp_path, BRIDGE_STRIPE_API_URL=stripe_standin.url) as harness:
        yield harness


def paid(index: int, created: int, email: str | None = None) -> dict:
    invoice = {
        **stripe_standin.INVOICE,
        "id": f"in_recover{index:04d}",
        "customer_email": email or f"payer{index}@example.com",
        "created": created,
    }
    return stripe_standin.event("invoice.paid", invoice, created=created)


def test_missed_events_are_queued_in_event_time_order_and_received_ones_are_duplicates(
    bridge, stripe
):
    now = int(time.time())
    endpoint_id = bridge.endpoint(
        "invoice.paid,customer.created", secret=SECRET, loops_event="successfulPayment"
    )
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=KEY)
    events = [paid(i, now - 3 * DAY + i * 60) for i in range(5)]
    old = paid(9, now - 6 * DAY)  # before --since
    other = stripe_standin.event("invoice.payment_failed", stripe_standin.INVOICE, created=now)
    stripe.add([*events, old, other])
    # The bridge received the 2nd before its outage.
    received = json.dumps(events[1]).encode()
    assert bridge.webhook(endpoint_id, received, SECRET).json()["status"] == "queued"

    counts = bridge.cli("recover", endpoint_id, "--since", "4d", "--json")

    assert counts == {"found": 5, "new": 4, "duplicate": 1, "ignored": 0}
    rows = bridge.settled(5)
    recovered = [r["event_id"] for r in rows[1:]]
    assert recovered == [e["id"] for e in events if e is not events[1]]  # oldest first
    sent = bridge.loops_get("events")
    assert sorted(e["email"] for e in sent) == sorted(f"payer{i}@example.com" for i in range(5))
    # Queued as if Stripe had delivered them: the same idempotency key a webhook would use.
    keys = {c["idempotencyKey"] for c in bridge.loops_calls("/events/send")}
    assert f"{endpoint_id}:{events[0]['id']}" in keys
    again = bridge.cli("recover", endpoint_id, "--since", "4d", "--json")
    assert again == {"found": 5, "new": 0, "duplicate": 5, "ignored": 0}
    text = bridge.cli("recover", endpoint_id, "--since", "4d").stdout
    assert "5 events found in Stripe, 0 new" in text and "5 already received" in text


def test_an_event_without_email_is_counted_ignored(bridge, stripe):
    endpoint_id = bridge.endpoint("invoice.paid", secret=SECRET)
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=KEY)
    now = int(time.time())
    nobody = paid(1, now - 60)
    nobody["data"]["object"].update(customer_email=None, customer=None)  # no one to look up
    stripe.add([nobody, paid(2, now - 30)])

    assert bridge.cli("recover", endpoint_id, "--since", "1h", "--json") == {
        "found": 2,
        "new": 1,
        "duplicate": 0,
        "ignored": 1,
    }


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        ("31d", "Stripe keeps events for 30 days only"),
        ("2020-01-01", "Stripe keeps events for 30 days only"),
        ("yesterday", "is not a time"),
        ("2999-01-01T00:00:00Z", "is in the future"),
    ],
)
def test_a_since_stripe_cannot_answer_is_refused_with_the_reason(bridge, stripe, since, reason):
    endpoint_id = bridge.endpoint("invoice.paid", secret=SECRET)
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", stdin=KEY)
    refused = bridge.cli("recover", endpoint_id, "--since", since, check=False)
    assert refused.returncode == 2
    assert reason in refused.stderr
    assert stripe.calls("/v1/events") == [stripe.calls("/v1/events")[0]]  # only the key check


@pytest.mark.parametrize(
    ("text", "ago"),
    [("90m", 5400), ("36h", 36 * 3600), ("7d", 7 * DAY), ("30d", 30 * DAY)],
)
def test_since_reads_a_time_ago(text, ago):
    now = 1_800_000_000.0
    assert recover.parse_since(text, now) == now - ago


def test_since_reads_iso_times_as_utc_unless_they_say_otherwise():
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert recover.parse_since("2027-01-14", now) == 1_799_884_800
    assert recover.parse_since("2027-01-14T09:30:00Z", now) == 1_799_919_000
    assert recover.parse_since("2027-01-14T10:30:00+01:00", now) == 1_799_919_000
    with pytest.raises(Invalid, match="more than 30 days ago"):
        recover.parse_since("2026-12-01", now)


def test_stripe_refusing_the_events_permission_is_said_plainly(bridge, stripe):
    endpoint_id = bridge.endpoint("invoice.paid", secret=SECRET)
    customers_only = stripe.add_key("rk_test_51CustomersOnly0000000000gg55", ["rak_customer_read"])
    bridge.cli("endpoints", "set-stripe-key", endpoint_id, "-", "--no-check", stdin=customers_only)

    refused = bridge.cli("recover", endpoint_id, "--since", "1d", check=False)

    assert refused.returncode == 2
    assert "Events" in refused.stderr and customers_only not in refused.stderr
