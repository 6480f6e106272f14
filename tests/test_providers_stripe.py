"""The Stripe provider: signatures as Stripe makes them, real Stripe payloads as they arrive.

Fixtures are real Stripe output from tests/fixtures/stripe (provenance in its README);
signatures are made with the standard library in tests.helpers, not with the stripe package
the provider verifies with.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
from starlette.datastructures import Headers

import providers
from providers.stripe import provider
from tests.helpers import (
    Read,
    fixture_bytes,
    fixture_json,
    read_with,
    signed_headers,
    stripe_signature,
)

SECRET = "whsec_test_5f3a9c1e7b2d4a6f8e0c1b3d5f7a9e1c"
OTHER_SECRET = "whsec_test_0000aaaa1111bbbb2222cccc3333dddd"

INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"


def lower(headers: dict[str, str]) -> dict[str, str]:
    """What the provider receives in production: header names are case-insensitive."""
    return {name.lower(): value for name, value in headers.items()}


def rejection(body: bytes, headers: dict[str, str], secrets: list[str]) -> str:
    with pytest.raises(providers.Rejected) as caught:
        provider.verify(body, headers, secrets)
    reason = str(caught.value)
    for secret in secrets:
        assert not secret.strip() or secret not in reason
    return reason


def read(body: bytes) -> Read:
    return read_with(provider, body)


def parse(event: dict) -> Read:
    return read(json.dumps(event).encode())


def assert_loops_properties(properties: dict) -> None:
    for key, value in properties.items():
        assert isinstance(value, str | int | float | bool), key
        assert not isinstance(value, str) or len(value) + 2 <= 500, key


def envelope(event_type: str, obj: dict) -> dict:
    # Built inline: an event envelope as Stripe sends it, around a given object.
    return {
        "id": "evt_1TESTenvelope000000000001",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": 1764248400,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def invoice(**fields) -> dict:
    """The captured invoice.paid object with some fields changed."""
    obj = copy.deepcopy(fixture_json(INVOICE_PAID)["data"]["object"])
    obj.update(fields)
    return obj


# --- the provider as the core sees it ---


def test_registered_under_its_name():
    stripe = providers.get("stripe")
    assert stripe is provider
    assert (stripe.name, stripe.label, stripe.contact_source) == (
        "stripe",
        "Stripe",
        "Stripe webhook",
    )
    assert stripe.event_types[:5] == (
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    )
    assert len(stripe.event_types) == 14
    assert set(stripe.needs_api_key) == {
        t for t in stripe.event_types if t.startswith("customer.subscription.")
    }


def test_a_deleted_customer_is_a_deletion_by_email_and_nothing_else_is():
    """customer.deleted carries the customer as it was: its email finds the Loops contact."""
    customer = fixture_json("captured-test-mode/customer.created.data.json")["object"]
    deleted = provider.parse(json.dumps(envelope("customer.deleted", customer)).encode(), {})
    assert (deleted.type, deleted.deletion, deleted.email) == (
        "customer.deleted",
        True,
        "test12@email.com",
    )
    assert deleted.user_id is None  # Stripe has no user id: Loops finds the contact by email
    updated = provider.parse(json.dumps(envelope("customer.updated", customer)).encode(), {})
    assert not updated.deletion


def test_the_rejected_requests_log_shows_only_the_scheme_of_a_stripe_signature():
    shown = provider.redact("Stripe-Signature", "t=1700000000,v1=abcdef0123,v0=99887766")
    assert shown == "t=1700000000,v1=…,v0=…"
    assert provider.redact("content-type", "application/json") is None
    assert provider.new_secret() is None  # Stripe makes the signing secret


# --- verify ---


def test_real_event_signed_by_stripe_is_accepted():
    body = fixture_bytes(INVOICE_PAID)
    provider.verify(body, lower(signed_headers(body, SECRET)), [SECRET])


def test_starlette_headers_as_in_production():
    body = fixture_bytes(INVOICE_PAID)
    provider.verify(body, Headers(headers=signed_headers(body, SECRET)), [SECRET])


def test_secret_rolling_any_configured_secret_any_v1_entry():
    # While a secret is rolled Stripe sends one v1 per active secret, and the bridge may hold
    # the old and the new secret. Only the second configured secret matches the second v1.
    body = fixture_bytes(INVOICE_PAID)
    t = int(time.time())
    unknown = stripe_signature(body, "whsec_retired_secret", t)
    current = stripe_signature(body, SECRET, t)
    header = f"{unknown},v1={current.split('v1=')[1]}"
    assert header.count("v1=") == 2
    provider.verify(body, {"stripe-signature": header}, [OTHER_SECRET, SECRET])


def test_wrong_secret_is_refused_with_a_hint_about_modes():
    body = fixture_bytes(INVOICE_PAID)
    reason = rejection(body, lower(signed_headers(body, OTHER_SECRET)), [SECRET])
    assert "matches" in reason
    assert "test-mode and live-mode secrets differ" in reason


def test_tampered_body_is_refused():
    body = fixture_bytes(INVOICE_PAID)
    headers = lower(signed_headers(body, SECRET))
    reason = rejection(body + b" ", headers, [SECRET])
    assert "rewrites the body" in reason


def test_stale_timestamp_is_refused_as_replay():
    body = fixture_bytes(INVOICE_PAID)
    headers = lower(signed_headers(body, SECRET, timestamp=int(time.time()) - 301))
    reason = rejection(body, headers, [SECRET])
    assert "300 seconds" in reason
    assert "clock" in reason


def test_timestamp_within_tolerance_is_accepted():
    body = fixture_bytes(INVOICE_PAID)
    headers = lower(signed_headers(body, SECRET, timestamp=int(time.time()) - 240))
    provider.verify(body, headers, [SECRET])


def test_missing_header_is_refused():
    body = fixture_bytes(INVOICE_PAID)
    reason = rejection(body, {"content-type": "application/json"}, [SECRET])
    assert "no Stripe-Signature header" in reason


def test_garbage_header_is_refused_as_malformed():
    body = fixture_bytes(INVOICE_PAID)
    reason = rejection(body, {"stripe-signature": "garbage"}, [SECRET])
    assert "malformed" in reason


def test_v0_only_header_is_refused():
    # Stripe adds a fake v0 to test-mode events; it must never count as a signature.
    body = fixture_bytes(INVOICE_PAID)
    v0_header = stripe_signature(body, SECRET).replace("v1=", "v0=")
    reason = rejection(body, {"stripe-signature": v0_header}, [SECRET])
    assert "no v1 signature" in reason


def test_no_secret_configured_is_refused():
    body = fixture_bytes(INVOICE_PAID)
    for secrets in ([], ["", "  "]):
        reason = rejection(body, lower(signed_headers(body, SECRET)), secrets)
        assert "no signing secret yet" in reason


def test_body_that_is_not_utf8_is_refused():
    body = b'{"id": "evt_1", "name": "\xff"}'
    reason = rejection(body, lower(signed_headers(body, SECRET)), [SECRET])
    assert "UTF-8" in reason


def test_timestamp_from_the_future_is_refused():
    # The stripe library refuses only old timestamps; one ahead of the clock is refused too.
    body = fixture_bytes(INVOICE_PAID)
    for ahead in (301, 86_400):
        headers = lower(signed_headers(body, SECRET, timestamp=int(time.time()) + ahead))
        reason = rejection(body, headers, [SECRET])
        assert "300 seconds in the future" in reason
        assert "clock" in reason
    headers = lower(signed_headers(body, SECRET, timestamp=int(time.time()) + 240))
    provider.verify(body, headers, [SECRET])  # a clock a little behind Stripe's is fine


def test_future_check_reads_the_timestamp_as_the_stripe_library_does():
    # The library reads the first t=, split on "=" at most twice: "t=<now>=<future>" is <now>.
    body = fixture_bytes(INVOICE_PAID)
    t = int(time.time())
    v1 = stripe_signature(body, SECRET, t).split(",")[1]
    provider.verify(body, {"stripe-signature": f"t={t}=99999999999,{v1}"}, [SECRET])
    later = stripe_signature(body, SECRET, t + 3600).split(",")[1]
    header = f"t={t + 3600},t={t},{later}"
    assert "in the future" in rejection(body, {"stripe-signature": header}, [SECRET])


def test_more_than_ten_v1_signatures_are_refused():
    body = fixture_bytes(INVOICE_PAID)
    valid = stripe_signature(body, SECRET)
    ten = valid + "".join(f",v1={i:064x}" for i in range(9))
    provider.verify(body, {"stripe-signature": ten}, [SECRET])
    eleven = ten + f",v1={0:064x}"
    reason = rejection(body, {"stripe-signature": eleven}, [SECRET])
    assert "more than 10 v1 signatures" in reason


def test_a_header_of_several_kilobytes_is_refused():
    body = fixture_bytes(INVOICE_PAID)
    header = stripe_signature(body, SECRET) + ",v0=" + "0" * 4000
    assert "longer than 2048 characters" in rejection(body, {"stripe-signature": header}, [SECRET])


def test_a_header_that_is_not_ascii_is_malformed_not_an_exception():
    # hmac.compare_digest raises TypeError on a non-ASCII str, which would answer 503.
    body = fixture_bytes(INVOICE_PAID)
    header = f"t={int(time.time())},v1={'é' * 64}"
    assert "malformed" in rejection(body, {"stripe-signature": header}, [SECRET])


def test_signatures_are_compared_in_constant_time(monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = fixture_bytes(INVOICE_PAID)
    provider.verify(body, lower(signed_headers(body, SECRET)), [SECRET])
    rejection(body, lower(signed_headers(body, OTHER_SECRET)), [SECRET])
    assert len(compared) == 2


# --- parse: real events ---


def test_captured_invoice_paid_pre_basil():
    event = read(fixture_bytes(INVOICE_PAID))
    assert_loops_properties(event.properties)
    assert (event.id, event.type, event.occurred_at) == (
        "evt_1PBXo9RxqlZt79sDnw7dd5cs",
        "invoice.paid",
        1714549347,
    )
    assert event.email == "test12@email.com"
    assert (event.first_name, event.last_name) == ("test12", None)
    assert event.properties == {
        "stripeEventId": "evt_1PBXo9RxqlZt79sDnw7dd5cs",
        "stripeEventType": "invoice.paid",
        "livemode": False,
        "invoiceId": "in_1PBXo5RxqlZt79sDAbGhMpyk",
        "customerId": "cus_Q1b0Yi7UkcAh2A",
        "invoiceNumber": "7CC2D095-0001",
        "hostedInvoiceUrl": fixture_json(INVOICE_PAID)["data"]["object"]["hosted_invoice_url"],
        "invoicePdf": fixture_json(INVOICE_PAID)["data"]["object"]["invoice_pdf"],
        "billingReason": "subscription_create",
        "status": "paid",
        "currency": "USD",
        "amountDue": 700.0,
        "amountDueFormatted": "700.00 USD",
        "amountPaid": 700.0,
        "amountPaidFormatted": "700.00 USD",
        "amountRemaining": 0.0,
        "total": 700.0,
        "subscriptionId": "sub_1PBXo5RxqlZt79sD3kdxoDVi",
        "attemptCount": 1,
        "periodStart": "2024-05-01T07:42:25Z",
        "periodEnd": "2024-05-01T07:42:25Z",
        "description": "7 × New Plan (at $100.00 / month)",
    }  # next_payment_attempt is null: no nextPaymentAttempt


@pytest.mark.parametrize("event_type", ["customer.created", "customer.updated"])
def test_customer_events(event_type):
    event = read(fixture_bytes(f"constructed/{event_type}.event.json"))
    assert event.type == event_type
    assert event.email == "test12@email.com"
    assert (event.first_name, event.last_name) == ("test12", None)
    assert event.properties == {
        "stripeEventId": f"evt_CONSTRUCTED_{event_type.replace('.', '_')}",
        "stripeEventType": event_type,
        "livemode": False,
        "customerId": "cus_Q1b0Yi7UkcAh2A",
    }


def test_basil_invoice_subscription_comes_from_parent():
    # stripe-openapi/invoice.json is the current (2025 basil) shape with placeholder values:
    # no top-level subscription, `parent.subscription_details.subscription` = "subscription".
    obj = fixture_json("stripe-openapi/invoice.json")
    event = parse(envelope("invoice.payment_failed", obj))
    assert event.properties["subscriptionId"] == "subscription"
    assert event.email is None  # customer_email is null in the fixture
    assert event.properties["nextPaymentAttempt"] == "2009-02-13T23:31:30Z"
    assert event.properties["description"] == "My First Invoice Item (created for API docs)"


def test_expanded_subscription_object_gives_its_id():
    event = parse(envelope("invoice.paid", invoice(subscription={"id": "sub_X", "object": "s"})))
    assert event.properties["subscriptionId"] == "sub_X"


def test_old_customer_event_without_email():
    # stripe-java: api_version 2017-08-15, request null, no email key.
    event = read(fixture_bytes("stripe-java/customer_created.event.json"))
    assert event.email is None
    assert (event.first_name, event.last_name) == ("Test", "Platform")
    assert event.properties["customerId"] == "cus_00000000000000"


def test_2012_era_events_parse():
    legacy = fixture_json("stripe-java/legacy-webhook-events.subset.json")
    events = [parse(item) for item in legacy]
    assert [e.type for e in events] == [
        "customer.updated",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
    ]
    assert events[0].email == "zz@habilis.net"
    invoice_event = events[1]
    assert invoice_event.email is None
    assert invoice_event.properties["invoiceId"] == "in_00000000000000"
    # No currency on these invoices: no amount is better than a wrongly scaled one.
    assert "amountDue" not in invoice_event.properties
    assert "description" not in invoice_event.properties  # `lines` has another shape


def test_thin_event_is_refused_with_snapshot_hint():
    with pytest.raises(providers.Rejected, match="snapshot events"):
        read(fixture_bytes("stripe-python/thin-event.v2.core.event.json"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"[]", "not an object"),
        (fixture_bytes("stripe-openapi/invoice.json"), "not an event"),
        (b'{"object": "event", "type": "invoice.paid", "created": 1}', "no valid id"),
        (b'{"object": "event", "id": "evt_1", "type": "x", "created": 1}', "data.object"),
        (
            b'{"object": "event", "id": "evt_1", "type": "x", "created": "2024", "data": {}}',
            "no valid created, data.object",
        ),
    ],
)
def test_bodies_that_are_not_stripe_events_are_refused(body, reason):
    with pytest.raises(providers.Rejected, match=reason):
        provider.parse(body, {})


def test_a_body_that_is_not_an_event_is_refused_naming_only_its_object_type():
    """The reason is logged and listed under Rejected requests, where a body never is."""

    def refusal(body: bytes) -> str:
        with pytest.raises(providers.Rejected) as refused:
            provider.parse(body, {})
        return str(refused.value)

    customer = fixture_json("stripe-docs/customer.object.json")
    said = refusal(json.dumps(customer).encode())
    assert said.startswith("The body is a Stripe customer object, not an event.")
    # An event's data part sent alone, as captured: its "object" is the customer itself.
    data = fixture_bytes("captured-test-mode/customer.created.data.json")
    for body in [data] + [
        json.dumps({"object": kind}).encode()
        for kind in (customer, "{'id': 'cus_NffrFeUfNV2Hib'}", "customer\n", "x" * 41, 7)
    ]:
        said = refusal(body)
        assert said.startswith("The body is an object, not an event."), said
        assert "cus_" not in said and "@" not in said and "x" * 41 not in said


def test_repeated_keys_are_refused_wherever_they_are():
    body = fixture_bytes(INVOICE_PAID)
    provider.parse(body, {})
    for old, new in [
        (b'"id": "evt_1PBX', b'"id": "evt_0", "id": "evt_1PBX'),
        (b'"id": "evt_1PBX', b'"id": "evt_0", "\\u0069d": "evt_1PBX'),  # spelled otherwise
        (b'"customer_email"', b'"customer_email": "a@b.c", "customer_email"'),
        (b'"metadata": {}', b'"metadata": {"k": 1, "k": 2}'),
        (b'"metadata": {}', b'"metadata": {"k": 1, "k": "\\u003a"}'),  # a colon, escaped
        (b'"metadata": {}', b'"metadata": {"k\\u003a": 1, "k\\u003a": 1}'),
    ]:
        repeated = body.replace(old, new, 1)
        assert repeated != body
        with pytest.raises(providers.Rejected, match="same key twice"):
            provider.parse(repeated, {})


def test_escaped_colons_without_repeated_keys_are_fine():
    body = fixture_bytes(INVOICE_PAID).replace(
        b'"metadata": {}', b'"metadata": {"a\\u003ab": "\\u003A", "\\\\u003a": "x"}', 1
    )
    assert provider.parse(body, {}).id == "evt_1PBXo9RxqlZt79sDnw7dd5cs"


@pytest.mark.parametrize("depth", [254, 255, 1024, 1025, 100_000])
def test_deep_nesting_is_refused_with_a_reason(depth):
    body = fixture_bytes(INVOICE_PAID).replace(
        b'"metadata": {}', b'"metadata": ' + b"[" * depth + b"]" * depth, 1
    )
    with pytest.raises(providers.Rejected, match="nested more than 254 levels"):
        provider.parse(body, {})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "evt_\u0000"),
        ("id", "evt_" + "x" * 300),
        ("type", "invoice.paid\n"),
        ("created", 18446744073709551615),
        ("created", -1),
    ],
)
def test_values_that_cannot_be_stored_are_refused(field, value):
    # A NUL, a 10 KB id or an integer past 64 bits would fail the insert in PostgreSQL, and
    # with it every webhook of the same batch.
    event = fixture_json(INVOICE_PAID)
    raw = json.dumps(event).replace(json.dumps(event[field]), json.dumps(value), 1)
    with pytest.raises(providers.Rejected, match=f"no valid {field}"):
        provider.parse(raw.encode(), {})


def test_an_email_with_control_characters_is_refused():
    body = fixture_bytes(INVOICE_PAID).replace(b"test12@email.com", b"test12@email.com\\u0000", 1)
    with pytest.raises(providers.Rejected, match="not an email address"):
        provider.parse(body, {})


def test_event_types_not_offered_still_parse():
    plan = read(fixture_bytes("stripe-openapi/event.json"))
    assert (plan.type, plan.email, plan.lookup) == ("plan.created", None, None)
    # A quote names its customer too: without an email, the customer is looked up.
    quote = parse(envelope("quote.created", {"id": "qt_1", "object": "quote", "customer": "cus_1"}))
    assert (quote.email, quote.lookup, quote.properties.get("customerId")) == (None, "cus_1", None)


# --- parse: names and email ---


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Jenny Rosen", "Jenny", "Rosen"),
        ("  Mary Jane  Watson ", "Mary", "Jane  Watson"),
        ("Cher", "Cher", None),
        ("   ", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_name_split_never_yields_empty_strings(name, first, last):
    customer = {"id": "cus_1", "object": "customer", "email": "jenny@example.com", "name": name}
    event = parse(envelope("customer.updated", customer))
    assert (event.first_name, event.last_name) == (first, last)


@pytest.mark.parametrize(
    ("value", "email"),
    [(" Jenny.Rosen@example.com\n", "Jenny.Rosen@example.com"), ("  ", None), (None, None)],
)
def test_email_is_trimmed_and_empty_is_none(value, email):
    assert parse(envelope("invoice.paid", invoice(customer_email=value))).email == email


def checkout_session(**fields) -> dict:
    # Built inline: no real checkout.session event is among the fixtures.
    session = {
        "id": "cs_test_a1",
        "object": "checkout.session",
        "amount_total": 4999,
        "currency": "eur",
        "customer": "cus_1",
        "customer_details": {"email": "jenny@example.com", "name": "Jenny Rosen"},
        "customer_email": "typed@example.com",
        "mode": "subscription",
        "payment_status": "paid",
        "subscription": "sub_1",
    }
    session.update(fields)
    return session


def test_checkout_session_completed():
    event = parse(envelope("checkout.session.completed", checkout_session()))
    assert event.email == "jenny@example.com"  # customer_details wins over customer_email
    assert (event.first_name, event.last_name) == ("Jenny", "Rosen")
    assert event.properties == {
        "stripeEventId": "evt_1TESTenvelope000000000001",
        "stripeEventType": "checkout.session.completed",
        "livemode": False,
        "checkoutSessionId": "cs_test_a1",
        "customerId": "cus_1",
        "mode": "subscription",
        "paymentStatus": "paid",
        "currency": "EUR",
        "amountTotal": 49.99,
        "amountTotalFormatted": "49.99 EUR",
        "subscriptionId": "sub_1",
    }


def test_checkout_session_falls_back_to_customer_email():
    session = checkout_session(customer_details={"email": None, "name": None})
    event = parse(envelope("checkout.session.async_payment_failed", session))
    assert event.email == "typed@example.com"
    assert (event.first_name, event.last_name) == (None, None)


# --- money and Loops limits ---


def test_zero_decimal_currency_jpy():
    obj = invoice(currency="jpy", amount_paid=500, amount_due=500, total=500)
    properties = parse(envelope("invoice.paid", obj)).properties
    assert properties["amountPaid"] == 500
    assert type(properties["amountPaid"]) is int
    assert properties["amountPaidFormatted"] == "500 JPY"
    assert properties["currency"] == "JPY"


def test_three_decimal_currency_kwd():
    obj = invoice(currency="kwd", amount_paid=1234, amount_due=1005)
    properties = parse(envelope("invoice.paid", obj)).properties
    assert properties["amountPaid"] == 1.234
    assert properties["amountPaidFormatted"] == "1.234 KWD"
    assert properties["amountDueFormatted"] == "1.005 KWD"


def test_strings_are_cut_to_loops_500_character_limit():
    obj = invoice(number="N" * 600)
    obj["lines"]["data"][0]["description"] = "é" * 501
    properties = parse(envelope("invoice.paid", obj)).properties
    assert properties["invoiceNumber"] == "N" * 498  # 500 with the quotes Loops counts
    assert properties["description"] == "é" * 498


# --- sample ---


@pytest.mark.parametrize("event_type", provider.event_types)
def test_sample_round_trip(event_type):
    body, headers = provider.sample(event_type, "jenny.rosen@example.com", SECRET)
    provider.verify(body, Headers(headers=headers), [SECRET])
    # Signed exactly as Stripe signs: the stdlib signer agrees with the header.
    t = int(headers["Stripe-Signature"].split(",")[0].removeprefix("t="))
    assert headers["Stripe-Signature"] == stripe_signature(body, SECRET, t)
    event = read(body)
    assert (event.type, event.email) == (event_type, "jenny.rosen@example.com")
    assert (event.first_name, event.last_name) == (None, None)  # it never renames a contact
    assert event.id.startswith("evt_")
    assert abs(event.occurred_at - time.time()) < 60
    assert event.properties["livemode"] is False
    assert json.loads(body)["api_version"] >= "2025-03-31.basil"


def test_sample_invoice_is_a_2000_usd_invoice_with_links():
    body, _ = provider.sample("invoice.paid", "jenny.rosen@example.com", SECRET)
    properties = read(body).properties
    assert properties["amountPaidFormatted"] == "20.00 USD"
    assert properties["hostedInvoiceUrl"].startswith("https://invoice.stripe.com/")
    assert properties["invoiceNumber"]
    assert properties["subscriptionId"].startswith("sub_")


def test_samples_have_fresh_event_ids():
    first, _ = provider.sample("customer.created", "a@example.com", SECRET)
    second, _ = provider.sample("customer.created", "a@example.com", SECRET)
    assert provider.parse(first, {}).id != provider.parse(second, {}).id


def test_sample_of_unknown_type_is_an_error():
    with pytest.raises(ValueError, match="no sample"):
        provider.sample("quote.created", "a@example.com", SECRET)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("", "No signing secret was given: paste the endpoint's whsec_… secret."),
        ("whsec_x", "That signing secret is 7 characters long, too short to be Stripe's"),
        ("sk_test_51abcdefghijklmnopqrstuvwxyz", "That is not a Stripe signing secret, which"),
    ],
)
def test_a_signing_secret_that_cannot_be_stripes_is_refused_saying_why(given, said):
    problem = providers.get("stripe").secret_problem(given)
    assert problem is not None and problem.startswith(said)
    assert problem.endswith(
        "In Stripe: Developers → Webhooks → your endpoint → Signing secret → Reveal."
    )
    assert providers.get("stripe").secret_problem("whsec_" + "a" * 32) is None
