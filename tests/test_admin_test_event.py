"""The admin's "Send a test event" against a Loops team that already has contacts: a test
never changes a contact Loops has (names, userId, subscription), and the page says so.

The bridge, its worker and the Loops sandbox run in-process (tests/harness.py); contacts are
put into the sandbox through its Loops API, as another tool of the team would have made them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Harness
from tests.helpers import Page, words

API_KEY = "loops_key_acme_1234"  # the key Harness.account gives "acme"
SECRETS = {
    "stripe": "whsec_testEventSecretAAAAAAAAAAAAAA",
    "clerk": "whsec_dGVzdEV2ZW50Q2xlcmtTZWNyZXQwMTIz",
    "supabase": "testEventSupabaseSecret0123456789abcdef",
}


@pytest.fixture
def bridge(tmp_path: Path):
    with Harness(tmp_path, rate_limit=100) as started:  # the pace is not the point
        started.sign_in()
        started.connect_admin()
        yield started


def loops_contact(bridge: Harness, **contact: str) -> None:
    """A contact in the sandbox's team of API_KEY, made through the Loops API."""
    made = bridge.run(
        bridge.loops.post(
            "/api/v1/contacts/create",
            json=contact,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    )
    assert made.status_code == 200, made.text


def contact(bridge: Harness, email: str) -> dict:
    (found,) = [c for c in bridge.loops_get("contacts") if c["email"] == email]
    return {k: v for k, v in found.items() if k != "key"}


def send_test(bridge: Harness, endpoint: str, event_type: str, email: str):
    return bridge.form(f"/admin/endpoints/{endpoint}/test", event_type=event_type, email=email)


def test_a_test_event_to_a_contact_loops_has_keeps_its_names(bridge: Harness):
    """As in issue 11: Jane Q Doe stayed Jane Q Doe, not Jenny Rosen, the sample's name."""
    types = "customer.created,customer.updated,invoice.paid,checkout.session.completed"
    endpoint = bridge.endpoint(
        types, secret=SECRETS["stripe"], loops_event="testEvent", sync_names=True
    )
    loops_contact(bridge, email="jane.doe@example.com", firstName="Jane", lastName="Q Doe")
    before = contact(bridge, "jane.doe@example.com")

    for event_type in types.split(","):
        sent = send_test(bridge, endpoint, event_type, "jane.doe@example.com")
        assert sent.status_code == 303, sent.text
    delivered = bridge.settled(4)
    assert {d["status"] for d in delivered} == {"delivered"}, delivered

    assert contact(bridge, "jane.doe@example.com") == before  # names and all
    events = bridge.loops_get("events")
    assert [e["eventName"] for e in events] == ["testEvent"] * 4
    assert all(e["contactProperties"] == {} for e in events)

    # A new address gets a new contact, without names.
    assert send_test(bridge, endpoint, "customer.created", "new@example.com").status_code == 303
    bridge.settled(5)
    made = contact(bridge, "new@example.com")
    assert (made["firstName"], made["lastName"]) == (None, None)


def test_the_page_says_what_a_test_changes_and_what_it_never_changes(bridge: Harness):
    endpoint = bridge.endpoint("customer.created,customer.deleted", secret=SECRETS["stripe"])
    said = words(bridge.page(f"/admin/endpoints/{endpoint}/test")["what-it-changes"]["text"])
    assert "What it changes: an address Loops does not have becomes a new contact" in said
    assert "What it never changes: a contact Loops already has keeps its names, its userId" in said
    assert "a deletion, which would unsubscribe it" in said


def test_a_deletion_is_refused_for_a_contact_loops_has(bridge: Harness):
    endpoint = bridge.endpoint("customer.deleted", secret=SECRETS["stripe"])
    loops_contact(bridge, email="jane.doe@example.com", firstName="Jane")

    refused = send_test(bridge, endpoint, "customer.deleted", "jane.doe@example.com")
    assert refused.status_code == 400
    said = words(Page(refused)["email-error"]["text"])
    assert said.startswith(
        "jane.doe@example.com is a contact in Loops: a test customer.deleted would unsubscribe "
        "it (this endpoint's on-delete is unsubscribe)."
    )
    assert bridge.deliveries() == []
    assert contact(bridge, "jane.doe@example.com")["subscribed"] is True

    # An address Loops does not have: the deletion runs, and finds nothing to change.
    assert send_test(bridge, endpoint, "customer.deleted", "nobody@example.com").status_code == 303
    (done,) = bridge.settled(1)
    assert done["reason"] == "Loops has no such contact: nothing to unsubscribe"


@pytest.mark.parametrize("name", ["clerk", "supabase"])
def test_a_test_event_is_about_the_user_id_loops_has(bridge: Harness, name: str):
    created = "user.created" if name == "clerk" else "INSERT"
    endpoint = bridge.endpoint(
        created, provider=name, secret=SECRETS[name], loops_event="signedUp", sync_names=True
    )
    loops_contact(bridge, email="ada@example.com", firstName="Ada", userId="their-own-id-42")
    before = contact(bridge, "ada@example.com")

    assert send_test(bridge, endpoint, created, "ada@example.com").status_code == 303
    (done,) = bridge.settled(1)
    assert done["status"] == "delivered", done
    assert contact(bridge, "ada@example.com") == before  # userId "their-own-id-42" kept
    (event,) = bridge.loops_get("events")
    assert (event["userId"], event["eventName"]) == ("their-own-id-42", "signedUp")

    # A contact without a userId would be given the test user's: refused, and said why.
    loops_contact(bridge, email="grace@example.com", firstName="Grace")
    refused = send_test(bridge, endpoint, created, "grace@example.com")
    assert refused.status_code == 400
    assert "grace@example.com is a contact in Loops without a userId" in words(refused.text)
    assert contact(bridge, "grace@example.com")["userId"] is None
    assert len(bridge.deliveries()) == 1


def test_a_test_event_that_could_change_a_contact_waits_until_loops_can_say(bridge: Harness):
    """A deletion, or a user id, is sent only once Loops says whether the contact exists."""
    endpoint = bridge.endpoint("customer.created,customer.deleted", secret=SECRETS["stripe"])
    bridge.fault(status=503)
    refused = send_test(bridge, endpoint, "customer.deleted", "jane.doe@example.com")
    assert refused.status_code == 502
    said = words(refused.text)
    assert "Loops did not say whether jane.doe@example.com is already a contact" in said
    assert "try again once Loops answers" in said
    assert bridge.deliveries() == []
    # One without names, a user id or a deletion cannot change a contact: Loops is not asked.
    asked = len(bridge.loops_calls("/contacts/find"))
    sent = send_test(bridge, endpoint, "customer.created", "jane.doe@example.com")
    assert sent.status_code == 303
    assert len(bridge.loops_calls("/contacts/find")) == asked
