"""The whole path, as Stripe and a user see it: real Stripe payloads, signed as Stripe signs
them, POSTed to ``loops-bridge serve``, delivered to ``loops-bridge sandbox`` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import fixture_bytes, signed_headers
from tests.servers import Bridge, Sandbox, cli, wait_until

SECRET = "whsec_e2eTestSecretAAAAAAAAAAAAAAAA"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
CUSTOMER_UPDATED = "constructed/customer.updated.event.json"


def make_endpoint(
    env: dict, *, events: str = "customer.created,invoice.paid", **options: str
) -> str:
    if not cli(env, "accounts", "list", "--json"):
        cli(env, "accounts", "add", "--name", "acme", "--api-key", "loops_key_acme_1234")
    args = ["--account", options.pop("account", "acme"), "--events", events]
    for flag, value in options.items():
        args += [f"--{flag.replace('_', '-')}", value]
    created = cli(env, "endpoints", "create", "--name", "Stripe test", *args, "--json")
    return created["id"]


def deliver(bridge: Bridge, endpoint_id: str, body: bytes, secret: str = SECRET) -> dict:
    response = bridge.post(endpoint_id, body, signed_headers(body, secret))
    assert response.status_code == 200, response.text
    return response.json()


def delivery(env: dict, delivery_id: int, until: str | None = None) -> dict:
    def status() -> dict | None:
        shown = cli(env, "deliveries", "show", str(delivery_id), "--json")
        return shown if until is None or shown["status"] == until else None

    return wait_until(status, what=f"delivery {delivery_id} to be {until}")


def with_email(relative: str, email: str, event_id: str) -> bytes:
    event = json.loads(fixture_bytes(relative))
    event["id"] = event_id
    event["data"]["object"]["email"] = email
    return json.dumps(event).encode()


def test_invoice_paid_creates_contact_then_sends_event(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(
        env, user_group="customers", loops_event="successfulPayment", signing_secret=SECRET
    )
    answer = deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))
    assert answer["status"] == "queued" and isinstance(answer["id"], int)

    shown = delivery(env, answer["id"], until="delivered")
    assert [c["path"] for c in shown["loops_calls"]] == ["/contacts/create", "/events/send"]
    assert all(c["status_code"] == 200 for c in shown["loops_calls"])

    (contact,) = sandbox.get("contacts")
    assert contact["email"] == "test12@email.com"
    assert contact["source"] == "Stripe webhook"
    assert contact["userGroup"] == "customers"
    assert contact["firstName"] == "test12"
    (event,) = sandbox.get("events")
    assert event["eventName"] == "successfulPayment"
    assert event["eventProperties"]["amountPaid"] == 700
    assert event["eventProperties"]["invoiceNumber"] == "7CC2D095-0001"
    assert event["idempotencyKey"] and len(event["idempotencyKey"]) <= 100


def test_stripe_retry_is_a_duplicate_and_reaches_loops_once(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, loops_event="successfulPayment", signing_secret=SECRET)
    body = fixture_bytes(INVOICE_PAID)
    first = deliver(bridge, endpoint, body)
    delivery(env, first["id"], until="delivered")
    # Stripe retries with a fresh timestamp and signature.
    again = deliver(bridge, endpoint, body)
    assert again == {
        "status": "duplicate",
        "id": first["id"],
        "reason": "this endpoint already received this event",
    }
    assert len(sandbox.get("events")) == 1
    assert len(cli(env, "deliveries", "list", "--json")) == 1


def test_existing_loops_contact_keeps_source_and_group(env, sandbox: Sandbox, bridge: Bridge):
    key = "loops_key_acme_1234"
    httpx.post(
        f"{sandbox.api_url}/contacts/create",
        json={"email": "test12@email.com", "userGroup": "vip"},
        headers={"Authorization": f"Bearer {key}"},
    ).raise_for_status()
    endpoint = make_endpoint(
        env, user_group="customers", loops_event="successfulPayment", signing_secret=SECRET
    )
    shown = delivery(env, deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))["id"], "delivered")
    assert [c["status_code"] for c in shown["loops_calls"]] == [409, 200]
    (contact,) = sandbox.get("contacts")
    assert (contact["source"], contact["userGroup"]) == ("API", "vip")
    assert contact["firstName"] == "test12"  # the name rode on the event send
    (event,) = sandbox.get("events")
    assert event["contactProperties"] == {"firstName": "test12"}


def test_known_contact_costs_one_call_per_event(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(
        env,
        events="customer.created,customer.updated",
        loops_event="stripeCustomer",
        signing_secret=SECRET,
    )
    created = deliver(bridge, endpoint, fixture_bytes(CUSTOMER_CREATED))
    delivery(env, created["id"], until="delivered")
    updated = deliver(bridge, endpoint, fixture_bytes(CUSTOMER_UPDATED))
    shown = delivery(env, updated["id"], until="delivered")
    assert [c["path"] for c in shown["loops_calls"]] == ["/events/send"]


def test_contacts_only_endpoint_updates_names_of_known_contact(env, sandbox, bridge):
    endpoint = make_endpoint(env, events="customer.created,customer.updated", signing_secret=SECRET)
    delivery(env, deliver(bridge, endpoint, fixture_bytes(CUSTOMER_CREATED))["id"], "delivered")
    shown = delivery(
        env, deliver(bridge, endpoint, fixture_bytes(CUSTOMER_UPDATED))["id"], "delivered"
    )
    (call,) = shown["loops_calls"]
    assert (call["method"], call["path"]) == ("PUT", "/contacts/update")
    assert "source" not in json.loads(call["request"])
    assert sandbox.get("events") == []


def test_event_type_not_enabled_is_ignored_with_reason(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    answer = deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))
    assert answer["status"] == "ignored"
    assert "invoice.paid is not enabled" in answer["reason"]
    (stored,) = cli(env, "deliveries", "list", "--status", "ignored", "--json")
    assert stored["reason"] == answer["reason"]
    assert sandbox.get("requests") == []


def test_event_without_email_is_ignored(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    answer = deliver(bridge, endpoint, fixture_bytes("stripe-java/customer_created.event.json"))
    assert answer["status"] == "ignored"
    assert "no email address" in answer["reason"]


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
def test_bad_signatures_are_rejected_and_nothing_is_stored(env, sandbox, bridge, sign, reason):
    endpoint = make_endpoint(env, signing_secret=SECRET)
    body = fixture_bytes(INVOICE_PAID)
    response = bridge.post(endpoint, body, sign(body))
    assert response.status_code == 400
    assert response.json()["status"] == "rejected"
    assert reason in response.json()["reason"]
    assert SECRET not in response.text
    assert cli(env, "deliveries", "list", "--json") == []


def test_stale_signature_is_rejected(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, signing_secret=SECRET)
    body = fixture_bytes(INVOICE_PAID)
    response = bridge.post(endpoint, body, signed_headers(body, SECRET, int(time.time()) - 301))
    assert response.status_code == 400
    assert "more than 300 seconds old" in response.json()["reason"]


def test_endpoint_waiting_for_its_secret_says_so(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env)
    body = fixture_bytes(INVOICE_PAID)
    response = bridge.post(endpoint, body, signed_headers(body, SECRET))
    assert response.status_code == 400
    assert "no signing secret yet" in response.json()["reason"]
    cli(env, "endpoints", "add-secret", endpoint, SECRET)
    # Endpoint settings are cached for at most two seconds on the hot path.
    wait_until(lambda: bridge.post(endpoint, body, signed_headers(body, SECRET)).status_code == 200)


def test_secret_rolling_accepts_either_secret(env, sandbox: Sandbox, bridge: Bridge):
    new_secret = "whsec_rolledSecretCCCCCCCCCCCCCCCC"
    endpoint = make_endpoint(env, events="customer.created,customer.updated", signing_secret=SECRET)
    cli(env, "endpoints", "add-secret", endpoint, new_secret)
    wait_until(
        lambda: (
            bridge.post(
                endpoint,
                fixture_bytes(CUSTOMER_CREATED),
                signed_headers(fixture_bytes(CUSTOMER_CREATED), new_secret),
            ).status_code
            == 200
        ),
        what="the new secret to be accepted",
    )
    assert deliver(bridge, endpoint, fixture_bytes(CUSTOMER_UPDATED), SECRET)["status"] == "queued"
    cli(env, "endpoints", "remove-secret", endpoint, SECRET)
    body = with_email(CUSTOMER_UPDATED, "late@example.com", "evt_after_removal")
    wait_until(
        lambda: bridge.post(endpoint, body, signed_headers(body, SECRET)).status_code == 400,
        what="the removed secret to be refused",
    )


def test_unknown_endpoint_and_oversize_body(env, sandbox: Sandbox, bridge: Bridge):
    body = fixture_bytes(INVOICE_PAID)
    unknown = bridge.post("nope", body, signed_headers(body, SECRET))
    assert unknown.status_code == 404
    endpoint = make_endpoint(env, signing_secret=SECRET)
    huge = b"{" + b" " * (1024 * 1024) + b"}"
    too_big = bridge.post(endpoint, huge, signed_headers(huge, SECRET))
    assert too_big.status_code == 413
    assert "BRIDGE_MAX_BODY_BYTES" in too_big.json()["reason"]


def test_loops_refusal_fails_with_loops_message(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, signing_secret=SECRET)
    body = with_email(CUSTOMER_CREATED, "not-an-email", "evt_bad_email")
    shown = delivery(env, deliver(bridge, endpoint, body)["id"], until="failed")
    assert shown["loops_calls"][0]["status_code"] == 400
    assert shown["reason"].startswith("Loops answered 400")


def test_loops_outage_is_retried_until_delivered(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, loops_event="successfulPayment", signing_secret=SECRET)
    sandbox.post("faults", {"status": 503, "count": 2}).raise_for_status()
    shown = delivery(env, deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))["id"], "delivered")
    statuses = [c["status_code"] for c in shown["loops_calls"]]
    assert statuses == [503, 503, 200, 200]
    assert shown["attempts"] == 3
    assert len(sandbox.get("events")) == 1


def test_burst_respects_loops_rate_limit_and_loses_nothing(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    ids = [
        deliver(bridge, endpoint, with_email(CUSTOMER_CREATED, f"c{i}@example.com", f"evt_{i}"))[
            "id"
        ]
        for i in range(35)
    ]
    wait_until(
        lambda: len(cli(env, "deliveries", "list", "--status", "delivered", "--json")) == len(ids),
        timeout=30,
        what="the burst to be delivered",
    )
    calls = sandbox.calls()
    assert len(calls) == 35 and {c["status"] for c in calls} == {200}
    times = sorted(c["at"] for c in calls)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 10
    assert len(sandbox.get("contacts")) == 35


def test_concurrent_posts_with_duplicates_store_each_event_once(env, sandbox, bridge):
    import asyncio

    endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    bodies = [with_email(CUSTOMER_CREATED, f"p{i}@example.com", f"evt_p{i}") for i in range(60)]

    async def post_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=bridge.url) as client:
            posts = [
                client.post(f"/webhooks/{endpoint}", content=b, headers=signed_headers(b, SECRET))
                for b in bodies + bodies[:20]
            ]
            return [r.json() for r in await asyncio.gather(*posts)]

    answers = asyncio.run(post_all())
    statuses = [a["status"] for a in answers]
    assert statuses.count("queued") == 60 and statuses.count("duplicate") == 20
    stored = cli(env, "deliveries", "list", "--limit", "1000", "--json")
    assert sorted(d["id"] for d in stored) == sorted(
        a["id"] for a in answers if a["status"] == "queued"
    )


def writer_process(bridge: Bridge) -> int:
    """The pid of the bridge's writer process (a multiprocessing spawn child)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == bridge.proc.pid and b"spawn_main" in cmdline:
            return int(entry)
    raise AssertionError("the bridge has no writer process")


def test_a_killed_writer_loses_nothing_it_acknowledged(env, sandbox: Sandbox, bridge: Bridge):
    endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
    first = deliver(bridge, endpoint, with_email(CUSTOMER_CREATED, "a@example.com", "evt_a"))
    os.kill(writer_process(bridge), signal.SIGKILL)
    answers = []
    for i in range(5):  # the next batches find the writer gone, and start a new one
        body = with_email(CUSTOMER_CREATED, f"k{i}@example.com", f"evt_k{i}")
        response = bridge.post(endpoint, body, signed_headers(body, SECRET))
        assert response.status_code in (200, 503), response.text  # 503: Stripe retries
        if response.status_code == 503:
            response = bridge.post(endpoint, body, signed_headers(body, SECRET))
        assert response.status_code == 200, response.text
        answers.append(response.json()["id"])
    stored = {d["id"] for d in cli(env, "deliveries", "list", "--json")}
    assert {first["id"], *answers} <= stored
    wait_until(lambda: len(sandbox.get("contacts")) == 6, what="all six contacts in Loops")


def test_loops_rate_limit_answers_are_retried_and_nothing_is_lost(env):
    # A Loops account whose limit is 2 requests/s, below the bridge's pace of 10.
    server = Sandbox(env, "--rate-limit", "2")
    env["BRIDGE_LOOPS_API_URL"] = server.api_url
    bridge = Bridge(env)
    try:
        endpoint = make_endpoint(env, events="customer.created", signing_secret=SECRET)
        for i in range(8):
            body = with_email(CUSTOMER_CREATED, f"r{i}@example.com", f"evt_r{i}")
            deliver(bridge, endpoint, body)
        wait_until(
            lambda: len(cli(env, "deliveries", "list", "--status", "delivered", "--json")) == 8,
            timeout=60,
            what="every delivery to get through the 429s",
        )
        statuses = [c["status"] for c in server.calls()]
        assert 429 in statuses  # the limit was hit, and each contact still arrived once
        assert sorted(c["email"] for c in server.get("contacts")) == sorted(
            f"r{i}@example.com" for i in range(8)
        )
    finally:
        bridge.stop()
        server.stop()


def test_unreachable_loops_keeps_the_delivery_queued_with_the_reason(env):
    # BRIDGE_LOOPS_API_URL points at a closed port here: nothing answers.
    bridge = Bridge(env)
    try:
        endpoint = make_endpoint(env, signing_secret=SECRET)
        answer = deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))

        def tried() -> dict | None:
            shown = cli(env, "deliveries", "show", str(answer["id"]), "--json")
            return shown if shown["attempts"] >= 2 else None

        shown = wait_until(tried, what="two tries against an unreachable Loops")
        assert shown["status"] == "queued"
        assert "could not reach Loops" in shown["reason"]
        assert "next try in" in shown["reason"]
        assert all(c["status_code"] is None for c in shown["loops_calls"])
    finally:
        bridge.stop()
