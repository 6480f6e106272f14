"""Delivery (bridge/delivery.py) as Loops and a user see it: the bridge, its worker and the
Loops sandbox in-process (tests/harness.py), the sandbox playing outages, refused keys and
429s. Probes, backoff and the maximum age are made short through the settings and
:class:`bridge.accounts.Intervals`; nothing waits on a 30 s clock."""

from __future__ import annotations

import itertools
import logging

import httpx
import pytest
import sqlalchemy as sa

import providers
from bridge import accounts, db
from bridge.delivery import LONGEST_WAIT, Worker, backoff, idempotency_key
from bridge.models import DEAD, DELIVERED, FAILED, QUEUED, Delivery
from tests.harness import FAST, Harness, busiest_second, stripe_event
from tests.helpers import fixture_bytes, stored_delivery

SECRET = "whsec_deliveryTestSecretDDDDDDDDDDDD"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
CUSTOMER_UPDATED = "constructed/customer.updated.event.json"
ACME_KEY = "loops_key_acme_1234"  # the key Harness.endpoint gives account "acme"


def customers(count: int, prefix: str = "c") -> list[bytes]:
    return [
        stripe_event(CUSTOMER_CREATED, f"evt_{prefix}{i}", email=f"{prefix}{i}@example.com")
        for i in range(count)
    ]


def outcome(h: Harness, answer: httpx.Response | dict) -> dict:
    """Run the bridge until the delivery Stripe was answered about is no longer queued;
    what ``loops-bridge deliveries show`` says of it then."""
    accepted = answer if isinstance(answer, dict) else answer.json()
    assert accepted["status"] == "queued", accepted
    delivery_id = accepted["id"]
    h.until(
        lambda: h.deliveries(id=delivery_id)[0]["status"] != QUEUED,
        what=f"delivery {delivery_id} to be done",
    )
    return h.cli("deliveries", "show", str(delivery_id), "--json")


def gaps(calls: list[dict]) -> list[float]:
    """Seconds between consecutive sandbox requests, by the sandbox's clock."""
    times = sorted(c["at"] for c in calls)
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# -- what reaches Loops -----------------------------------------------------------------------


def test_invoice_paid_creates_the_contact_then_sends_the_event(harness):
    endpoint = harness.endpoint(
        "customer.created,invoice.paid",
        secret=SECRET,
        user_group="customers",
        loops_event="successfulPayment",
    )
    shown = outcome(harness, harness.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET))
    assert shown["status"] == DELIVERED
    assert [c["path"] for c in shown["loops_calls"]] == ["/contacts/create", "/events/send"]
    assert all(c["status_code"] == 200 for c in shown["loops_calls"])

    (contact,) = harness.loops_get("contacts")
    assert contact["email"] == "test12@email.com"
    assert contact["source"] == "Stripe webhook"
    assert contact["userGroup"] == "customers"
    assert contact["firstName"] == "test12"
    (event,) = harness.loops_get("events")
    assert event["eventName"] == "successfulPayment"
    assert event["eventProperties"]["amountPaid"] == 700
    assert event["eventProperties"]["invoiceNumber"] == "7CC2D095-0001"
    assert event["idempotencyKey"] == idempotency_key(endpoint, "evt_1PBXo9RxqlZt79sDnw7dd5cs")


def test_an_existing_loops_contact_keeps_its_source_and_group(harness):
    created = harness.run(
        harness.loops.post(
            "/api/v1/contacts/create",
            json={"email": "test12@email.com", "userGroup": "vip"},
            headers={"Authorization": f"Bearer {ACME_KEY}"},
        )
    )
    assert created.status_code == 200, created.text
    endpoint = harness.endpoint(
        "invoice.paid", secret=SECRET, user_group="customers", loops_event="successfulPayment"
    )
    shown = outcome(harness, harness.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET))
    assert [c["status_code"] for c in shown["loops_calls"]] == [409, 200]
    (contact,) = harness.loops_get("contacts")
    assert (contact["source"], contact["userGroup"]) == ("API", "vip")
    assert contact["firstName"] == "test12"  # the name rode on the event send
    (event,) = harness.loops_get("events")
    assert event["contactProperties"] == {"firstName": "test12"}


def test_a_known_contact_costs_one_call_per_event(harness):
    endpoint = harness.endpoint(
        "customer.created,customer.updated", secret=SECRET, loops_event="stripeCustomer"
    )
    outcome(harness, harness.webhook(endpoint, fixture_bytes(CUSTOMER_CREATED), SECRET))
    shown = outcome(harness, harness.webhook(endpoint, fixture_bytes(CUSTOMER_UPDATED), SECRET))
    assert shown["status"] == DELIVERED
    assert [c["path"] for c in shown["loops_calls"]] == ["/events/send"]


def test_a_contacts_only_endpoint_updates_the_names_of_a_known_contact(harness):
    endpoint = harness.endpoint("customer.created,customer.updated", secret=SECRET)
    outcome(harness, harness.webhook(endpoint, fixture_bytes(CUSTOMER_CREATED), SECRET))
    renamed = stripe_event(CUSTOMER_UPDATED, "evt_renamed", created=1_714_600_000, name="Ada B")
    shown = outcome(harness, harness.webhook(endpoint, renamed, SECRET))
    (call,) = shown["loops_calls"]
    assert (call["method"], call["path"]) == ("PUT", "/contacts/update")
    assert '"source"' not in call["request"]
    (contact,) = harness.loops_get("contacts")
    assert (contact["firstName"], contact["lastName"]) == ("Ada", "B")
    assert harness.loops_get("events") == []


def test_an_older_event_arriving_late_does_not_overwrite_newer_names(harness):
    endpoint = harness.endpoint("customer.updated", secret=SECRET, loops_event="customerUpdated")

    def updated(name: str, created: int, event_id: str) -> bytes:
        return stripe_event(
            CUSTOMER_UPDATED, event_id, created=created, name=name, email="order@example.com"
        )

    outcome(
        harness, harness.webhook(endpoint, updated("Grace Hopper", 1_714_600_000, "e2"), SECRET)
    )
    late = updated("Grace Brewster", 1_714_500_000, "e1")
    shown = outcome(harness, harness.webhook(endpoint, late, SECRET))
    assert shown["status"] == DELIVERED
    assert "newer event" in shown["reason"]
    (contact,) = harness.loops_get("contacts")
    assert (contact["firstName"], contact["lastName"]) == ("Grace", "Hopper")
    # Its Loops event still went, without the names.
    assert [e["eventName"] for e in harness.loops_get("events")] == ["customerUpdated"] * 2
    assert harness.loops_get("events")[1]["contactProperties"] == {}
    # A newer one still wins over what is there.
    outcome(
        harness, harness.webhook(endpoint, updated("Grace Murray", 1_714_700_000, "e3"), SECRET)
    )
    (contact,) = harness.loops_get("contacts")
    assert contact["lastName"] == "Murray"


def test_a_stripe_retry_is_a_duplicate_and_reaches_loops_once(harness):
    endpoint = harness.endpoint("invoice.paid", secret=SECRET, loops_event="successfulPayment")
    body = fixture_bytes(INVOICE_PAID)
    first = harness.webhook(endpoint, body, SECRET).json()
    outcome(harness, first)
    # Stripe retries with a fresh timestamp and signature.
    again = harness.webhook(endpoint, body, SECRET).json()
    assert again == {
        "status": "duplicate",
        "id": first["id"],
        "reason": "this endpoint already received this event",
    }
    harness.settled(1)
    assert len(harness.loops_get("events")) == 1
    assert len(harness.deliveries()) == 1


def test_an_event_loops_already_has_is_not_sent_twice(harness):
    # As after a crash between Loops' answer and the bridge recording it: the retry sends
    # the same Idempotency-Key, and Loops' 409 counts as delivered.
    endpoint = harness.endpoint("invoice.paid", secret=SECRET, loops_event="successfulPayment")
    event_id = "evt_1PBXo9RxqlZt79sDnw7dd5cs"
    sent = harness.run(
        harness.loops.post(
            "/api/v1/events/send",
            json={"email": "test12@email.com", "eventName": "successfulPayment"},
            headers={
                "Authorization": f"Bearer {ACME_KEY}",
                "Idempotency-Key": idempotency_key(endpoint, event_id),
            },
        )
    )
    assert sent.status_code == 200, sent.text
    shown = outcome(harness, harness.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET))
    assert shown["status"] == DELIVERED
    # The event's send made the contact too: both steps were already done.
    assert [c["status_code"] for c in shown["loops_calls"]] == [409, 409]
    assert "had already been sent (same idempotency key)" in shown["reason"]
    assert len(harness.loops_get("events")) == 1


# -- Loops' answers ---------------------------------------------------------------------------


def test_a_request_loops_refuses_fails_with_loops_message(harness):
    endpoint = harness.endpoint("customer.created", secret=SECRET)
    body = stripe_event(CUSTOMER_CREATED, "evt_bad_email", email="not-an-email")
    shown = outcome(harness, harness.webhook(endpoint, body, SECRET))
    assert shown["status"] == FAILED
    assert [c["status_code"] for c in shown["loops_calls"]] == [400]
    assert shown["reason"] == "Loops answered 400: Invalid email address: 'not-an-email'."
    assert shown["attempts"] == 1  # never retried: the same request would fail the same way


CLERK_SECRET = "whsec_ZGVsaXZlcnlDbGVya1NlY3JldDAxMjM0"


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        (
            "stripe",  # its id is in the body, which no longer reads as a Stripe event
            "the stored event cannot be read, so nothing can be sent to Loops: The Stripe "
            "event has no valid id: its id must be 1 to 255 printable ASCII characters",
        ),
        (
            "clerk",  # its id came in a header: the Loops event's Idempotency-Key
            "Loops did not answer: the request could not be sent (UnicodeEncodeError): a "
            "header of the request holds a character an HTTP header cannot carry",
        ),
    ],
)
def test_a_stored_event_id_loops_cannot_take_fails_once_with_the_reason(
    harness, caplog, provider: str, reason: str
):
    """As an older version, which did not refuse such ids, may have stored it."""
    event_id = "evt_é中"
    if provider == "stripe":
        endpoint = harness.endpoint("invoice.paid", secret=SECRET, loops_event="paid")
        payload = stripe_event(INVOICE_PAID, event_id)
    else:
        endpoint = harness.endpoint(
            "user.created", provider="clerk", secret=CLERK_SECRET, loops_event="signedUp"
        )
        payload, _ = providers.get("clerk").sample("user.created", "jo@example.com", CLERK_SECRET)
    stored = stored_delivery(harness.engine, endpoint, event_id=event_id, payload=payload)
    (failed,) = harness.settled(1)
    assert (failed["id"], failed["status"], failed["attempts"]) == (stored, FAILED, 1)
    assert failed["reason"].startswith(reason), failed["reason"]
    assert harness.loops_calls("/events/send") == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_short_outage_is_retried_until_delivered(harness):
    endpoint = harness.endpoint("invoice.paid", secret=SECRET, loops_event="successfulPayment")
    harness.fault(status=503, count=2)
    shown = outcome(harness, harness.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET))
    assert shown["status"] == DELIVERED
    assert [c["status_code"] for c in shown["loops_calls"]] == [503, 503, 200, 200]
    assert shown["attempts"] == 3
    assert len(harness.loops_get("events")) == 1


def test_an_unreachable_loops_keeps_the_delivery_queued_with_the_reason(tmp_path):
    # Nothing listens on port 9 of this machine: every call fails to connect. The worker is
    # the real one with its real HTTP transport, run on the harness's loop.
    with Harness(tmp_path, worker=False, BRIDGE_LOOPS_API_URL="http://127.0.0.1:9/api/v1") as h:
        worker = Worker(h.engine, h.settings, intervals=FAST, poll_seconds=0.02)
        running = h.loop.create_task(worker.run())
        try:
            endpoint = h.endpoint("invoice.paid", secret=SECRET)
            answer = h.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET).json()
            h.until(lambda: h.deliveries(id=answer["id"])[0]["attempts"] >= 2, what="two tries")
        finally:
            worker.stop()
            h.run(running)
        shown = h.cli("deliveries", "show", str(answer["id"]), "--json")
    assert shown["status"] == QUEUED
    assert "could not reach Loops" in shown["reason"]
    assert "next try at" in shown["reason"]
    assert [c["status_code"] for c in shown["loops_calls"]] == [None] * len(shown["loops_calls"])


def test_a_delivery_retried_past_its_maximum_age_is_dead(tmp_path):
    hours = 0.5 / 3600
    with Harness(tmp_path, BRIDGE_MAX_AGE_HOURS=str(hours)) as h:
        endpoint = h.endpoint("invoice.paid", secret=SECRET)
        h.fault(status=502)
        shown = outcome(h, h.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET))
        assert shown["status"] == DEAD
        assert f"tries stop {hours:g} hours after it was queued" in shown["reason"]
        assert "502" in shown["reason"]
        (dead,) = h.cli("deliveries", "list", "--status", "dead", "--json")
        assert dead["id"] == shown["id"]


# -- the account's state: outages, refused keys, 429s ------------------------------------------


def test_an_outage_holds_the_account_and_a_probe_resumes_every_delivery(tmp_path):
    # Each delivery's own backoff is a minute or more here: only the account's probe can
    # bring them back within the test.
    probes = accounts.Intervals(key_probe=30.0, outage_probe_max=0.3)
    with Harness(tmp_path, intervals=probes, BRIDGE_RETRY_BASE_SECONDS="60") as h:
        endpoint = h.endpoint("customer.created", secret=SECRET)
        h.fault(status=503)
        first = h.webhook(endpoint, fixture_bytes(CUSTOMER_CREATED), SECRET).json()
        h.until(lambda: h.deliveries(id=first["id"])[0]["reason"], what="the first 503")
        h.webhooks(endpoint, customers(5), SECRET)
        h.until(lambda: len(h.loops_calls()) >= 4, what="the account to be probed")

        met = h.deliveries()
        assert {d["status"] for d in met} == {QUEUED}
        tried = [d["reason"] for d in met if d["reason"]]
        assert tried and all("503" in r and "next try at" in r for r in tried)
        # The account is held: Loops gets one probe at a time, a probe interval apart, not
        # the five deliveries that came in meanwhile (due at once) at the pace of 10/s.
        assert min(gaps(h.loops_calls())) >= 0.8 * probes.outage_probe_max

        h.clear_faults()
        assert {d["status"] for d in h.settled(6)} == {DELIVERED}
        assert len(h.loops_get("contacts")) == 6


def test_a_refused_key_pauses_the_account_until_loops_takes_it_again(tmp_path, caplog):
    probes = accounts.Intervals(key_probe=0.3, outage_probe_max=0.2)
    with Harness(tmp_path, intervals=probes) as h:
        endpoint = h.endpoint("customer.created", secret=SECRET)
        h.fault(status=401)
        first = h.webhook(endpoint, fixture_bytes(CUSTOMER_CREATED), SECRET).json()
        h.until(lambda: h.deliveries(id=first["id"])[0]["reason"], what="the first 401")
        h.webhooks(endpoint, customers(3), SECRET)
        h.until(lambda: len(h.loops_calls()) >= 3, what="the key to be probed")

        paused = h.deliveries()
        assert {d["status"] for d in paused} == {QUEUED}  # paused, not failed
        tried = [d["reason"] for d in paused if d["reason"]]
        assert all(
            r.startswith("paused: Loops refused the API key of account 'acme'") for r in tried
        )
        assert "resumes by itself" in tried[0]
        assert "or with `loops-bridge accounts set acme --api-key -`;" in tried[0]
        # One probe of the key at a time, a key interval apart.
        assert min(gaps(h.loops_calls())) >= probes.key_probe * 0.9
        assert "paused: Loops refused the API key" in caplog.text  # logged, without the key
        assert ACME_KEY not in caplog.text

        h.clear_faults()
        assert {d["status"] for d in h.settled(4)} == {DELIVERED}
        assert len(h.loops_get("contacts")) == 4


def test_a_replaced_key_resumes_the_account_at_once(tmp_path):
    # The key is probed only every minute here: the new key, not a probe, must resume it.
    probes = accounts.Intervals(key_probe=60.0, outage_probe_max=0.2)
    with Harness(tmp_path, intervals=probes, sandbox_keys=["loops_key_good_9999"]) as h:
        h.account("acme", "loops_key_revoked_0001")
        endpoint = h.endpoint("customer.created", secret=SECRET)
        h.webhooks(endpoint, customers(3), SECRET)
        h.until(lambda: any(d["reason"] for d in h.deliveries()), what="the key to be refused")
        assert {d["status"] for d in h.deliveries()} == {QUEUED}

        changed = h.cli(
            "accounts", "set", "acme", "--api-key", "loops_key_good_9999", "--no-check", "--json"
        )
        assert changed["deliveries_resumed"] == 3
        assert {d["status"] for d in h.settled(3)} == {DELIVERED}
        taken = [c for c in h.loops_calls() if c["status"] == 200]
        assert sorted(c["body"]["email"] for c in taken) == [
            "c0@example.com",
            "c1@example.com",
            "c2@example.com",
        ]
        assert {c["key"] for c in taken} == {"…9999"}


def test_a_storm_of_429s_holds_that_account_and_never_another(harness):
    acme = harness.endpoint("customer.created", secret=SECRET)
    harness.account("beta", "loops_key_beta_5678")
    beta = harness.endpoint("customer.created", account="beta", secret=SECRET, name="Beta")
    harness.fault(status=429, key=ACME_KEY)
    harness.webhooks(acme, customers(10, "a"), SECRET)
    harness.until(lambda: harness.loops_calls(), what="acme to be refused")
    harness.webhooks(beta, customers(12, "b"), SECRET)
    harness.until(
        lambda: len(harness.loops_get("contacts", key="…5678")) == 12, what="beta's deliveries"
    )

    calls = harness.loops_calls()
    beta_calls = [c for c in calls if c["key"] == "…5678"]
    assert {c["status"] for c in beta_calls} == {200}
    assert busiest_second(beta_calls) <= 10
    acme_calls = [c for c in calls if c["key"] == "…1234"]
    assert {c["status"] for c in acme_calls} == {429}
    # Each 429 holds the whole account for the wait (1 s when Loops names none): acme is
    # not called at its pace of 10/s meanwhile.
    assert busiest_second(acme_calls) <= 5
    waiting = harness.deliveries(endpoint_id=acme)
    assert {d["status"] for d in waiting} == {QUEUED}  # held back, not failed

    harness.clear_faults()
    harness.until(
        lambda: len(harness.loops_get("contacts", key="…1234")) == 10,
        what="acme's deliveries once Loops takes them",
    )
    assert {d["status"] for d in harness.settled(22)} == {DELIVERED}


def test_a_429_is_retried_and_each_contact_arrives_once(harness):
    endpoint = harness.endpoint("customer.created", secret=SECRET)
    harness.fault(status=429, count=1)
    harness.webhooks(endpoint, customers(6), SECRET)
    assert {d["status"] for d in harness.settled(6)} == {DELIVERED}
    statuses = [c["status"] for c in harness.loops_calls()]
    assert statuses.count(429) == 1 and statuses.count(200) == 6
    assert sorted(c["email"] for c in harness.loops_get("contacts")) == sorted(
        f"c{i}@example.com" for i in range(6)
    )


# -- the pace ---------------------------------------------------------------------------------


def test_a_backlog_never_puts_more_than_the_limit_in_any_second(tmp_path):
    # Two events for each contact: were two deliveries of one contact ever run at once,
    # both would create it, and Loops would answer one of them 409.
    limit = 20
    with Harness(tmp_path, rate_limit=limit, BRIDGE_LOOPS_RATE_LIMIT=str(limit)) as h:
        endpoint = h.endpoint(
            "customer.created,customer.updated", secret=SECRET, loops_event="stripeCustomer"
        )
        bodies = customers(15) + [
            stripe_event(CUSTOMER_UPDATED, f"evt_u{i}", email=f"c{i}@example.com")
            for i in range(15)
        ]
        answers = h.webhooks(endpoint, bodies, SECRET)
        assert {a["status"] for a in answers} == {"queued"}
        assert {d["status"] for d in h.settled(30)} == {DELIVERED}

        calls = h.loops_calls()
        assert {c["status"] for c in calls} == {200}  # no 429, no 409
        assert len(calls) == 15 + 30  # each contact created once, each event sent once
        assert busiest_second(calls) <= limit
        events = h.loops_get("events")
        assert len({e["idempotencyKey"] for e in events}) == len(events) == 30
        assert len(h.loops_get("contacts")) == 15


def test_the_pace_follows_the_limit_loops_reports(tmp_path):
    # The bridge assumes 10/s; this Loops account only has 4.
    with Harness(tmp_path, rate_limit=4) as h:
        endpoint = h.endpoint("customer.created", secret=SECRET)
        h.webhooks(endpoint, customers(10), SECRET)
        assert {d["status"] for d in h.settled(10)} == {DELIVERED}
        calls = h.loops_calls()
        first = min(c["at"] for c in calls)
        later = [c for c in calls if c["at"] > first + 2]  # once Loops has said its limit
        assert later and {c["status"] for c in later} == {200}
        assert busiest_second(later) <= 4
        assert len(h.loops_get("contacts")) == 10


# -- shutdown ---------------------------------------------------------------------------------


def test_stopping_interrupts_calls_past_the_grace_and_gives_them_back(tmp_path):
    with Harness(tmp_path) as h:  # the harness's worker waits 1 s for calls in flight
        endpoint = h.endpoint("customer.created", secret=SECRET)
        h.fault(delay=60)  # Loops hangs
        h.webhooks(endpoint, customers(3), SECRET)
        h.until(lambda: h.loops_calls(), what="a call to be in flight")
    # The harness has stopped the app, as SIGTERM does.
    engine = db.connect(f"sqlite:///{tmp_path / 'bridge.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Delivery.status, Delivery.reason, Delivery.claimed_by)).all()
    engine.dispose()
    assert {(status, claimed) for status, _, claimed in rows} == {(QUEUED, None)}
    interrupted = [r for _, r, _ in rows if r and r.startswith("interrupted: the worker stopped")]
    assert interrupted

    with Harness(tmp_path) as h:  # started again: what was given back is delivered
        assert {d["status"] for d in h.settled(3)} == {DELIVERED}
        assert len(h.loops_get("contacts")) == 3


# -- the retry schedule and the idempotency key (units) ---------------------------------------


def test_backoff_doubles_from_the_base_within_20_percent():
    for attempt in range(1, 11):  # 5 s, 10 s, ... 2560 s
        expected = 5.0 * 2 ** (attempt - 1)
        waits = [backoff(attempt, 5.0) for _ in range(200)]
        assert all(0.8 * expected <= w <= 1.2 * expected for w in waits), (attempt, waits)
        # Jittered, so that deliveries failed together do not retry together.
        assert max(waits) - min(waits) > 0.2 * expected


def test_backoff_is_capped_at_one_hour():
    assert LONGEST_WAIT == 3600
    # A delivery that is an account's only probe through a long outage is tried every 20 s,
    # so it passes 1,024 tries in under 6 hours.
    for attempt in (11, 12, 40, 1025, 100_000):
        waits = [backoff(attempt, 5.0) for _ in range(200)]
        assert all(0.8 * 3600 <= w <= 1.2 * 3600 for w in waits), attempt


def test_idempotency_key_is_stable_per_endpoint_and_event_and_within_100_characters():
    endpoint = "Xb3_" + "k" * 18  # the shape of a real endpoint id
    key = idempotency_key(endpoint, "evt_1PBXo9RxqlZt79sDnw7dd5cs")
    assert key == idempotency_key(endpoint, "evt_1PBXo9RxqlZt79sDnw7dd5cs")
    assert key != idempotency_key(endpoint, "evt_1PBXo9RxqlZt79sDnw7dd5ct")
    assert key != idempotency_key("other_endpoint_id_0000", "evt_1PBXo9RxqlZt79sDnw7dd5cs")
    long_ids = [("e" * 60, f"evt_{'x' * 60}{i}") for i in range(3)]
    long_keys = [idempotency_key(*ids) for ids in long_ids]
    assert all(len(k) <= 100 and k.isascii() for k in [key, *long_keys])
    assert len(set(long_keys)) == 3
    assert long_keys == [idempotency_key(*ids) for ids in long_ids]
