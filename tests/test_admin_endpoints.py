"""The Loops accounts and Endpoints admin pages, driven as an admin drives them: forms POSTed
to the bridge in-process (tests/harness.py), real signed Stripe webhooks, the sandbox
standing in for Loops.

How an account is doing is written by the delivery worker into ``account_states``; those
tests write the rows themselves and read the pages of the bridge without its worker (the
``offline`` fixture), so nothing changes the rows while the pages are read."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from sqlmodel import Session

from bridge import registry
from bridge.admin.formats import when
from bridge.models import AccountState
from tests.harness import PUBLIC_URL, Harness
from tests.helpers import (
    Page,
    account_state,
    fixture_bytes,
    stored_delivery,
    stored_endpoint,
    words,
)

KEY = "3f9a1c0e7b5d42a8b6c1e9f07d2a4c5e"  # shown only as …4c5e
SECRET = "whsec_adminPageSecretAAAAAAAAAAA1"  # shown only as whsec_…AAA1
CUSTOMER_CREATED = "constructed/customer.created.event.json"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"


def add_account(admin: Harness, name: str = "acme", key: str = KEY) -> None:
    added = admin.form("/admin/accounts", name=name, api_key=key)
    assert added.status_code == 303, added.text


def endpoint_form(**changes: object) -> dict:
    form: dict[str, object] = {
        "name": "Stripe test",
        "account": "acme",
        "provider": "stripe",
        "event_types": ["customer.created", "invoice.paid"],
        "user_group": "customers",
        "sync_names": "on",
        "loops_event": "",
    }
    form.update(changes)
    return {field: value for field, value in form.items() if value is not None}


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
    assert "Added Loops account 'acme' (key …4c5e)." in accounts.text
    (test_action,) = accounts.actions(r"/admin/accounts/\d+/test")

    tested = offline.form(test_action)
    assert tested.status_code == 303
    shown = offline.page("/admin/accounts")
    assert "Loops account 'acme' works: Loops team 'Sandbox team …4c5e'." in shown.text
    assert [call["path"] for call in offline.loops_calls()] == ["/api/v1/api-key"]

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
        add_account(admin, "wrong", KEY)
        right, wrong = admin.page("/admin/accounts").actions(r"/admin/accounts/\d+/test")

        admin.form(wrong)
        page = admin.page("/admin/accounts")
        assert "Loops account 'wrong' did not work: Loops answered 401: Invalid API key." in (
            page.text
        )
        admin.form(right)
        assert "Loops account 'right' works" in admin.page("/admin/accounts").text


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

    said = {
        name: words(offline.page(f"/admin/accounts/{i}")["account-state"]["text"])
        for name, i in ids.items()
    }
    assert said["revoked"] == words(
        f"Loops refused this API key since {when(now - 3600)}: Loops answered 401: Invalid API "
        "key. Its deliveries are paused; the bridge checks again at "
        f"{when(now + 25)} (in 25 s). Replace the key below if it was revoked."
    )
    assert said["down"].startswith(
        words(
            f"Loops could not be reached since {when(now - 600)}: no answer (ConnectError); next "
            f"try at {when(now + 8)} (in 8 s) (6 tries failed in a row)."
        )
    )
    assert said["busy"] == words(
        f"Rate-limited by Loops (429) until {when(now + 40)} (in 40 s): no delivery starts "
        "before then."
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
    assert said["down"] in words(overview[f"trouble-{ids['down']}"]["text"])


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
        add_account(bridge, "acme", "loops_key_wrong_0000")
        endpoint_id = create_endpoint(bridge, SECRET, loops_event="stripeCustomer")
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
    endpoint_id = create_endpoint(harness, loops_event="stripeCustomer")
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
        **endpoint_form(
            name=" ", account="nobody", event_types=None, loops_event="1 bad", user_group="vip"
        ),
    )
    assert refused.status_code == 400
    page = Page(refused)
    assert "Nothing was saved" in page.text
    for field, message in {
        "name": "Give the endpoint a name",
        "account": "Pick one of the Loops accounts",
        "loops_event": "Loops event name '1 bad' is not valid",
    }.items():
        assert page[field]["aria-invalid"] == "true"
        assert f"{field}-error" in page[field]["aria-describedby"].split()
        assert message in page[f"{field}-error"]["text"]
    assert "Pick at least one event type" in page["event_types-error"]["text"]
    assert "event_types-error" in page.source.split("<fieldset", 1)[1].split(">", 1)[0]
    # What was typed is kept; a field without a problem is not marked.
    assert page["loops_event"]["value"] == "1 bad"
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
    assert 'value="customer.created" checked' in form.source
    assert 'value="invoice.paid" checked' not in form.source
    (shown,) = offline.cli("endpoints", "list", "--json")
    assert shown["event_types"] == ["customer.created"]


def test_paused_endpoint_keeps_webhooks_until_resumed(harness: Harness):
    harness.sign_in()
    add_account(harness)
    held = create_endpoint(harness, SECRET, name="Held", loops_event="heldEvent")
    other = create_endpoint(harness, SECRET, name="Other", loops_event="otherEvent")

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
    assert "Add a second one while Stripe rolls the secret" in page.text

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
