"""The Loops accounts and Endpoints admin pages, driven as an admin drives them: forms POSTed
to the bridge in-process (tests/harness.py), real signed Stripe webhooks, the sandbox
standing in for Loops.

How an account is doing is written by the delivery worker into ``account_states``; those
tests write the rows themselves and read the pages of the bridge without its worker (the
``offline`` fixture), so nothing changes the rows while the pages are read."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import pytest
from sqlmodel import Session

import providers
from bridge import registry
from bridge.admin.formats import when
from bridge.models import ON_DELETE, AccountState
from tests.harness import PUBLIC_URL, Harness
from tests.helpers import (
    Page,
    account_state,
    every_event_type,
    fixture_bytes,
    stored_delivery,
    stored_endpoint,
    without_key_types,
    words,
)

STRIPE = providers.get("stripe")
KEY = "3f9a1c0e7b5d42a8b6c1e9f07d2a4c5e"  # shown only as …4c5e
SECRET = "whsec_adminPageSecretAAAAAAAAAAA1"  # shown only as whsec_…AAA1
CUSTOMER_CREATED = "constructed/customer.created.event.json"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"


def add_account(admin: Harness, name: str = "acme", key: str = KEY, **checked: str) -> None:
    """Through the form, which asks the sandbox whether it takes the key (``no_check="on"``:
    it does not ask)."""
    admin.connect_admin()
    added = admin.form("/admin/accounts", name=name, api_key=key, **checked)
    assert added.status_code == 303, added.text


def endpoint_form(events: dict[str, str] | None = None, **changes: object) -> dict:
    """The endpoint form's fields; ``events``: the Loops event typed next to each type."""
    form: dict[str, object] = {
        "name": "Stripe test",
        "account": "acme",
        "provider": "stripe",
        "event_types": ["customer.created", "invoice.paid"],
        "user_group": "customers",
        "sync_names": "on",
        "mailing_lists": "",
        "on_delete": "unsubscribe",
    }
    form.update(changes)
    form.update({f"loops_event:{t}": name for t, name in (events or {}).items()})
    return {field: value for field, value in form.items() if value is not None}


def row(provider: providers.Provider, event_type: str) -> tuple[str, str]:
    """The ids of an event type's checkbox and Loops event input in the endpoint form."""
    n = list(provider.event_types).index(event_type) + 1
    return f"accept-{provider.name}-{n}", f"loops-event-{provider.name}-{n}"


def create_endpoint(admin: Harness, secret: str | None = None, **changes: object) -> str:
    created = admin.form("/admin/endpoints/new", **endpoint_form(**changes))
    assert created.status_code == 303, created.text
    endpoint_id = created.headers["location"].removeprefix("/admin/endpoints/")
    if secret:
        pasted = admin.form(f"/admin/endpoints/{endpoint_id}/secrets", secret=secret)
        assert pasted.status_code == 303, pasted.text
    return endpoint_id


def customer_created(email: str = "test12@email.com", event_id: str = "evt_admin_1") -> bytes:
    event = json.loads(fixture_bytes(CUSTOMER_CREATED))
    event["id"] = event_id
    event["data"]["object"]["email"] = email
    return json.dumps(event).encode()


def test_account_test_shows_loops_team_and_the_key_only_masked(offline: Harness):
    offline.connect_admin()
    add_account(offline)
    accounts = offline.page("/admin/accounts")
    assert "Added Loops account 'acme' (key …4c5e). Loops took the key." in accounts.text
    (test_action,) = accounts.actions(r"/admin/accounts/\d+/test")

    tested = offline.form(test_action)
    assert tested.status_code == 303
    shown = offline.page("/admin/accounts")
    assert "Loops account 'acme' works: Loops team 'Sandbox team …4c5e'." in shown.text
    assert [call["path"] for call in offline.loops_calls()] == ["/api/v1/api-key"] * 2

    # Nowhere the key could show up does it: lists, forms, a refused form, the endpoint.
    refused = offline.form("/admin/accounts", name="acme", api_key=KEY)
    assert refused.status_code == 400
    assert "already exists" in Page(refused)["account-name-error"]["text"]
    endpoint_id = create_endpoint(offline, secret=SECRET)
    for response in (
        refused,
        offline.get("/admin/accounts"),
        offline.get("/admin/endpoints"),
        offline.get("/admin/endpoints/new"),
        offline.get(f"/admin/endpoints/{endpoint_id}"),
        offline.get(f"/admin/endpoints/{endpoint_id}/edit"),
    ):
        assert response.status_code in (200, 400)
        assert KEY not in response.text and KEY[:12] not in response.text


def test_account_test_shows_loops_error_for_a_refused_key(tmp_path: Path):
    with Harness(tmp_path, worker=False, sandbox_keys=["only_this_key_is_valid"]) as admin:
        admin.connect_admin()
        admin.sign_in()
        add_account(admin, "right", "only_this_key_is_valid")
        add_account(admin, "wrong", KEY, no_check="on")  # as a key revoked since
        right, wrong = admin.page("/admin/accounts").actions(r"/admin/accounts/\d+/test")

        # An error, where the button was pressed: not the notice a success gets.
        for tested, where in ((admin.form(wrong), None), (admin.form(f"{wrong}?from=account"), 1)):
            assert tested.status_code == 200
            page = Page(tested)
            failed = page["test-failed"]
            assert (failed["role"], failed["class"]) == ("alert", "error-box")
            assert failed["text"].startswith(
                "Loops account 'wrong' did not work: Loops answered 401: Invalid API key."
            )
            assert ("account-state" in page.by_id) is bool(where)  # the account's own page
            assert 'class="notice"' not in page.source
        admin.form(right)
        shown = admin.page("/admin/accounts")
        assert "Loops account 'right' works" in shown["main"]["text"]
        assert "test-failed" not in shown.by_id


def test_account_in_use_is_not_deleted(offline: Harness):
    add_account(offline)
    endpoint_id = create_endpoint(offline, name="Stripe live")
    (delete_account,) = offline.page("/admin/accounts").actions(r"/admin/accounts/\d+/delete")

    assert offline.form(delete_account).status_code == 303
    page = offline.page("/admin/accounts")
    assert "Not deleted. Loops account 'acme' is used by endpoint(s) Stripe live" in page.text
    assert page.actions(r"/admin/accounts/\d+/delete") == [delete_account]

    offline.form(f"/admin/endpoints/{endpoint_id}/delete")
    offline.form(delete_account)
    page = offline.page("/admin/accounts")
    assert "Deleted Loops account 'acme'." in page.text
    assert page.actions(r"/admin/accounts/\d+/delete") == []
    assert offline.cli("accounts", "list", "--json") == []


# --- how an account is doing ------------------------------------------------------------------


def test_each_account_state_is_said_in_plain_words(offline: Harness):
    engine, now = offline.engine, time.time()
    ids = {
        name: registry.add_account(engine, name, f"loops_key_{name}_0000").id
        for name in ("fine", "revoked", "down", "busy", "recovered")
    }
    account_state(
        engine,
        ids["revoked"],
        problem="Loops answered 401: Invalid API key",
        problem_kind="key",
        problem_since=now - 3600,
        held_until=now + 25,
        failures=4,
    )
    account_state(
        engine,
        ids["down"],
        problem="no answer (ConnectError)",
        problem_kind="outage",
        problem_since=now - 600,
        held_until=now + 8,
        failures=6,
    )
    account_state(engine, ids["busy"], held_until=now + 40)
    account_state(engine, ids["recovered"], held_until=now - 5)  # a 429 hold that is over

    said, made = {}, {}
    for name, i in ids.items():
        start = time.time()
        said[name] = words(offline.page(f"/admin/accounts/{i}")["account-state"]["text"])
        made[name] = (start, time.time())

    def left(name: str, until: float) -> int:
        """The "(in N s)" of ``name``'s page: N is counted from when the page was made, a
        moment after ``now`` (more than a second on a loaded machine)."""
        (shown,) = map(int, re.findall(r"\(in (\d+) s\)", said[name]))
        start, end = made[name]
        assert round(until - end) <= shown <= round(until - start), (shown, until - end)
        return shown

    assert said["revoked"] == words(
        f"Loops refused this API key since {when(now - 3600)}: Loops answered 401: Invalid API "
        "key. Its deliveries are paused; the bridge checks again at "
        f"{when(now + 25)} (in {left('revoked', now + 25)} s). Replace the key below if it was "
        "revoked."
    )
    assert said["down"].startswith(
        words(
            f"Loops could not be reached since {when(now - 600)}: no answer (ConnectError); next "
            f"try at {when(now + 8)} (in {left('down', now + 8)} s) (6 tries failed in a row)."
        )
    )
    assert said["busy"] == words(
        f"Rate-limited by Loops (429) until {when(now + 40)} (in {left('busy', now + 40)} s): "
        "no delivery starts before then."
    )
    assert said["fine"].startswith("Healthy") and said["recovered"].startswith("Healthy")

    # The list: a badge on every row, the sentence of each account in trouble above it.
    listed = offline.page("/admin/accounts")
    badges = {name: listed[f"account-{i}-state"]["text"] for name, i in ids.items()}
    assert badges == {
        "fine": "healthy",
        "revoked": "key refused",
        "down": "Loops unreachable",
        "busy": "rate-limited",
        "recovered": "healthy",
    }
    troubled = {i for i in ids.values() if f"account-{i}-problem" in listed.by_id}
    assert troubled == {ids["revoked"], ids["down"], ids["busy"]}
    revoked = words(listed[f"account-{ids['revoked']}-problem"]["text"])
    assert "Replace the key on its page if it was revoked." in revoked
    # The overview says the same of the accounts in trouble, and nothing of the others.
    overview = offline.page("/admin/")
    assert {i for i in ids.values() if f"trouble-{i}" in overview.by_id} == troubled
    # The same sentence, but for "(in N s)", which a second between the two pages changes.
    assert re.sub(r"\(in \d+ s\)", "", said["down"]) in re.sub(
        r"\(in \d+ s\)", "", words(overview[f"trouble-{ids['down']}"]["text"])
    )


def test_account_shows_its_queue_and_the_rate_limit_in_use(tmp_path: Path):
    with Harness(tmp_path, worker=False, BRIDGE_LOOPS_RATE_LIMIT="8") as offline:
        offline.sign_in()
        engine, now = offline.engine, time.time()
        acme = registry.add_account(engine, "acme", "loops_key_acme_0000").id
        other = registry.add_account(engine, "other", "loops_key_other_000").id
        live, test = stored_endpoint(engine, "acme"), stored_endpoint(engine, "acme", "Test")
        oldest = stored_delivery(engine, test, received_at=now - 3 * 3600)
        stored_delivery(engine, live, received_at=now - 60)
        stored_delivery(engine, live, received_at=now - 30, next_attempt_at=now + 900)
        stored_delivery(engine, live, status="delivered", received_at=now - 5 * 3600)
        stored_delivery(engine, stored_endpoint(engine, "other", "Other"))

        page = offline.page(f"/admin/accounts/{acme}")
        assert words(page["account-queue"]["text"]) == "3 queued, the oldest received 3 h ago"
        assert f'href="/admin/deliveries/{oldest}"' in page.source
        assert words(page["account-rate"]["text"]) == (
            "8 per second (the default, BRIDGE_LOOPS_RATE_LIMIT)"
        )
        assert "Test the key" in page.text and "Stripe live" in page.text
        listed = offline.page("/admin/accounts")
        assert words(listed[f"account-{acme}-queue"]["text"]).startswith("3 queued")
        assert words(listed[f"account-{other}-queue"]["text"]).startswith("1 queued")

        saved = offline.form(f"/admin/accounts/{acme}/rate-limit", rate_limit="25")
        assert saved.status_code == 303
        shown = words(offline.page(f"/admin/accounts/{acme}")["account-rate"]["text"])
        assert shown == "25 per second (set for this account)"
        # Loops reports the limit it keeps to: when lower, that is the one in use.
        account_state(engine, acme, loops_limit=50)
        shown = words(offline.page(f"/admin/accounts/{acme}")["account-rate"]["text"])
        assert shown == "25 per second (set for this account)"
        account_state(engine, acme, loops_limit=20)
        account_state(engine, other, loops_limit=5)
        assert words(offline.page(f"/admin/accounts/{acme}")["account-rate"]["text"]) == (
            "20 per second: Loops reports a limit of 20 for this account, below the 25 set for it"
        )
        assert words(offline.page(f"/admin/accounts/{other}")["account-rate"]["text"]) == (
            "5 per second: Loops reports a limit of 5 for this account, below the 8 set by default"
        )
        overview = offline.page("/admin/").source
        limits = re.findall(
            r'<th scope="row">(\w+)</th>.*?<td class="limit">(\d+)<', overview, re.S
        )
        assert limits == [("acme", "20"), ("other", "5")]


def test_rate_limit_form_takes_a_whole_number_or_blank(offline: Harness):
    acme = registry.add_account(offline.engine, "acme", "loops_key_acme_0000").id
    url = f"/admin/accounts/{acme}/rate-limit"
    for typed, message in (
        ("abc", "'abc' is not a whole number: enter requests per second from 1 to 1000"),
        ("2.5", "'2.5' is not a whole number"),
        ("-3", "'-3' is not a whole number"),
        ("0", "0 requests per second is out of range: enter 1 to 1000"),
        ("1001", "1001 requests per second is out of range"),
    ):
        refused = offline.form(url, rate_limit=typed)
        assert refused.status_code == 400, typed
        page = Page(refused)
        assert "Nothing was saved" in page.text
        assert page["rate_limit"]["aria-invalid"] == "true"
        assert page["rate_limit"]["aria-describedby"].split() == [
            "rate_limit-hint",
            "rate_limit-error",
        ]
        assert message in page["rate_limit-error"]["text"], typed
        assert page["rate_limit"]["value"] == typed  # what was typed is kept
        assert "aria-invalid" not in page["api_key"]
    assert "the default" in offline.page(f"/admin/accounts/{acme}")["account-rate"]["text"]

    saved = offline.form(url, rate_limit=" 1000 ")
    assert (saved.status_code, saved.headers["location"]) == (303, f"/admin/accounts/{acme}")
    page = offline.page(f"/admin/accounts/{acme}")
    assert "Loops account 'acme' now uses at most 1000 requests per second." in page.text
    assert page["rate_limit"]["value"] == "1000"
    assert offline.form(url, rate_limit="").status_code == 303
    page = offline.page(f"/admin/accounts/{acme}")
    assert (
        "Loops account 'acme' now uses the default rate limit (10 per second, "
        "BRIDGE_LOOPS_RATE_LIMIT)." in page.text
    )
    assert page["rate_limit"]["value"] == ""


def test_replacing_the_key_ends_its_problem_and_sends_its_queue_now(offline: Harness):
    engine, now = offline.engine, time.time()
    old_key, new_key = "loops_key_revoked_OLD1", "loops_key_replaced_NEW2"
    acme = registry.add_account(engine, "acme", old_key).id
    registry.add_account(engine, "other", "loops_key_other_0000")
    account_state(
        engine,
        acme,
        problem="Loops answered 401: Invalid API key",
        problem_kind="key",
        problem_since=now - 600,
        held_until=now + 30,
        failures=3,
    )
    endpoint = stored_endpoint(engine, "acme")
    waiting = [stored_delivery(engine, endpoint, next_attempt_at=now + 3000) for _ in range(2)]
    elsewhere = stored_delivery(
        engine, stored_endpoint(engine, "other", "Other"), next_attempt_at=now + 3000
    )
    before = offline.page(f"/admin/deliveries/{waiting[0]}")
    assert "Loops refused this API key" in before["account-problem"]["text"]
    assert before["next-try"]["text"].startswith(when(now + 3000))

    offline.connect_admin()
    refused = offline.form(f"/admin/accounts/{acme}/api-key", api_key="  ")
    assert refused.status_code == 400
    page = Page(refused)
    assert page["api_key"]["aria-invalid"] == "true"
    assert "The Loops API key is empty" in page["api_key-error"]["text"]
    assert "Paste it again" in page.text
    assert "Loops refused this API key" in page["account-state"]["text"]  # nothing changed

    replaced = offline.form(f"/admin/accounts/{acme}/api-key", api_key=new_key)
    assert (replaced.status_code, replaced.headers["location"]) == (303, f"/admin/accounts/{acme}")
    page = offline.page(f"/admin/accounts/{acme}")
    assert (
        "Replaced the API key of Loops account 'acme' (now loops_…NEW2); any problem with the "
        "old key is cleared. Its 2 queued deliveries are due now." in page.text
    )
    assert words(page["account-state"]["text"]).startswith("Healthy")
    assert page["account-key-hint"]["text"] == "loops_…NEW2"
    assert new_key not in page.source and old_key not in page.source
    assert page["api_key"].get("value") is None  # the key field is never filled in
    for delivery_id in waiting:
        shown = offline.page(f"/admin/deliveries/{delivery_id}")
        assert shown["next-try"]["text"] == "now"
        assert "account-problem" not in shown.by_id
    # Another account's queue is not touched.
    shown = offline.page(f"/admin/deliveries/{elsewhere}")
    assert shown["next-try"]["text"].startswith(when(now + 3000))
    # And the key in use is the new one.
    assert registry.get_account(engine, acme).api_key == new_key


def test_account_with_a_state_is_deleted_with_it(offline: Harness):
    acme = registry.add_account(offline.engine, "acme", "loops_key_acme_0000").id
    account_state(offline.engine, acme, loops_limit=10, held_until=time.time() + 60)
    deleted = offline.form(f"/admin/accounts/{acme}/delete?from=account")
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/admin/accounts")
    page = offline.page("/admin/accounts")
    assert "Deleted Loops account 'acme'." in page.text
    assert f"account-{acme}" not in page.by_id
    with Session(offline.engine) as session:
        assert session.get(AccountState, acme) is None


def test_refused_key_pauses_deliveries_until_it_is_replaced(tmp_path: Path):
    """End to end: the worker finds the key refused, the admin sees it and replaces the key,
    and what waited goes out."""
    with Harness(tmp_path, sandbox_keys=["loops_key_right_1234"]) as bridge:
        bridge.sign_in()
        add_account(bridge, "acme", "loops_key_wrong_0000", no_check="on")  # revoked since
        endpoint_id = create_endpoint(bridge, SECRET, events={"customer.created": "stripeCustomer"})
        (account,) = bridge.page("/admin/accounts").actions(r"/admin/accounts/\d+/test")
        account_url = account.removesuffix("/test")
        accepted = bridge.webhook(endpoint_id, customer_created(), SECRET).json()
        assert accepted["status"] == "queued"

        def refused() -> Page | None:
            page = bridge.page(account_url)
            return page if "Loops refused this API key" in page.text else None

        page = bridge.until(refused, what="the account to show its key refused")
        assert "Its deliveries are paused" in page["account-state"]["text"]
        assert "1 queued" in page["account-queue"]["text"]
        delivery = bridge.page(f"/admin/deliveries/{accepted['id']}")
        assert "Loops refused this API key" in delivery["account-problem"]["text"]

        replaced = bridge.form(f"{account_url}/api-key", api_key="loops_key_right_1234")
        assert replaced.status_code == 303
        (event,) = bridge.until(
            lambda: bridge.loops_get("events"), what="the waiting event to reach Loops"
        )
        assert event["eventName"] == "stripeCustomer"
        bridge.settled(1)
        page = bridge.page(account_url)
        assert words(page["account-state"]["text"]).startswith("Healthy")
        assert "0 queued" in page["account-queue"]["text"]


def test_endpoint_made_in_the_form_takes_a_signed_webhook_once_its_secret_is_pasted(
    harness: Harness,
):
    harness.sign_in()
    add_account(harness)
    endpoint_id = create_endpoint(harness, events={"customer.created": "stripeCustomer"})
    url = f"{PUBLIC_URL}/webhooks/{endpoint_id}"

    page = harness.page(f"/admin/endpoints/{endpoint_id}")
    assert page["endpoint-url"]["text"] == url
    assert 'data-copy="endpoint-url"' in page.source
    assert "Waiting for the signing secret." in page["waiting-notice"]["text"]
    assert page["status"]["text"] == "waiting for signing secret"
    assert page["stripe-listen"]["text"] == f"stripe listen --forward-to {url}"
    assert "stripe trigger customer.created --override customer:email=" in page.text
    listed = harness.page("/admin/endpoints")
    assert "waiting for signing secret" in listed.row(f"/admin/endpoints/{endpoint_id}")

    body = customer_created()
    refused = harness.webhook(endpoint_id, body, SECRET)
    assert refused.status_code == 400 and "no signing secret" in refused.json()["reason"]

    pasted = harness.form(f"/admin/endpoints/{endpoint_id}/secrets", secret=SECRET)
    assert pasted.status_code == 303
    page = harness.page(f"/admin/endpoints/{endpoint_id}")
    assert "Added signing secret whsec_…AAA1." in page.text
    assert "waiting-notice" not in page.by_id
    assert page["status"]["text"] == "active"
    assert SECRET not in page.source

    accepted = harness.webhook(endpoint_id, body, SECRET)
    assert accepted.status_code == 200 and accepted.json()["status"] == "queued"
    (event,) = harness.until(lambda: harness.loops_get("events"), what="the event to reach Loops")
    assert (event["email"], event["eventName"]) == ("test12@email.com", "stripeCustomer")
    (contact,) = harness.loops_get("contacts")
    assert contact["userGroup"] == "customers"
    assert "active" in harness.page("/admin/endpoints").row(f"/admin/endpoints/{endpoint_id}")


def test_invalid_form_shows_each_problem_at_its_field_and_saves_nothing(offline: Harness):
    add_account(offline)
    refused = offline.form(
        "/admin/endpoints/new",
        **endpoint_form(name=" ", account="nobody", event_types=None, user_group="vip"),
    )
    assert refused.status_code == 400
    page = Page(refused)
    assert "Nothing was saved" in page.text
    for field, message in {
        "name": "Give the endpoint a name",
        "account": "Pick one of the Loops accounts",
    }.items():
        assert page[field]["aria-invalid"] == "true"
        assert f"{field}-error" in page[field]["aria-describedby"].split()
        assert message in page[f"{field}-error"]["text"]
    assert "Pick at least one event type" in page["event_types-error"]["text"]
    assert "event_types-error" in page["event-types-stripe"]["aria-describedby"].split()
    assert page[row(STRIPE, "invoice.paid")[0]]["aria-invalid"] == "true"
    # What was typed is kept; a field without a problem is not marked.
    assert page["user_group"]["value"] == "vip"
    assert "aria-invalid" not in page["user_group"]
    assert offline.cli("endpoints", "list", "--json") == []
    assert "No endpoints yet." in offline.page("/admin/endpoints").text


def test_edited_event_types_apply_to_the_next_webhook(offline: Harness):
    add_account(offline)
    endpoint_id = create_endpoint(offline, secret=SECRET)
    # A webhook first, so the bridge's hot path has this endpoint in its cache.
    assert offline.webhook(endpoint_id, customer_created(), SECRET).json()["status"] == "queued"

    edited = offline.form(
        f"/admin/endpoints/{endpoint_id}/edit",
        **endpoint_form(name="Stripe customers", event_types=["customer.created"]),
    )
    assert edited.status_code == 303

    answer = offline.webhook(endpoint_id, fixture_bytes(INVOICE_PAID), SECRET).json()
    assert answer["status"] == "ignored"
    assert "invoice.paid is not enabled" in answer["reason"]
    form = offline.page(f"/admin/endpoints/{endpoint_id}/edit")
    assert form["name"]["value"] == "Stripe customers"
    assert "checked" in form[row(STRIPE, "customer.created")[0]]
    assert "checked" not in form[row(STRIPE, "invoice.paid")[0]]
    (shown,) = offline.cli("endpoints", "list", "--json")
    assert shown["event_types"] == ["customer.created"]


def test_paused_endpoint_keeps_webhooks_until_resumed(harness: Harness):
    harness.sign_in()
    add_account(harness)
    held = create_endpoint(harness, SECRET, name="Held", events={"customer.created": "heldEvent"})
    other = create_endpoint(
        harness, SECRET, name="Other", events={"customer.created": "otherEvent"}
    )

    assert harness.form(f"/admin/endpoints/{held}/pause").status_code == 303
    page = harness.page(f"/admin/endpoints/{held}")
    assert page["status"]["text"] == "paused"
    assert (
        "Webhooks are still accepted and kept; nothing goes to Loops until you resume"
        in (page["paused-notice"]["text"])
    )
    listed = harness.page("/admin/endpoints")
    assert "paused" in listed.row(f"/admin/endpoints/{held}")
    assert "active" in listed.row(f"/admin/endpoints/{other}")

    # Same contact on both: the worker delivers one contact's events in arrival order, so
    # once the later one is in Loops, the held one would have gone first had it been due.
    kept = harness.webhook(held, customer_created(event_id="evt_held"), SECRET)
    assert kept.status_code == 200 and kept.json()["status"] == "queued"
    harness.webhook(other, customer_created(event_id="evt_other"), SECRET)
    harness.until(lambda: harness.loops_get("events"), what="the other endpoint's event")
    assert [e["eventName"] for e in harness.loops_get("events")] == ["otherEvent"]
    (stored,) = harness.deliveries(endpoint_id=held)
    assert stored["status"] == "queued"

    assert harness.form(f"/admin/endpoints/{held}/resume").status_code == 303
    harness.until(
        lambda: (
            [e["eventName"] for e in harness.loops_get("events")] == ["otherEvent", "heldEvent"]
        ),
        what="the held event after resuming",
    )
    page = harness.page(f"/admin/endpoints/{held}")
    assert page["status"]["text"] == "active" and "paused-notice" not in page.by_id


def test_deleted_endpoint_is_gone_with_its_delivery_log(offline: Harness):
    add_account(offline)
    endpoint_id = create_endpoint(offline, SECRET, name="Doomed")
    assert offline.webhook(endpoint_id, customer_created(), SECRET).status_code == 200
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    (confirm,) = re.findall(
        rf'action="/admin/endpoints/{endpoint_id}/delete"\s+data-confirm="([^"]+)"', page.source
    )
    assert "delivery log goes too" in confirm

    deleted = offline.form(f"/admin/endpoints/{endpoint_id}/delete")
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/admin/endpoints")
    listed = offline.page("/admin/endpoints")
    assert "Deleted endpoint 'Doomed' and its delivery log." in listed.text
    assert endpoint_id not in listed.source
    assert offline.get(f"/admin/endpoints/{endpoint_id}").status_code == 404
    again = offline.webhook(endpoint_id, customer_created("b@example.com", "evt_2"), SECRET)
    assert again.status_code == 404
    assert offline.cli("deliveries", "list", "--json") == []


def test_secrets_are_added_and_removed_and_never_shown_in_full(offline: Harness):
    old, new = "whsec_rollingSecretOLD00000000OLD1", "whsec_rollingSecretNEW00000000NEW2"
    add_account(offline)
    endpoint_id = create_endpoint(offline, old)
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert "Add a second one while the secret is being changed in Stripe" in page.text

    refused = offline.form(f"/admin/endpoints/{endpoint_id}/secrets", secret="wrong-0123")
    assert refused.status_code == 400
    page = Page(refused)
    assert page["secret"]["aria-invalid"] == "true"
    assert "starts with whsec_" in page["secret-error"]["text"]
    assert "wrong-0123" not in refused.text

    offline.form(f"/admin/endpoints/{endpoint_id}/secrets", secret=new)
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert "whsec_…OLD1" in page.text and "whsec_…NEW2" in page.text
    assert old not in page.source and new not in page.source
    by_new = offline.webhook(endpoint_id, customer_created(event_id="evt_a"), new)
    assert by_new.status_code == 200

    remove_old, _ = page.actions(rf"/admin/endpoints/{endpoint_id}/secrets/\d+/remove")
    assert offline.form(remove_old).status_code == 303
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert "Removed signing secret whsec_…OLD1" in page.text
    assert "whsec_…OLD1" not in page.text.replace("Removed signing secret whsec_…OLD1", "")
    by_old = offline.webhook(endpoint_id, customer_created(event_id="evt_b"), old)
    assert by_old.status_code == 400
    by_new = offline.webhook(endpoint_id, customer_created(event_id="evt_c"), new)
    assert by_new.status_code == 200


def test_unknown_ids_answer_a_404_page(offline: Harness):
    add_account(offline)
    real = create_endpoint(offline, SECRET)
    for method, path in [
        ("GET", "/admin/endpoints/nope"),
        ("GET", "/admin/endpoints/nope/edit"),
        ("POST", "/admin/endpoints/nope/edit"),
        ("POST", "/admin/endpoints/nope/secrets"),
        ("POST", "/admin/endpoints/nope/secrets/1/remove"),
        ("POST", f"/admin/endpoints/{real}/secrets/999/remove"),
        ("POST", f"/admin/endpoints/{real}/secrets/x/remove"),
        ("POST", "/admin/endpoints/nope/pause"),
        ("POST", "/admin/endpoints/nope/resume"),
        ("POST", "/admin/endpoints/nope/delete"),
        ("POST", "/admin/accounts/999/test"),
        ("POST", "/admin/accounts/999/delete"),
        ("POST", "/admin/accounts/abc/test"),
        ("GET", "/admin/accounts/999"),
        ("GET", "/admin/accounts/abc"),
        ("POST", "/admin/accounts/999/rate-limit"),
        ("POST", "/admin/accounts/999/api-key"),
    ]:
        answer = offline.run(offline.client.request(method, path, data=endpoint_form()))
        assert answer.status_code == 404, (method, path, answer.text)
        assert "<h1>No such" in answer.text, (method, path)
    assert offline.get(f"/admin/endpoints/{real}").status_code == 200


# --- what an endpoint does with an event: a Loops event per type, lists, deletions -----------


def test_form_maps_each_type_to_its_loops_event_with_lists_and_on_delete(offline: Harness):
    add_account(offline)
    form = offline.page("/admin/endpoints/new?provider=stripe")
    assert form["provider"]["data-shows"] == "provider-chosen"
    assert "hidden" not in form["event-types-stripe"]
    # Every other provider's rows are in the page, hidden and not sent, for the script.
    others = [n for n in providers.names() if n != "stripe"]
    for name in others:
        assert {"hidden", "disabled"} <= form[f"event-types-{name}"].keys()
    # Loops' own names for Stripe's types, as placeholders.
    for event_type, loops_name in (
        ("customer.created", "newStripeCustomer"),
        ("invoice.paid", "successfulPayment"),
        ("invoice.payment_failed", "failedPayment"),
    ):
        assert form[row(STRIPE, event_type)[1]]["placeholder"] == f"e.g. {loops_name}"
    assert form[row(STRIPE, "customer.updated")[1]]["placeholder"] == "Loops event (optional)"
    assert [o for o in re.findall(r'<option value="(\w+)"', form.source) if o in ON_DELETE] == [
        *ON_DELETE
    ]

    mapping = {"customer.created": "newStripeCustomer", "invoice.paid": "successfulPayment"}
    endpoint_id = create_endpoint(
        offline,
        events=mapping,
        event_types=["customer.created", "invoice.paid", "invoice.payment_failed"],
        mailing_lists=" cm1abc2def3list , cm2xyz9list,",
        on_delete="delete",
    )
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert words(page["loops-events"]["text"]) == (
        "customer.created → newStripeCustomer invoice.paid → successfulPayment "
        "invoice.payment_failed → no Loops event: the contact only"
    )
    assert page["mailing-lists"]["text"] == "cm1abc2def3list, cm2xyz9list"
    assert words(page["on-delete"]["text"]) == "delete: the contact is deleted from Loops"
    (listed,) = offline.cli("endpoints", "list", "--json")
    assert listed["loops_events"] == mapping
    assert listed["loops_event"] is None
    assert listed["mailing_lists"] == ["cm1abc2def3list", "cm2xyz9list"]
    assert listed["on_delete"] == "delete"

    # The edit form shows it all again, and a save without changes keeps it.
    edit = offline.page(f"/admin/endpoints/{endpoint_id}/edit")
    assert edit[row(STRIPE, "invoice.paid")[1]]["value"] == "successfulPayment"
    assert edit[row(STRIPE, "invoice.payment_failed")[1]]["value"] == ""
    assert edit["mailing_lists"]["value"] == "cm1abc2def3list, cm2xyz9list"
    assert '<option value="delete" selected>' in edit.source
    assert "Stripe" in edit["provider-fixed"]["text"] and "provider" not in {
        k for k, v in edit.by_id.items() if v.get("name") == "provider" and k != "provider-chosen"
    }
    saved = offline.form(
        f"/admin/endpoints/{endpoint_id}/edit",
        **endpoint_form(
            events=mapping,
            event_types=["customer.created", "invoice.paid", "invoice.payment_failed"],
            mailing_lists="cm1abc2def3list, cm2xyz9list",
            on_delete="delete",
            provider="clerk",  # an endpoint keeps its provider, whatever is posted
        ),
    )
    assert saved.status_code == 303, saved.text
    (again,) = offline.cli("endpoints", "list", "--json")
    assert again == listed


def test_one_loops_event_for_every_type_is_shown_per_type_and_saved_so(offline: Harness):
    offline.endpoint("customer.created,invoice.paid", loops_event="stripeEvent")
    (made,) = offline.cli("endpoints", "list", "--json")
    edit = offline.page(f"/admin/endpoints/{made['id']}/edit")
    assert "sends stripeEvent for every event type it accepts" in words(
        edit["one-event-note"]["text"]
    )
    for event_type in ("customer.created", "invoice.paid"):
        assert edit[row(STRIPE, event_type)[1]]["value"] == "stripeEvent"
    assert edit[row(STRIPE, "customer.updated")[1]]["value"] == ""
    shown = offline.page(f"/admin/endpoints/{made['id']}")
    assert words(shown["loops-events"]["text"]) == (
        "customer.created → stripeEvent invoice.paid → stripeEvent"
    )
    saved = offline.form(
        f"/admin/endpoints/{made['id']}/edit",
        **endpoint_form(
            name="Stripe",
            user_group=None,
            events={"customer.created": "stripeEvent", "invoice.paid": "stripeEvent"},
        ),
    )
    assert saved.status_code == 303, saved.text
    (after,) = offline.cli("endpoints", "list", "--json")
    assert after["loops_event"] is None
    assert after["loops_events"] == {
        "customer.created": "stripeEvent",
        "invoice.paid": "stripeEvent",
    }


def test_refused_mapping_lists_and_on_delete_are_each_shown_at_their_field(offline: Harness):
    add_account(offline)
    typed = {
        "events": {"invoice.paid": "successfulPayment", "customer.updated": "customerUpdated"},
        "event_types": ["invoice.paid"],  # customer.updated not ticked
        "mailing_lists": "cm1good, bad id!",
        "on_delete": "explode",
    }
    refused = offline.form("/admin/endpoints/new", **endpoint_form(**typed))
    assert refused.status_code == 400
    page = Page(refused)
    assert "Nothing was saved" in page.text
    mapped = words(page["loops_events-error"]["text"])
    assert "event type(s) the endpoint does not accept: customer.updated" in mapped
    unticked = page[row(STRIPE, "customer.updated")[1]]
    assert unticked["aria-invalid"] == "true" and unticked["value"] == "customerUpdated"
    assert unticked["aria-describedby"] == "loops_events-error"
    assert "aria-invalid" not in page[row(STRIPE, "invoice.paid")[1]]
    assert "loops_events-error" in page["event-types-stripe"]["aria-describedby"].split()
    assert "Mailing list id 'bad id!' is not valid" in page["mailing_lists-error"]["text"]
    assert "Audience → Lists" in page["mailing_lists-error"]["text"]
    assert page["mailing_lists"]["value"] == "cm1good, bad id!"
    assert page["mailing_lists"]["aria-invalid"] == "true"
    assert "'explode' is not one of: unsubscribe, delete, ignore" in page["on_delete-error"]["text"]
    assert page["on_delete"]["aria-invalid"] == "true"
    assert "aria-invalid" not in page["name"]

    # A Loops event name Loops would refuse: its row is marked.
    bad_name = offline.form(
        "/admin/endpoints/new", **endpoint_form(events={"invoice.paid": "1 bad"})
    )
    assert bad_name.status_code == 400
    page = Page(bad_name)
    assert "Loops event name '1 bad' is not valid" in page["loops_events-error"]["text"]
    assert page[row(STRIPE, "invoice.paid")[1]]["aria-invalid"] == "true"
    assert page[row(STRIPE, "invoice.paid")[1]]["value"] == "1 bad"
    assert "aria-invalid" not in page[row(STRIPE, "customer.created")[1]]
    assert offline.cli("endpoints", "list", "--json") == []


def test_provider_choice_lists_every_provider_and_shows_its_event_types(offline: Harness):
    add_account(offline)
    form = offline.page("/admin/endpoints/new")
    options = re.findall(
        r'<option value="([^"]+)"[^>]*>([^<]+)</option>',
        form.source.split('id="provider"', 1)[1].split("</select>", 1)[0],
    )
    assert options == [(n, providers.get(n).label) for n in providers.names()]
    for name in providers.names():
        chosen = offline.page(f"/admin/endpoints/new?provider={name}")
        plugin = providers.get(name)
        assert "hidden" not in chosen[f"event-types-{name}"]
        assert f'<option value="{name}" selected>' in chosen.source
        assert chosen["provider-chosen"]["value"] == name
        for event_type in plugin.event_types:
            checkbox, field = row(plugin, event_type)
            assert chosen[checkbox]["value"] == event_type
            assert chosen[field]["name"] == f"loops_event:{event_type}"
    # An unknown provider in the address: the first one, not an error.
    assert (
        offline.page("/admin/endpoints/new?provider=nope")["provider-chosen"]["value"]
        == (providers.names()[0])
    )


def _needs(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        name not in providers.names(),
        reason=f"provider {name!r} is not registered (pyproject.toml entry point "
        f"loops_bridge.providers, then pip install -e .)",
    )


@_needs("supabase")
def test_generated_secret_is_shown_once_on_the_page_that_creates_the_endpoint(
    offline: Harness,
):
    add_account(offline)
    created = offline.form(
        "/admin/endpoints/new",
        **endpoint_form(
            name="Supabase users",
            provider="supabase",
            event_types=["INSERT", "UPDATE", "DELETE"],
            events={"INSERT": "userSignedUp"},
        ),
    )
    assert created.status_code == 201, created.text
    page = Page(created)
    secret = page["new-secret"]["text"]
    assert len(secret) >= 32 and not providers.get("supabase").secret_problem(secret)
    box = words(page["new-secret-box"]["text"])
    assert "made for you and shown only this once" in box
    assert "It will not be shown again" in box
    assert created.text.count(secret) == 1
    assert "Created endpoint 'Supabase users'." in page.text
    (listed,) = offline.cli("endpoints", "list", "--json")
    endpoint_id = listed["id"]
    assert page["endpoint-url"]["text"] == f"{PUBLIC_URL}/webhooks/{endpoint_id}"
    hint = listed["signing_secrets"][0]
    assert hint.endswith(secret[-4:]) and hint in box
    # Reloading the page asks for the endpoint's own address, not the POST again.
    assert f'data-page-url="/admin/endpoints/{endpoint_id}"' in created.text
    assert not [h for h in created.headers.multi_items() if secret in h[1]]  # no cookie, no URL

    # The secret works: a Supabase webhook carrying it is taken.
    body, headers = providers.get("supabase").sample("INSERT", "jo@example.com", secret)
    answer = offline.run(
        offline.client.post(f"/webhooks/{endpoint_id}", content=body, headers=headers)
    )
    assert answer.json()["status"] == "queued", answer.text

    # Afterwards only its hint, anywhere.
    for url in (
        f"/admin/endpoints/{endpoint_id}",
        f"/admin/endpoints/{endpoint_id}/edit",
        "/admin/endpoints",
        f"/admin/endpoints/{endpoint_id}/test",
        f"/admin/endpoints/{endpoint_id}/rejections",
        "/admin/deliveries",
        "/admin/",
    ):
        later = offline.page(url)
        assert secret not in later.source and secret[:12] not in later.source, url
    later = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert "new-secret" not in later.by_id and "data-page-url" not in later.source
    assert hint in later.text
    assert secret not in json.dumps(offline.cli("endpoints", "list", "--json"))


def test_a_provider_that_makes_no_secret_waits_for_one(offline: Harness):
    add_account(offline)
    for name in providers.names():
        if providers.get(name).new_secret() is not None:
            continue
        plugin = providers.get(name)
        created = offline.form(
            "/admin/endpoints/new",
            **endpoint_form(name=f"{name} e", provider=name, event_types=[plugin.event_types[0]]),
        )
        assert created.status_code == 303, created.text
        page = offline.page(created.headers["location"])
        assert "new-secret" not in page.by_id and "waiting-notice" in page.by_id


def setup_steps(page: Page) -> str:
    """The words of the endpoint page's set-up steps."""
    section = page.source.split('id="setup"', 1)[1].split("</section>", 1)[0]
    return words(html.unescape(re.sub(r"<[^>]+>", "", section)))


SETUP = {
    "stripe": ("Set it up in Stripe", "Developers → Webhooks", "stripe listen --forward-to"),
    "clerk": (
        "Set it up in Clerk",
        "Webhooks",
        "Add Endpoint",
        "Subscribe to events",
        "Signing Secret",
        "whsec_",
    ),
    "supabase": (
        "Set it up in Supabase",
        "Database → Webhooks",
        "Create a new hook",
        "auth.users",
        "HTTP Request",
        "POST",
        "Loops-Secret",
        "Moving from Loops' own Supabase webhook",
        "change only two things",
    ),
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=_needs(n)) for n in ("stripe", "clerk", "supabase")]
)
def test_endpoint_page_has_its_providers_own_set_up_steps(offline: Harness, name: str):
    plugin = providers.get(name)
    secret = plugin.new_secret() or None
    endpoint_id = offline.endpoint(
        ",".join(without_key_types(plugin)), provider=name, name=f"{plugin.label} e", secret=secret
    )
    every_event_type(offline.engine, endpoint_id)
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    text = setup_steps(page)
    for said in SETUP[name]:
        assert said in text, (name, said)
    for event_type in plugin.event_types:  # the events to select there: this endpoint's
        assert event_type.lower() in text.lower(), (name, event_type)
    url = f"{PUBLIC_URL}/webhooks/{endpoint_id}"
    assert page["endpoint-url"]["text"] == url
    others = {label for n in SETUP if n != name for label in [providers.get(n).label]}
    assert not [label for label in others if label in page.text], "another provider named"
    # The generic pages say this provider's name, or none, never Stripe's for another one.
    for url in (
        f"/admin/endpoints/{endpoint_id}/rejections",
        f"/admin/endpoints/{endpoint_id}/test",
        f"/admin/endpoints/{endpoint_id}/edit",
    ):
        shown = offline.page(url).text
        assert not [label for label in others if label in shown], url


def test_the_endpoint_page_says_when_platforms_cannot_reach_its_url(offline: Harness):
    """The tests' BRIDGE_PUBLIC_URL, http://bridge.test, is one no platform can send to."""
    stripe = offline.endpoint("invoice.paid", secret=SECRET)
    warning = words(offline.page(f"/admin/endpoints/{stripe}")["url-warning"]["text"])
    assert warning.startswith(
        f"BRIDGE_PUBLIC_URL is {PUBLIC_URL}: bridge.test is a name only a local network "
        "knows, and it is plain http, not HTTPS. Webhook platforms send from the internet, to "
        "a public HTTPS address: set BRIDGE_PUBLIC_URL to the one this bridge is reached at"
    )
    assert warning.endswith(
        "To test from this machine instead, the Stripe CLI forwards Stripe's events to this "
        "URL: stripe listen --forward-to, as the steps below show."
    )
    # Another platform's page names no Stripe CLI.
    clerk = offline.endpoint("user.created", provider="clerk", name="Clerk")
    warning = words(offline.page(f"/admin/endpoints/{clerk}")["url-warning"]["text"])
    assert "set BRIDGE_PUBLIC_URL" in warning and "Stripe" not in warning


def test_types_the_bridge_does_not_handle_are_listed_with_a_count(offline: Harness):
    endpoint_id = offline.endpoint("invoice.paid", secret=SECRET)
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert "unsupported" not in page.by_id
    for n, event_type in enumerate(["plan.created", "plan.created", "price.updated"]):
        event = json.loads(customer_created(event_id=f"evt_unsupported_{n}"))
        event["type"] = event_type
        answer = offline.webhook(endpoint_id, json.dumps(event).encode(), SECRET).json()
        assert answer["status"] == "ignored"
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    listed = [words(line) for line in page["unsupported"]["text"].strip().splitlines()]
    assert [line.rsplit(", last ", 1)[0] for line in listed if line] == [
        "price.updated ×1",
        "plan.created ×2",
    ]
    assert "stop sending them in Stripe" in words(page.text)


def test_a_provider_without_its_own_page_gets_general_set_up_steps(
    offline: Harness, monkeypatch: pytest.MonkeyPatch
):
    from starlette.routing import Mount

    from bridge.admin import Admin

    endpoint_id = offline.endpoint("invoice.paid,customer.created", secret=SECRET)
    (mounted,) = [r for r in offline.app.routes if isinstance(r, Mount) and r.path == "/admin"]
    admin: Admin = mounted.app.state.admin  # type: ignore[union-attr]
    assert admin.about("stripe") == "endpoints/setup_stripe.html"
    assert admin.about("from-elsewhere") == "endpoints/setup_generic.html"
    # Stripe's endpoint, as a provider without a template of its own would be shown.
    monkeypatch.setattr(Admin, "about", lambda self, name: "endpoints/setup_generic.html")
    page = offline.page(f"/admin/endpoints/{endpoint_id}")
    assert page["setup"]["text"] == "Set it up in Stripe"
    steps = setup_steps(page)
    assert "In Stripe, add a webhook that sends to the URL above." in steps
    assert "the same event types as this endpoint: customer.created, invoice.paid." in steps
    assert "Copy the secret Stripe gives the webhook, paste it below" in steps
    assert "stripe listen" not in page.text
    assert (
        "Why a request is refused"
        in offline.page(f"/admin/endpoints/{endpoint_id}/rejections").text
    )
    form = offline.page(f"/admin/endpoints/{endpoint_id}/edit")
    assert form[row(STRIPE, "invoice.paid")[1]]["placeholder"] == "Loops event (optional)"


def test_the_secrets_are_described_as_each_platform_uses_them(offline):
    supabase = offline.endpoint(
        "INSERT", provider="supabase", name="Users", secret="supabaseSecretsWording-0123456789"
    )
    stripe = offline.endpoint(secret="whsec_secretsWordingStripeSecret0123456")
    said = {
        name: words(offline.page(f"/admin/endpoints/{endpoint}")["secrets-hint"]["text"])
        for name, endpoint in (("supabase", supabase), ("stripe", stripe))
    }
    assert said["supabase"] == (
        "A webhook is accepted when its header carries any of these. Only the last four "
        "characters are shown; a secret is never shown again."
    )
    assert said["stripe"] == (
        "A webhook is accepted when it is signed with any of these. Only the kind (whsec_) "
        "and the last four characters are shown; a secret is never shown again."
    )


def test_pausing_says_what_it_means_once(offline):
    endpoint = offline.endpoint(secret="whsec_pausedOnceSecret0123456789abcd")
    paused = offline.form(f"/admin/endpoints/{endpoint}/pause")
    assert paused.status_code == 303
    shown = offline.page(paused.headers["location"]).source
    assert "Paused." in shown
    assert shown.count("still accepted and kept; nothing goes to Loops until you") == 1
