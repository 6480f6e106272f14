"""The webhook route (bridge/webhooks.py) as Stripe sees it: real Stripe payloads, signed
as Stripe signs them, POSTed to the app in-process (tests/harness.py), and the answer each
one gets. Hostile input over a real socket is tests/test_webhooks_hostile.py's."""

from __future__ import annotations

import time

import httpx
import pytest

from bridge import inbox
from tests.harness import Harness, stripe_event
from tests.helpers import fixture_bytes, signed_headers, stripe_signature

SECRET = "whsec_webhooksTestSecretWWWWWWWWWWWW"
ROLLED_SECRET = "whsec_rolledSecretCCCCCCCCCCCCCCCC"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
CUSTOMER_UPDATED = "constructed/customer.updated.event.json"


def post(h: Harness, endpoint_id: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST ``body`` with exactly these headers, signed or not."""
    return h.run(h.client.post(f"/webhooks/{endpoint_id}", content=body, headers=headers))


def test_an_event_type_not_enabled_is_ignored_with_the_reason(harness):
    endpoint = harness.endpoint("customer.created", secret=SECRET)
    answer = harness.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert "invoice.paid is not enabled" in answer.json()["reason"]
    (stored,) = harness.cli("deliveries", "list", "--status", "ignored", "--json")
    assert stored["reason"] == answer.json()["reason"]
    harness.settled(1)
    assert harness.loops_get("requests") == []


def test_a_type_the_bridge_does_not_handle_is_counted_not_stored(harness):
    # `stripe listen` forwards every type: the log must not fill with them.
    endpoint = harness.endpoint("customer.created", secret=SECRET)
    plan = fixture_bytes("stripe-openapi/event.json")  # plan.created
    for _ in range(3):
        answer = harness.webhook(endpoint, plan, SECRET)
        assert answer.status_code == 200
        assert answer.json() == {
            "status": "ignored",
            "reason": "this bridge does not handle Stripe event type plan.created; stop "
            "sending it from the provider (it is counted, not stored)",
        }
    assert harness.cli("deliveries", "list", "--json") == []
    ((event_type, count, _last),) = inbox.unsupported_types(harness.engine, endpoint)
    assert (event_type, count) == ("plan.created", 3)


def test_an_event_without_an_email_is_ignored(harness):
    endpoint = harness.endpoint("customer.created", secret=SECRET)
    body = fixture_bytes("stripe-java/customer_created.event.json")
    answer = harness.webhook(endpoint, body, SECRET)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert "no email address" in answer.json()["reason"]


@pytest.mark.parametrize(
    ("sign", "reason"),
    [
        (lambda body: {}, "no Stripe-Signature header"),
        (lambda body: {"Stripe-Signature": "nonsense"}, "Stripe-Signature"),
        (lambda body: signed_headers(body, "whsec_someOtherSecretBBBBBBBBBBBB"), "match"),
        (lambda body: signed_headers(body + b" ", SECRET), "match"),
    ],
    ids=["missing", "malformed", "wrong-secret", "body-changed"],
)
def test_a_bad_signature_is_rejected_and_nothing_is_stored(sign, reason, tmp_path):
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint("invoice.paid", secret=SECRET)
        body = fixture_bytes(INVOICE_PAID)
        answer = post(h, endpoint, body, sign(body))
        assert answer.status_code == 400
        assert answer.json()["status"] == "rejected"
        assert reason in answer.json()["reason"]
        assert SECRET not in answer.text
        assert h.deliveries() == []


def test_a_stale_signature_is_rejected(tmp_path):
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint("invoice.paid", secret=SECRET)
        body = fixture_bytes(INVOICE_PAID)
        stale = {"Stripe-Signature": stripe_signature(body, SECRET, int(time.time()) - 301)}
        answer = h.webhook(endpoint, body, SECRET, headers=stale)
        assert answer.status_code == 400
        assert "more than 300 seconds old" in answer.json()["reason"]
        assert h.deliveries() == []


@pytest.mark.parametrize("event_id", ["evt_é中", "evt_\u202e1", "evt\t1", "e" * 256, ""])
def test_a_signed_event_whose_id_loops_cannot_take_is_refused_with_the_reason(
    event_id: str, tmp_path
):
    """Its id would be the Loops Idempotency-Key, a header: printable ASCII only. Stripe's
    are; anything else was never sent by Stripe."""
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint("invoice.paid", secret=SECRET)
        answer = h.webhook(endpoint, stripe_event(INVOICE_PAID, event_id), SECRET)
        assert answer.status_code == 400
        assert answer.json()["reason"] == (
            "The Stripe event has no valid id: its id must be 1 to 255 printable ASCII "
            "characters, as Stripe's are (evt_1NvX...). Send the body exactly as Stripe sent it."
        )
        assert h.deliveries() == []


def test_an_endpoint_waiting_for_its_secret_says_so_until_it_is_added(tmp_path):
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint("invoice.paid")
        body = fixture_bytes(INVOICE_PAID)
        answer = h.webhook(endpoint, body, SECRET)
        assert answer.status_code == 400
        assert "no signing secret yet" in answer.json()["reason"]
        h.cli("endpoints", "add-secret", endpoint, SECRET)
        # Endpoint settings are cached for at most two seconds on the hot path.
        h.until(
            lambda: h.webhook(endpoint, body, SECRET).status_code == 200,
            what="the secret to be taken",
        )


def test_while_a_secret_is_rolled_either_secret_is_accepted(tmp_path):
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint("customer.created,customer.updated", secret=SECRET)
        h.cli("endpoints", "add-secret", endpoint, ROLLED_SECRET)
        created = fixture_bytes(CUSTOMER_CREATED)
        h.until(
            lambda: h.webhook(endpoint, created, ROLLED_SECRET).status_code == 200,
            what="the new secret to be accepted",
        )
        answer = h.webhook(endpoint, fixture_bytes(CUSTOMER_UPDATED), SECRET)
        assert answer.json()["status"] == "queued"
        h.cli("endpoints", "remove-secret", endpoint, SECRET)
        late = stripe_event(CUSTOMER_UPDATED, "evt_after_removal", email="late@example.com")
        h.until(
            lambda: h.webhook(endpoint, late, SECRET).status_code == 400,
            what="the removed secret to be refused",
        )
        still = stripe_event(CUSTOMER_UPDATED, "evt_rolled", email="late@example.com")
        assert h.webhook(endpoint, still, ROLLED_SECRET).json()["status"] == "queued"


def test_an_unknown_endpoint_is_404_and_an_oversize_body_413(tmp_path):
    with Harness(tmp_path, worker=False) as h:
        body = fixture_bytes(INVOICE_PAID)
        assert h.webhook("nope", body, SECRET).status_code == 404
        endpoint = h.endpoint("invoice.paid", secret=SECRET)
        huge = b"{" + b" " * (1024 * 1024) + b"}"
        too_big = h.webhook(endpoint, huge, SECRET)
        assert too_big.status_code == 413
        assert "BRIDGE_MAX_BODY_BYTES" in too_big.json()["reason"]
        assert h.deliveries() == []


def test_concurrent_posts_with_duplicates_store_each_event_once(tmp_path):
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint("customer.created", secret=SECRET)
        bodies = [
            stripe_event(CUSTOMER_CREATED, f"evt_p{i}", email=f"p{i}@example.com")
            for i in range(60)
        ]
        answers = h.webhooks(endpoint, bodies + bodies[:20], SECRET)
        statuses = [a["status"] for a in answers]
        assert statuses.count("queued") == 60 and statuses.count("duplicate") == 20
        # A duplicate answers with the id of the delivery its first copy made.
        assert [a["id"] for a in answers[60:]] == [a["id"] for a in answers[:20]]
        stored = h.deliveries()
        assert sorted(d["id"] for d in stored) == sorted(a["id"] for a in answers[:60])
        assert sorted(d["event_id"] for d in stored) == sorted(f"evt_p{i}" for i in range(60))
