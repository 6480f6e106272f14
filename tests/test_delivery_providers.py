"""Clerk, Supabase and Stripe events as they end in Loops (issue 10): the bridge, its worker
and the Loops sandbox in-process (tests/harness.py).

Bodies are the real payloads in tests/fixtures/{clerk,supabase,stripe}, signed as each
platform signs them (tests.helpers: ``svix_headers`` for Clerk, ``signed_headers`` for
Stripe; Supabase sends its ``Loops-Secret`` header). Where a scenario needs another type,
email or id, the test edits the fixture and says so. What Loops ends up with is read from the
sandbox. tests/test_end_to_end.py sends one scenario per provider through ``loops-bridge
serve``; the providers' own parsing is in tests/test_providers_<name>.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.models import DELIVERED, IGNORED
from tests.harness import Harness, stripe_event
from tests.helpers import fixture_bytes, svix_headers

CLERK_SECRET = "whsec_bG9vcHMtYnJpZGdlIGUyZSBjbGVyayEh"
CLERK_OTHER_SECRET = "whsec_5IUwDa9FBtuCMI3Z4ZPIwGRuTUU744zT"
SUPABASE_SECRET = "supabaseDeliveryProvidersSecret-7f3a91c2e4b8"
STRIPE_SECRET = "whsec_deliveryProvidersStripeSecret01"

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLERK_USER = "user_29w83sxmDNGwOuEthce5gg56FcC"  # the docs' user, in all three user.* files
SUPABASE_USER = "d0c6b5a2-3f4e-4b1a-9c8d-7e6f5a4b3c2d"  # the row in all auth.users files
STRIPE_EMAIL = "test12@email.com"  # the customer of the Stripe fixtures below
CUSTOMER_CREATED = "constructed/customer.created.event.json"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CLERK_USER_TYPES = "user.created,user.updated,user.deleted"


def clerk(event_type: str, at: int | None = None) -> bytes:
    """The Clerk fixture of ``event_type``; sent at unix time ``at`` if given."""
    body = (FIXTURES / "clerk" / f"{event_type}.json").read_bytes()
    if at is None:
        return body
    return json.dumps({**json.loads(body), "timestamp": at * 1000}).encode()


def supabase(name: str) -> bytes:
    return (FIXTURES / "supabase" / f"{name}.json").read_bytes()


def post(h: Harness, endpoint: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return h.run(h.client.post(f"/webhooks/{endpoint}", content=body, headers=headers))


def from_clerk(
    h: Harness,
    endpoint: str,
    body: bytes,
    msg_id: str,
    *,
    secret: str = CLERK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    """POST ``body`` as Clerk does: through Svix, with the message id ``msg_id``."""
    return post(h, endpoint, body, svix_headers(body, secret, timestamp, msg_id))


def from_supabase(
    h: Harness, endpoint: str, body: bytes, secret: str | None = SUPABASE_SECRET
) -> httpx.Response:
    """POST ``body`` as a Supabase Database Webhook does, with the Loops-Secret header the
    user added to it (none when ``secret`` is None)."""
    headers = {"Content-type": "application/json"}
    if secret is not None:
        headers["Loops-Secret"] = secret
    return post(h, endpoint, body, headers)


def delivered(h: Harness, answer: httpx.Response, status: str = DELIVERED) -> dict:
    """Run the bridge until the delivery the sender was answered about is done; its row,
    which must have come to ``status``."""
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
    delivery_id = answer.json()["id"]
    (row,) = h.until(
        lambda: [r for r in h.deliveries(id=delivery_id) if r["status"] != "queued"],
        what=f"delivery {delivery_id}",
    )
    assert row["status"] == status, row
    return row


def contacts(h: Harness, **match: Any) -> list[dict]:
    """The sandbox's contacts whose fields equal ``match``."""
    found = h.loops_get("contacts")
    return [c for c in found if all(c.get(k) == v for k, v in match.items())]


def events(h: Harness) -> list[tuple[str | None, str, str]]:
    """(userId, email, eventName) of every Loops event, in order."""
    return [(e["userId"], e["email"], e["eventName"]) for e in h.loops_get("events")]


def calls(h: Harness) -> list[tuple[str, str]]:
    return [(c["method"], c["path"].removeprefix("/api/v1")) for c in h.loops_calls()]


# -- Clerk ------------------------------------------------------------------------------------


def test_a_clerk_user_created_renamed_and_deleted_ends_unsubscribed(harness):
    endpoint = harness.endpoint(
        CLERK_USER_TYPES,
        provider="clerk",
        secret=CLERK_SECRET,
        user_group="app-users",
        loops_events={"user.created": "clerkSignUp"},
        mailing_lists=["cm_news", "cm_product"],
    )

    delivered(harness, from_clerk(harness, endpoint, clerk("user.created"), "msg_created"))
    (contact,) = harness.loops_get("contacts")
    assert contact["userId"] == CLERK_USER
    assert contact["email"] == "example@example.org"
    assert (contact["firstName"], contact["lastName"]) == ("Example", "Example")
    assert contact["source"] == "Clerk webhook"
    assert contact["userGroup"] == "app-users"
    assert contact["mailingLists"] == {"cm_news": True, "cm_product": True}
    assert contact["subscribed"] is True
    assert events(harness) == [(CLERK_USER, "example@example.org", "clerkSignUp")]

    # user.updated.json: a new primary address, added after the old one, and a new name.
    updated = delivered(harness, from_clerk(harness, endpoint, clerk("user.updated"), "msg_upd"))
    assert updated["reason"] == "contact updated"
    (contact,) = harness.loops_get("contacts")  # the same contact, found by its userId
    assert contact["userId"] == CLERK_USER
    assert contact["email"] == "example.renamed@example.com"
    assert (contact["firstName"], contact["lastName"]) == ("Renamed", "Person")
    assert contact["mailingLists"] == {"cm_news": True, "cm_product": True}
    assert len(events(harness)) == 1  # user.updated maps to no Loops event

    deleted = delivered(harness, from_clerk(harness, endpoint, clerk("user.deleted"), "msg_del"))
    assert deleted["reason"] == "contact unsubscribed in Loops"
    (contact,) = harness.loops_get("contacts")
    assert (contact["userId"], contact["subscribed"]) == (CLERK_USER, False)
    assert contact["email"] == "example.renamed@example.com"
    # Lists are set on create only: no later call names them.
    for call in harness.loops_calls()[1:]:
        assert "mailingLists" not in (call["body"] or {}), call


@pytest.fixture(params=["sqlite", "postgresql"])
def either_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The harness on SQLite, then on PostgreSQL: what the bridge keeps of a contact is
    written with each database's own upsert."""
    env = {}
    if request.param == "postgresql":
        env["BRIDGE_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    with Harness(tmp_path, **env) as started:
        yield started


def test_a_clerk_user_deleted_on_an_endpoint_that_deletes_removes_the_contact(either_database):
    harness = either_database
    endpoint = harness.endpoint(
        CLERK_USER_TYPES, provider="clerk", secret=CLERK_SECRET, on_delete="delete"
    )
    delivered(harness, from_clerk(harness, endpoint, clerk("user.created"), "msg_created"))
    assert contacts(harness, userId=CLERK_USER)

    deleted = delivered(harness, from_clerk(harness, endpoint, clerk("user.deleted"), "msg_del"))
    assert deleted["reason"] == "contact deleted in Loops"
    assert harness.loops_get("contacts") == []
    assert calls(harness)[-1] == ("POST", "/contacts/delete")
    assert harness.loops_calls()[-1]["body"] == {"userId": CLERK_USER}

    # Another deletion of a user Loops no longer has is done, not failed.
    again = delivered(harness, from_clerk(harness, endpoint, clerk("user.deleted"), "msg_del2"))
    assert again["reason"] == "nothing to delete in Loops"
    # Events from before the deletion that arrive after it (Svix retrying them) are not
    # sent: each would create the deleted user's contact again, and this one would send
    # its sign-up event again.
    sent_at = {"user.created": "2022-05-31T15:56:31Z", "user.updated": "2022-05-31T16:00:24Z"}
    for late, at in sent_at.items():
        kept_out = from_clerk(harness, endpoint, clerk(late), f"msg_late_{late}")
        assert delivered(harness, kept_out, IGNORED)["reason"] == (
            "not sent: a deletion of 2024-05-28T08:00:00Z took this contact out of Loops, and "
            f"this event, of {at}, is no newer (it arrived late, or was sent again): sending it "
            "would create the contact again"
        )
    assert harness.loops_get("contacts") == []
    assert calls(harness)[-1] == ("POST", "/contacts/delete")  # nothing since
    # A user signing up again after the deletion is a new contact.
    back = from_clerk(harness, endpoint, clerk("user.created", at=1_790_000_000), "msg_back")
    assert delivered(harness, back)["reason"] == "contact created"
    assert contacts(harness, userId=CLERK_USER, source="Clerk webhook")


def test_a_clerk_waitlist_entry_becomes_a_contact_by_email_only(harness):
    endpoint = harness.endpoint(
        "user.created,waitlistEntry.created,waitlistEntry.updated",
        provider="clerk",
        secret=CLERK_SECRET,
        user_group="waitlist",
        loops_events={"waitlistEntry.created": "joinedWaitlist", "user.created": "clerkSignUp"},
        mailing_lists=["cm_launch"],
    )
    delivered(harness, from_clerk(harness, endpoint, clerk("waitlistEntry.created"), "msg_w1"))
    (contact,) = harness.loops_get("contacts")
    assert contact["email"] == "john.doe@example.com"
    assert contact["userId"] is None  # a wle_ id is the entry's, not a user's
    assert contact["source"] == "Clerk webhook"
    assert contact["userGroup"] == "waitlist"
    assert contact["mailingLists"] == {"cm_launch": True}
    (event,) = harness.loops_get("events")
    assert (event["email"], event["eventName"]) == ("john.doe@example.com", "joinedWaitlist")
    assert event["eventProperties"]["waitlistStatus"] == "pending"

    # The entry invited: the same contact, and no Loops event (none mapped for it).
    invited = from_clerk(harness, endpoint, clerk("waitlistEntry.updated"), "msg_w2")
    assert delivered(harness, invited)["email"] == "john.doe@example.com"
    assert len(harness.loops_get("contacts")) == 1
    assert len(harness.loops_get("events")) == 1

    # The invited person signs up (the docs' user.created, edited to their address): still
    # one contact, now with their userId.
    user = json.loads(clerk("user.created"))
    user["data"]["email_addresses"][0]["email_address"] = "john.doe@example.com"
    signed_up = from_clerk(harness, endpoint, json.dumps(user).encode(), "msg_user")
    assert delivered(harness, signed_up)["reason"].startswith("contact already in Loops")
    (contact,) = harness.loops_get("contacts")
    assert (contact["userId"], contact["email"]) == (CLERK_USER, "john.doe@example.com")
    assert contact["userGroup"] == "waitlist"
    assert events(harness)[-1] == (CLERK_USER, "john.doe@example.com", "clerkSignUp")


def test_clerk_requests_get_the_same_clear_answers_as_stripes(harness):
    endpoint = harness.endpoint(CLERK_USER_TYPES, provider="clerk", secret=CLERK_SECRET)
    body = clerk("user.created")

    wrong = from_clerk(harness, endpoint, body, "msg_1", secret=CLERK_OTHER_SECRET)
    assert wrong.status_code == 400 and wrong.json()["status"] == "rejected"
    assert "does not match any of the endpoint's signing secrets" in wrong.json()["reason"]
    assert "Signing Secret" in wrong.json()["reason"]  # where to find the right one

    stale = from_clerk(harness, endpoint, body, "msg_1", timestamp=int(time.time()) - 400)
    assert stale.status_code == 400 and stale.json()["status"] == "rejected"
    assert "more than 300 s old" in stale.json()["reason"]
    assert harness.deliveries() == []  # nothing refused is stored

    first = from_clerk(harness, endpoint, body, "msg_1")
    delivered(harness, first)
    # Svix resends a message with the same svix-id (and signs it again).
    resent = from_clerk(harness, endpoint, body, "msg_1")
    assert resent.status_code == 200
    assert resent.json()["status"] == "duplicate"
    assert resent.json()["id"] == first.json()["id"]

    session = from_clerk(harness, endpoint, clerk("session.created"), "msg_session")
    assert session.status_code == 200
    assert session.json()["status"] == IGNORED
    assert "session.created" in session.json()["reason"]

    # A user who signed up with a phone number only (the docs' user without its address):
    # Loops cannot create a contact without an email.
    phone_only = json.loads(clerk("user.created"))
    phone_only["data"].update(email_addresses=[], primary_email_address_id=None)
    answer = from_clerk(harness, endpoint, json.dumps(phone_only).encode(), "msg_phone")
    assert answer.json()["status"] == IGNORED
    assert "no email address" in answer.json()["reason"]

    harness.settled()
    assert calls(harness) == [("POST", "/contacts/create")]  # the user, once; no session


def test_an_existing_loops_contact_keeps_its_lists_and_gets_the_user_id(harness):
    """The consent rule: lists are chosen for new contacts only, as ``subscribed`` is."""
    created = harness.run(
        harness.loops.post(
            "/api/v1/contacts/create",
            json={"email": "example@example.org", "source": "Signup form",
                  "mailingLists": {"own_list": True}},
            headers={"Authorization": "Bearer loops_key_acme_1234"},
        )
    )  # fmt: skip
    assert created.status_code == 200
    endpoint = harness.endpoint(
        CLERK_USER_TYPES, provider="clerk", secret=CLERK_SECRET, mailing_lists=["cm_news"]
    )
    row = delivered(harness, from_clerk(harness, endpoint, clerk("user.created"), "msg_c"))
    assert row["reason"].startswith("contact already in Loops")
    (contact,) = harness.loops_get("contacts")
    assert contact["mailingLists"] == {"own_list": True}
    assert contact["source"] == "Signup form"
    assert contact["userId"] == CLERK_USER  # from now on found by userId


# -- Supabase ---------------------------------------------------------------------------------


def test_a_supabase_signup_email_change_and_deletion(harness):
    harness.account()
    created = harness.cli(
        "endpoints", "create", "--name", "Supabase", "--account", "acme",
        "--provider", "supabase", "--events", "INSERT,UPDATE,DELETE",
        "--user-group", "members", "--loops-events", "INSERT=signUp,UPDATE=emailChanged",
        "--mailing-lists", "sb_news", "--on-delete", "delete",
        "--signing-secret", SUPABASE_SECRET, "--json",
    )  # fmt: skip
    endpoint = created["id"]

    delivered(harness, from_supabase(harness, endpoint, supabase("INSERT")))
    (contact,) = harness.loops_get("contacts")
    assert contact["userId"] == SUPABASE_USER
    assert contact["email"] == "ada.lovelace@example.com"
    assert (contact["firstName"], contact["lastName"]) == ("Ada", "Lovelace")
    assert contact["source"] == "Supabase webhook"
    assert contact["userGroup"] == "members"
    assert contact["mailingLists"] == {"sb_news": True}

    delivered(harness, from_supabase(harness, endpoint, supabase("UPDATE")))
    (contact,) = harness.loops_get("contacts")  # found by userId, its email changed
    assert (contact["userId"], contact["email"]) == (SUPABASE_USER, "ada.byron@example.com")
    assert events(harness) == [
        (SUPABASE_USER, "ada.lovelace@example.com", "signUp"),
        (SUPABASE_USER, "ada.byron@example.com", "emailChanged"),
    ]
    (changed,) = [e for e in harness.loops_get("events") if e["eventName"] == "emailChanged"]
    assert changed["eventProperties"]["previousEmail"] == "ada.lovelace@example.com"

    row = delivered(harness, from_supabase(harness, endpoint, supabase("DELETE")))
    assert row["reason"] == "contact deleted in Loops"
    assert harness.loops_get("contacts") == []
    assert harness.loops_calls()[-1]["body"] == {"userId": SUPABASE_USER}


def test_supabase_requests_get_the_same_clear_answers_as_stripes(harness):
    endpoint = harness.endpoint("INSERT,UPDATE,DELETE", provider="supabase", secret=SUPABASE_SECRET)
    body = supabase("INSERT")

    wrong = from_supabase(harness, endpoint, body, secret="not-the-secret-" + "x" * 30)
    assert wrong.status_code == 400 and wrong.json()["status"] == "rejected"
    assert "Loops-Secret header does not match" in wrong.json()["reason"]
    missing = from_supabase(harness, endpoint, body, secret=None)
    assert missing.status_code == 400
    assert "no Loops-Secret header" in missing.json()["reason"]
    assert harness.deliveries() == []

    first = from_supabase(harness, endpoint, body)
    delivered(harness, first)
    # No event id: an identical resend is known by its body.
    resent = from_supabase(harness, endpoint, body)
    assert resent.status_code == 200
    assert (resent.json()["status"], resent.json()["id"]) == ("duplicate", first.json()["id"])

    profiles = from_supabase(harness, endpoint, supabase("public.profiles.INSERT"))
    assert profiles.status_code == 200
    assert profiles.json()["status"] == IGNORED
    assert "public.profiles.INSERT" in profiles.json()["reason"]

    harness.settled()
    assert calls(harness) == [("POST", "/contacts/create")]
    assert [c["email"] for c in harness.loops_get("contacts")] == ["ada.lovelace@example.com"]


# -- Stripe -----------------------------------------------------------------------------------


def stripe_retyped(relative: str, event_type: str, event_id: str, **fields: Any) -> bytes:
    """A Stripe fixture as an event of another type (edited: its id and type, and ``fields``
    on its object). Stripe sends ``customer.deleted`` with the customer as it was, and
    ``invoice.payment_failed`` with the invoice as ``invoice.paid`` does: the same object
    under another type."""
    event = json.loads(stripe_event(relative, event_id, created=1714600000, **fields))
    event["type"] = event_type
    return json.dumps(event).encode()


def test_a_stripe_customer_gets_an_event_per_type_and_is_unsubscribed_when_deleted(harness):
    """The README's endpoint: each Stripe type its own Loops event (Loops' own names)."""
    endpoint = harness.endpoint(
        "customer.created,customer.deleted,invoice.paid,invoice.payment_failed",
        secret=STRIPE_SECRET,
        user_group="customers",
        loops_events={
            "customer.created": "newStripeCustomer",
            "invoice.paid": "successfulPayment",
            "invoice.payment_failed": "failedPayment",
        },
        mailing_lists=["st_billing"],
    )
    for body in (
        fixture_bytes(CUSTOMER_CREATED),
        fixture_bytes(INVOICE_PAID),
        stripe_retyped(INVOICE_PAID, "invoice.payment_failed", "evt_failed"),
    ):
        delivered(harness, harness.webhook(endpoint, body, STRIPE_SECRET))

    (contact,) = harness.loops_get("contacts")
    assert contact["email"] == STRIPE_EMAIL
    assert contact["userId"] is None  # Stripe has no user id: the email is the identity
    assert contact["source"] == "Stripe webhook"
    assert contact["userGroup"] == "customers"
    assert contact["mailingLists"] == {"st_billing": True}
    assert events(harness) == [
        (None, STRIPE_EMAIL, "newStripeCustomer"),
        (None, STRIPE_EMAIL, "successfulPayment"),
        (None, STRIPE_EMAIL, "failedPayment"),
    ]

    deleted = stripe_retyped(CUSTOMER_CREATED, "customer.deleted", "evt_deleted")
    row = delivered(harness, harness.webhook(endpoint, deleted, STRIPE_SECRET))
    assert row["reason"] == "contact unsubscribed in Loops"
    (contact,) = harness.loops_get("contacts")
    assert (contact["email"], contact["subscribed"]) == (STRIPE_EMAIL, False)
    assert harness.loops_calls()[-1]["body"] == {"email": STRIPE_EMAIL, "subscribed": False}


def test_on_delete_ignore_leaves_the_contact_and_a_missing_one_is_done(harness):
    ignoring = harness.endpoint(
        "customer.created,customer.deleted", secret=STRIPE_SECRET, on_delete="ignore"
    )
    unsubscribing = harness.endpoint(
        "customer.created,customer.deleted", secret=STRIPE_SECRET, name="other"
    )
    delivered(harness, harness.webhook(ignoring, fixture_bytes(CUSTOMER_CREATED), STRIPE_SECRET))
    deleted = stripe_retyped(CUSTOMER_CREATED, "customer.deleted", "evt_deleted")

    row = delivered(harness, harness.webhook(ignoring, deleted, STRIPE_SECRET))
    assert row["reason"] == "deletion left alone: the endpoint's on-delete is ignore"
    (contact,) = harness.loops_get("contacts")
    assert contact["subscribed"] is True
    before = len(harness.loops_calls())
    assert before == 1  # the create; the deletion made no call

    # A deletion of someone Loops has never had: looked up, nothing created or failed.
    unknown = stripe_retyped(CUSTOMER_CREATED, "customer.deleted", "evt_gone", email="no@x.io")
    row = delivered(harness, harness.webhook(unsubscribing, unknown, STRIPE_SECRET))
    assert row["reason"] == "Loops has no such contact: nothing to unsubscribe"
    assert calls(harness)[before:] == [("GET", "/contacts/find")]
    assert len(harness.loops_get("contacts")) == 1
    # Its customer.created, from before the deletion, arriving after it: the customer is
    # gone, and is not made a subscribed contact now.
    late = stripe_retyped(CUSTOMER_CREATED, "customer.created", "evt_late", email="no@x.io")
    row = delivered(harness, harness.webhook(unsubscribing, late, STRIPE_SECRET), IGNORED)
    assert row["reason"].startswith("not sent: a deletion of ")
    assert len(harness.loops_calls()) == before + 1
    assert len(harness.loops_get("contacts")) == 1


def test_a_late_older_clerk_event_leaves_a_changed_email_and_names_alone(either_database):
    harness = either_database
    endpoint = harness.endpoint(CLERK_USER_TYPES, provider="clerk", secret=CLERK_SECRET)
    # user.updated: the user's primary email and names changed.
    delivered(harness, from_clerk(harness, endpoint, clerk("user.updated"), "msg_updated"))
    renamed = ("example.renamed@example.com", "Renamed", "Person")
    (contact,) = harness.loops_get("contacts")
    assert (contact["email"], contact["firstName"], contact["lastName"]) == renamed
    sent = len(harness.loops_calls())

    # user.created, from before that, arriving after it (Svix retried it): the old address
    # and names are not put back, and there is nothing else to send.
    late = delivered(harness, from_clerk(harness, endpoint, clerk("user.created"), "msg_created"))
    assert late["reason"] == (
        "names left alone: a newer event had set them; email left alone: a newer event had set it"
    )
    assert len(harness.loops_calls()) == sent
    (contact,) = harness.loops_get("contacts")
    assert (contact["email"], contact["firstName"], contact["lastName"]) == renamed

    # A later change of address still reaches the contact.
    newer = json.loads(clerk("user.updated", at=1_790_000_000))
    newer["data"]["email_addresses"][1]["email_address"] = "example.third@example.com"
    body = json.dumps(newer).encode()
    delivered(harness, from_clerk(harness, endpoint, body, "msg_third"))
    (contact,) = harness.loops_get("contacts")
    assert contact["email"] == "example.third@example.com"


def test_an_endpoint_sending_loops_events_also_keeps_a_changed_email(harness):
    """Sent as a Loops event (which updates the contact in Loops), the newer email and
    names are dated too, so the late older event still leaves them alone."""
    endpoint = harness.endpoint(
        CLERK_USER_TYPES, provider="clerk", secret=CLERK_SECRET, loops_event="userChanged"
    )
    delivered(harness, from_clerk(harness, endpoint, clerk("user.created", at=1_700_000_000), "a"))
    delivered(harness, from_clerk(harness, endpoint, clerk("user.updated", at=1_700_000_100), "b"))
    # The first user.created again, resent by Svix under a new message id.
    again = clerk("user.created", at=1_700_000_000)
    late = delivered(harness, from_clerk(harness, endpoint, again, "c"))
    assert late["reason"] == (
        "names left alone: a newer event had set them; email left alone: a newer event had "
        "set it; event userChanged sent"
    )
    (contact,) = harness.loops_get("contacts")
    assert (contact["email"], contact["firstName"]) == ("example.renamed@example.com", "Renamed")
    assert harness.loops_calls()[-1]["body"].keys() == {"userId", "eventName", "eventProperties"}
