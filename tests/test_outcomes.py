"""Loops' own reports joined to the bridge's deliveries (bridge/outcomes.py): real deliveries
made by the app and its worker with the Loops sandbox (tests/harness.py), then Loops events
stored as the Loops webhook receiver stores them (a LoopsEvent row, then ``outcomes.link`` in
the same transaction), or posted to that receiver's route signed as Loops signs."""

from __future__ import annotations

import itertools
import json
import math
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook

from bridge import outcomes, registry
from bridge.models import DELIVERED, LoopsCall, LoopsEvent
from tests.harness import Harness, stripe_event
from tests.helpers import svix_headers

SECRET = "whsec_outcomesTestSecretOOOOOOOOOOOO"
CLERK_SECRET = "whsec_bG9vcHMtYnJpZGdlIGUyZSBjbGVyayEh"
LOOPS_SECRET = "whsec_" + "b3V0Y29tZXMgdGVzdCBsb29wcyBzZWNyZXQh"  # base64 of 27 bytes
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
JO = "jo@example.com"
_ids = itertools.count(1)


def invoice_endpoint(h: Harness, account: str = "acme") -> str:
    return h.endpoint(
        "invoice.paid",
        account=account,
        secret=SECRET,
        loops_event="successfulPayment",
        name=f"Stripe {account}",
    )


def paid(h: Harness, endpoint: str, email: str = JO) -> int:
    """An invoice.paid for ``email`` through the webhook route, delivered to the sandbox
    (the contact created, the Loops event sent); its delivery id."""
    body = stripe_event(INVOICE_PAID, f"evt_out{next(_ids)}", customer_email=email)
    return delivered(h, h.webhook(endpoint, body, SECRET).json())


def delivered(h: Harness, accepted: dict) -> int:
    assert accepted["status"] == "queued", accepted
    delivery_id: int = accepted["id"]
    h.until(lambda: h.deliveries(id=delivery_id)[0]["status"] != "queued", what="delivery")
    assert h.deliveries(id=delivery_id)[0]["status"] == DELIVERED
    return delivery_id


def event_sent_at(h: Harness, delivery_id: int) -> float:
    """When the bridge's /events/send call of the delivery started (Loops took it)."""
    with h.engine.connect() as conn:
        started: float = conn.execute(
            sa.select(LoopsCall.started_at).where(
                LoopsCall.delivery_id == delivery_id,
                LoopsCall.path == "/events/send",
                LoopsCall.status_code == 200,
            )
        ).scalar_one()
    return started


def account_id(h: Harness, name: str = "acme") -> int:
    (account,) = [a for a in registry.list_accounts(h.engine) if a.name == name]
    assert account.id is not None
    return account.id


def report(
    h: Harness,
    event_name: str,
    at: float,
    *,
    account: int,
    email: str | None = JO,
    user_id: str | None = None,
    email_id: str | None = None,
    message_id: str | None = None,
    source: tuple[str, str, str] | None = ("loop", "cl_loop_paid", "Payment received"),
    subject: str | None = "Thanks for your payment",
) -> int:
    """A Loops event stored as the receiver stores it: the row, then link() in the same
    transaction. Its id."""
    with Session(h.engine) as session:
        row = LoopsEvent(
            account_id=account,
            webhook_id=f"msg_{uuid.uuid4().hex}",
            event_name=event_name,
            event_time=int(at),
            received_at=time.time(),
            contact_id="cl_contact_1",
            email=email,
            user_id=user_id,
            source_type=source[0] if source else None,
            source_id=source[1] if source else None,
            source_name=source[2] if source else None,
            email_id=email_id,
            email_message_id=message_id,
            subject=subject,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        outcomes.link(session.connection(), row.id)
        session.commit()
        return row.id


def linked(h: Harness, event_id: int) -> int | None:
    with h.engine.connect() as conn:
        return conn.execute(
            sa.select(LoopsEvent.delivery_id).where(LoopsEvent.id == event_id)
        ).scalar_one()


# -- loop emails ------------------------------------------------------------------------------


def test_a_loop_email_and_what_became_of_it_follow_the_delivery(harness):
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint)
    acme, at = account_id(harness), event_sent_at(harness, delivery)

    sent = report(harness, "loop.email.sent", at + 40, account=acme, email_id="em_1")
    delivered_ = report(harness, "email.delivered", at + 41, account=acme, email_id="em_1")
    opened = report(harness, "email.opened", at + 600, account=acme, email_id="em_1")
    unsubscribed = report(harness, "contact.unsubscribed", at + 700, account=acme, source=None)
    assert [linked(harness, e) for e in (sent, delivered_, opened)] == [delivery] * 3
    assert linked(harness, unsubscribed) is None  # the contact's timeline, no delivery's

    shown = outcomes.for_delivery(harness.engine, delivery)
    assert [e["event"] for e in shown] == ["loop.email.sent", "email.delivered", "email.opened"]
    assert shown[0]["time"] == iso_time(int(at + 40))
    assert shown[0]["subject"] == "Thanks for your payment"
    assert shown[0]["source_name"] == "Payment received"
    json.dumps(shown)  # what --json prints


def test_the_window_runs_from_the_event_sent_to_25_hours_after(harness):
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint)
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    assert outcomes.WINDOW == 25 * 3600

    early = report(harness, "loop.email.sent", at - outcomes.CLOCK_SLACK - 2, account=acme)
    late = report(harness, "loop.email.sent", at + outcomes.WINDOW + 2, account=acme)
    assert (linked(harness, early), linked(harness, late)) == (None, None)
    # Loops' eventTime is whole seconds: the email of an event sent at 10:42:07.8 may say 07.
    same_second = report(harness, "loop.email.sent", at, account=acme)
    assert linked(harness, same_second) == delivery

    other = paid(harness, endpoint)
    other_at = event_sent_at(harness, other)
    last_second = report(harness, "loop.email.sent", other_at + outcomes.WINDOW - 1, account=acme)
    assert linked(harness, last_second) == other


def test_each_delivery_takes_one_email_the_latest_delivery_first(harness):
    endpoint = invoice_endpoint(harness)
    first, second = paid(harness, endpoint), paid(harness, endpoint)
    acme, at = account_id(harness), event_sent_at(harness, second)

    emails = [
        report(harness, "loop.email.sent", at + 60 * n, account=acme, email_id=f"em_{n}")
        for n in (1, 2, 3)
    ]
    assert [linked(harness, e) for e in emails] == [second, first, None]
    # A later email of a loop already linked is the contact's, not a delivery's.
    assert len(outcomes.for_delivery(harness.engine, first)) == 1


def test_only_the_same_contact_in_the_same_account(harness):
    acme_endpoint = invoice_endpoint(harness, "acme")
    harness.account("other", "loops_key_other_5678")
    other_endpoint = invoice_endpoint(harness, "other")
    other = paid(harness, other_endpoint)  # the same address, but in another Loops account
    delivery = paid(harness, acme_endpoint, "Jo@Example.com")
    acme, at = account_id(harness), event_sent_at(harness, delivery)

    someone_else = report(harness, "loop.email.sent", at + 5, account=acme, email="al@example.com")
    campaign = report(
        harness, "campaign.email.sent", at + 5, account=acme, source=("campaign", "c1", "News")
    )
    assert (linked(harness, someone_else), linked(harness, campaign)) == (None, None)
    # The address in any case (Loops' is stored lowercased).
    assert linked(harness, report(harness, "loop.email.sent", at + 6, account=acme)) == delivery
    # The other account's email goes to its own delivery, not to acme's later one.
    other_email = report(harness, "loop.email.sent", at + 7, account=account_id(harness, "other"))
    assert linked(harness, other_email) == other


def test_email_events_that_come_before_their_sent_event_are_linked_when_it_comes(harness):
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint)
    acme, at = account_id(harness), event_sent_at(harness, delivery)

    bounced = report(harness, "email.hardBounced", at + 3, account=acme, email_id="em_b")
    other = report(harness, "email.delivered", at + 3, account=acme, email_id="em_other")
    assert (linked(harness, bounced), linked(harness, other)) == (None, None)
    sent = report(harness, "loop.email.sent", at + 2, account=acme, email_id="em_b")
    assert (linked(harness, sent), linked(harness, bounced)) == (delivery, delivery)
    assert linked(harness, other) is None
    shown = [e["event"] for e in outcomes.for_delivery(harness.engine, delivery)]
    assert shown == ["loop.email.sent", "email.hardBounced"]


def test_without_an_email_id_the_message_id_to_the_same_contact_links(harness):
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint)
    acme, at = account_id(harness), event_sent_at(harness, delivery)

    report(harness, "loop.email.sent", at + 2, account=acme, message_id="msg_tpl_1")
    mine = report(harness, "email.delivered", at + 3, account=acme, message_id="msg_tpl_1")
    theirs = report(
        harness, "email.delivered", at + 3, account=acme, message_id="msg_tpl_1", email="al@x.io"
    )
    assert (linked(harness, mine), linked(harness, theirs)) == (delivery, None)


def test_a_contact_known_by_user_id_is_matched_on_it_after_its_email_changed(harness):
    endpoint = harness.endpoint(
        "user.created",
        provider="clerk",
        secret=CLERK_SECRET,
        loops_events={"user.created": "clerkSignUp"},
    )
    body = open_fixture("clerk/user.created.json")
    answer = harness.run(
        harness.client.post(
            f"/webhooks/{endpoint}",
            content=body,
            headers=svix_headers(body, CLERK_SECRET, None, "msg_user_created"),
        )
    )
    delivery = delivered(harness, answer.json())
    (row,) = harness.deliveries(id=delivery)
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    user = "user_29w83sxmDNGwOuEthce5gg56FcC"  # the Clerk fixture's user

    # The user changed their address since: Loops names the contact by the new one.
    sent = report(
        harness, "loop.email.sent", at + 4, account=acme, email="new@example.org", user_id=user
    )
    assert row["email"] == "example@example.org"
    assert linked(harness, sent) == delivery
    stranger = report(
        harness, "loop.email.sent", at + 5, account=acme, email="new@example.org", user_id="u_2"
    )
    assert linked(harness, stranger) is None


def open_fixture(relative: str) -> bytes:
    from tests.helpers import FIXTURES

    return (FIXTURES.parent / relative).read_bytes()


# -- the contact's timeline -------------------------------------------------------------------


def test_the_timeline_holds_deliveries_calls_and_reports_in_order(harness):
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint, "Jo@Example.com")
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    report(harness, "loop.email.sent", at + 1, account=acme, email_id="em_t")
    report(harness, "email.delivered", at + 2, account=acme, email_id="em_t")
    report(harness, "contact.unsubscribed", at + 3, account=acme, source=None, subject=None)

    entries = outcomes.timeline(harness.engine, " JO@example.com ", None)
    assert [(e.kind, e.what) for e in entries] == [
        ("delivery", "invoice.paid"),
        ("call", "POST /contacts/create"),
        ("call", "POST /events/send"),
        ("loops", "loop.email.sent"),
        ("loops", "email.delivered"),
        ("loops", "contact.unsubscribed"),
    ]
    assert entries[2].detail == "successfulPayment"
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert outcomes.timeline(harness.engine, JO, acme + 100) == []
    assert outcomes.timeline(harness.engine, "nobody@example.com") == []


def test_within_one_second_the_timeline_follows_cause_and_effect(harness):
    """Loops' times are whole seconds: an email sent, bounced and its contact unsubscribed
    in the second of the bridge's call read as after the call, in that order."""
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint, "Jo@Example.com")
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    second = math.floor(at)  # before the call's own time, to the fraction
    report(harness, "contact.unsubscribed", second, account=acme, source=None, subject=None)
    report(harness, "email.hardBounced", second, account=acme, email_id="em_b")
    report(harness, "loop.email.sent", second, account=acme, email_id="em_b")

    entries = outcomes.timeline(harness.engine, JO, None)
    assert [(e.kind, e.what) for e in entries][-4:] == [
        ("call", "POST /events/send"),
        ("loops", "loop.email.sent"),
        ("loops", "email.hardBounced"),
        ("loops", "contact.unsubscribed"),
    ]


def test_a_users_timeline_is_found_by_their_user_id_deletion_included(harness):
    """A Clerk user's user.deleted carries no email: by the user id, the timeline holds it
    with the rest, and what Loops reported about the user."""
    endpoint = harness.endpoint(
        "user.created,user.deleted", provider="clerk", secret=CLERK_SECRET, on_delete="delete"
    )
    user = "user_29w83sxmDNGwOuEthce5gg56FcC"  # the Clerk fixtures' user
    for name, msg in (("user.created", "msg_c"), ("user.deleted", "msg_d")):
        body = open_fixture(f"clerk/{name}.json")
        headers = svix_headers(body, CLERK_SECRET, None, msg)
        answer = harness.run(
            harness.client.post(f"/webhooks/{endpoint}", content=body, headers=headers)
        )
        delivered(harness, answer.json())
    acme = account_id(harness)
    report(harness, "contact.deleted", time.time() + 1, account=acme, email=None, user_id=user)

    entries = outcomes.timeline(harness.engine, user, acme)
    assert [(e.kind, e.what) for e in entries if e.kind != "call"] == [
        ("delivery", "user.created"),
        ("delivery", "user.deleted"),
        ("loops", "contact.deleted"),
    ]
    harness.sign_in()
    shown = harness.page(f"/admin/contacts?user_id={user}")
    assert shown["contact-email"]["text"] == user
    deletion = harness.deliveries(event_type="user.deleted")[0]["id"]
    link = harness.page(f"/admin/deliveries/{deletion}")["user-timeline"]
    assert link["href"] == f"/admin/contacts?user_id={user}&account={acme}"


# -- through the real route -------------------------------------------------------------------


def iso_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_events_posted_by_loops_to_the_route_are_linked(harness):
    endpoint = invoice_endpoint(harness)
    delivery = paid(harness, endpoint)
    at = event_sent_at(harness, delivery)
    registry.add_loops_webhook_secret(harness.engine, "acme", LOOPS_SECRET)
    path = urlsplit(registry.loops_webhook_url(harness.engine, harness.settings, "acme")).path
    contact = {"id": "cl_contact_1", "email": JO, "userId": None}
    email = {"id": "em_route", "emailMessageId": "msg_tpl", "subject": "Thanks for your payment"}

    def post(body: dict) -> None:
        raw = json.dumps(body)
        msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(LOOPS_SECRET).sign(msg_id, now, raw),
            "content-type": "application/json",
        }
        answer = harness.run(harness.client.post(path, content=raw, headers=headers))
        assert answer.status_code == 200 and answer.json()["status"] == "stored", answer.text

    common = {"webhookSchemaVersion": "1.0.0", "contactIdentity": contact, "email": email}
    post({"eventName": "email.delivered", "eventTime": int(at) + 2, **common, "sourceType": "loop"})
    post(
        {
            "eventName": "loop.email.sent",
            "eventTime": int(at) + 1,
            **common,
            "sourceType": "loop",
            "loopId": "cl_loop_paid",
            "loopName": "Payment received",
        }
    )
    shown = outcomes.for_delivery(harness.engine, delivery)
    assert [e["event"] for e in shown] == ["loop.email.sent", "email.delivered"]
    assert shown[0]["source_name"] == "Payment received"
    # The CLI says the same: `deliveries show ID --json` has them, oldest first, in ISO 8601.
    cli = harness.cli("deliveries", "show", str(delivery), "--json")["loops_events"]
    assert [(e["event"], e["time"]) for e in cli] == [
        ("loop.email.sent", iso_time(int(at) + 1)),
        ("email.delivered", iso_time(int(at) + 2)),
    ]
    text = harness.cli("deliveries", "show", str(delivery)).stdout
    assert "what Loops reported after it:" in text and "email.delivered" in text


def test_the_timeline_keeps_to_one_account_and_follows_an_email_to_a_new_address(harness):
    harness.account("other", "loops_key_other_5678")
    theirs = paid(harness, invoice_endpoint(harness, "other"))  # the same address, elsewhere
    mine = paid(harness, invoice_endpoint(harness, "acme"))
    acme, at = account_id(harness), event_sent_at(harness, mine)
    sent = report(harness, "loop.email.sent", at + 1, account=acme, email_id="em_moved")
    # Loops names the contact by an address it changed to since: the email id links it.
    moved = report(
        harness,
        "email.delivered",
        at + 2,
        account=acme,
        email="new@example.org",
        email_id="em_moved",
    )
    assert linked(harness, moved) == mine

    entries = outcomes.timeline(harness.engine, JO, acme)
    assert [e.delivery_id for e in entries if e.kind == "delivery"] == [mine]
    assert [e.report.id for e in entries if e.report] == [sent, moved]
    everywhere = outcomes.timeline(harness.engine, JO)
    assert [e.delivery_id for e in everywhere if e.kind == "delivery"] == [theirs, mine]
