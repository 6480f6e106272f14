"""The Loops accounts and Endpoints admin pages, driven as an admin drives them: forms
POSTed to ``loops-bridge serve``, real signed Stripe webhooks, the sandbox standing in for
Loops."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from contextlib import closing
from html.parser import HTMLParser

import httpx
import pytest

from tests.helpers import fixture_bytes, signed_headers
from tests.servers import Bridge, Sandbox, cli, wait_until

KEY = "3f9a1c0e7b5d42a8b6c1e9f07d2a4c5e"  # shown only as …4c5e
SECRET = "whsec_adminPageSecretAAAAAAAAAAA1"  # shown only as whsec_…AAA1
CUSTOMER_CREATED = "constructed/customer.created.event.json"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
_VOID = {"input", "br", "meta", "link", "img", "hr"}


class Page(HTMLParser):
    """The elements of a page that have an id: their attributes, and their text as ``text``."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__()
        self.source = response.text
        self.text = html.unescape(response.text)
        self.by_id: dict[str, dict[str, str]] = {}
        self._open: list[str | None] = []
        self.feed(response.text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if found.get("id"):
            self.by_id[found["id"]] = {**found, "text": ""}
        if tag not in _VOID:
            self._open.append(found.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in filter(None, self._open):
            self.by_id[element]["text"] += data

    def __getitem__(self, element_id: str) -> dict[str, str]:
        return self.by_id[element_id]

    def row(self, containing: str) -> str:
        """The text of the table row that contains ``containing``."""
        (row,) = [r for r in self.source.split("<tr>") if containing in r]
        return html.unescape(re.sub(r"<[^>]+>", " ", row.split("</tr>")[0]))

    def actions(self, pattern: str) -> list[str]:
        """The form actions on the page matching ``pattern``, in page order."""
        return re.findall(rf'action="({pattern})"', self.source)


@pytest.fixture
def admin(bridge: Bridge) -> Iterator[httpx.Client]:
    with closing(bridge.admin()) as client:
        yield client


def add_account(admin: httpx.Client, name: str = "acme", key: str = KEY) -> None:
    added = admin.post("/admin/accounts", data={"name": name, "api_key": key})
    assert added.status_code == 303, added.text


def endpoint_form(**changes: object) -> dict:
    form: dict[str, object] = {
        "name": "Stripe test",
        "connection": "acme",
        "provider": "stripe",
        "event_types": ["customer.created", "invoice.paid"],
        "user_group": "customers",
        "sync_names": "on",
        "loops_event": "",
    }
    form.update(changes)
    return {field: value for field, value in form.items() if value is not None}


def create_endpoint(admin: httpx.Client, secret: str | None = None, **changes: object) -> str:
    created = admin.post("/admin/endpoints/new", data=endpoint_form(**changes))
    assert created.status_code == 303, created.text
    endpoint_id = created.headers["location"].removeprefix("/admin/endpoints/")
    if secret:
        pasted = admin.post(f"/admin/endpoints/{endpoint_id}/secrets", data={"secret": secret})
        assert pasted.status_code == 303, pasted.text
    return endpoint_id


def customer_created(email: str = "test12@email.com", event_id: str = "evt_admin_1") -> bytes:
    event = json.loads(fixture_bytes(CUSTOMER_CREATED))
    event["id"] = event_id
    event["data"]["object"]["email"] = email
    return json.dumps(event).encode()


def send(bridge: Bridge, endpoint_id: str, body: bytes, secret: str = SECRET) -> httpx.Response:
    return bridge.post(endpoint_id, body, signed_headers(body, secret))


def test_account_test_shows_loops_team_and_the_key_only_masked(sandbox: Sandbox, admin):
    add_account(admin)
    accounts = Page(admin.get("/admin/accounts"))
    assert "Added Loops account 'acme' (key …4c5e)." in accounts.text
    (test_action,) = accounts.actions(r"/admin/accounts/\d+/test")

    tested = admin.post(test_action)
    assert tested.status_code == 303
    shown = Page(admin.get("/admin/accounts"))
    assert "Loops account 'acme' works: Loops team 'Sandbox team …4c5e'." in shown.text
    assert [call["path"] for call in sandbox.calls()] == ["/api/v1/api-key"]

    # Nowhere the key could show up does it: lists, forms, a refused form, the endpoint.
    refused = admin.post("/admin/accounts", data={"name": "acme", "api_key": KEY})
    assert refused.status_code == 400
    assert "already exists" in Page(refused)["account-name-error"]["text"]
    endpoint_id = create_endpoint(admin, secret=SECRET)
    for response in (
        refused,
        admin.get("/admin/accounts"),
        admin.get("/admin/endpoints"),
        admin.get("/admin/endpoints/new"),
        admin.get(f"/admin/endpoints/{endpoint_id}"),
        admin.get(f"/admin/endpoints/{endpoint_id}/edit"),
    ):
        assert response.status_code in (200, 400)
        assert KEY not in response.text and KEY[:12] not in response.text


def test_account_test_shows_loops_error_for_a_refused_key(env):
    picky = Sandbox(env, "--api-key", "only_this_key_is_valid")
    env["BRIDGE_LOOPS_API_URL"] = picky.api_url
    server = Bridge(env)
    try:
        with closing(server.admin()) as admin:
            add_account(admin, "right", "only_this_key_is_valid")
            add_account(admin, "wrong", KEY)
            tests = Page(admin.get("/admin/accounts")).actions(r"/admin/accounts/\d+/test")
            right, wrong = tests

            admin.post(wrong)
            page = Page(admin.get("/admin/accounts"))
            assert "Loops account 'wrong' did not work: Loops answered 401: Invalid API key." in (
                page.text
            )
            admin.post(right)
            assert "Loops account 'right' works" in Page(admin.get("/admin/accounts")).text
    finally:
        server.stop()
        picky.stop()


def test_account_in_use_is_not_deleted(env, admin: httpx.Client):
    add_account(admin)
    endpoint_id = create_endpoint(admin, name="Stripe live")
    (delete_account,) = Page(admin.get("/admin/accounts")).actions(r"/admin/accounts/\d+/delete")

    assert admin.post(delete_account).status_code == 303
    page = Page(admin.get("/admin/accounts"))
    assert "Not deleted. Loops account 'acme' is used by endpoint(s) Stripe live" in page.text
    assert page.actions(r"/admin/accounts/\d+/delete") == [delete_account]

    admin.post(f"/admin/endpoints/{endpoint_id}/delete")
    admin.post(delete_account)
    page = Page(admin.get("/admin/accounts"))
    assert "Deleted Loops account 'acme'." in page.text
    assert page.actions(r"/admin/accounts/\d+/delete") == []
    assert cli(env, "connections", "list", "--json") == []


def test_endpoint_made_in_the_form_takes_a_signed_webhook_once_its_secret_is_pasted(
    sandbox: Sandbox, bridge: Bridge, admin: httpx.Client
):
    add_account(admin)
    endpoint_id = create_endpoint(admin, loops_event="stripeCustomer")
    url = f"{bridge.url}/webhooks/{endpoint_id}"

    page = Page(admin.get(f"/admin/endpoints/{endpoint_id}"))
    assert page["endpoint-url"]["text"] == url
    assert 'data-copy="endpoint-url"' in page.source
    assert "Waiting for the signing secret." in page["waiting-notice"]["text"]
    assert page["status"]["text"] == "waiting for signing secret"
    assert page["stripe-listen"]["text"] == f"stripe listen --forward-to {url}"
    assert "stripe trigger customer.created --override customer:email=" in page.text
    listed = Page(admin.get("/admin/endpoints"))
    assert "waiting for signing secret" in listed.row(f"/admin/endpoints/{endpoint_id}")

    body = customer_created()
    refused = send(bridge, endpoint_id, body)
    assert refused.status_code == 400 and "no signing secret" in refused.json()["reason"]

    pasted = admin.post(f"/admin/endpoints/{endpoint_id}/secrets", data={"secret": SECRET})
    assert pasted.status_code == 303
    page = Page(admin.get(f"/admin/endpoints/{endpoint_id}"))
    assert "Added signing secret whsec_…AAA1." in page.text
    assert "waiting-notice" not in page.by_id
    assert page["status"]["text"] == "active"
    assert SECRET not in page.source

    accepted = send(bridge, endpoint_id, body)
    assert accepted.status_code == 200 and accepted.json()["status"] == "queued"
    (event,) = wait_until(lambda: sandbox.get("events"), what="the event to reach Loops")
    assert (event["email"], event["eventName"]) == ("test12@email.com", "stripeCustomer")
    (contact,) = sandbox.get("contacts")
    assert contact["userGroup"] == "customers"
    assert "active" in Page(admin.get("/admin/endpoints")).row(f"/admin/endpoints/{endpoint_id}")


def test_invalid_form_shows_each_problem_at_its_field_and_saves_nothing(env, admin):
    add_account(admin)
    refused = admin.post(
        "/admin/endpoints/new",
        data=endpoint_form(
            name=" ", connection="nobody", event_types=None, loops_event="1 bad", user_group="vip"
        ),
    )
    assert refused.status_code == 400
    page = Page(refused)
    assert "Nothing was saved" in page.text
    for field, message in {
        "name": "Give the endpoint a name",
        "connection": "Pick one of the Loops accounts",
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
    assert cli(env, "endpoints", "list", "--json") == []
    assert "No endpoints yet." in Page(admin.get("/admin/endpoints")).text


def test_edited_event_types_apply_to_the_next_webhook(env, bridge: Bridge, admin):
    add_account(admin)
    endpoint_id = create_endpoint(admin, secret=SECRET)
    # A webhook first, so the bridge's hot path has this endpoint in its cache.
    assert send(bridge, endpoint_id, customer_created()).json()["status"] == "queued"

    edited = admin.post(
        f"/admin/endpoints/{endpoint_id}/edit",
        data=endpoint_form(name="Stripe customers", event_types=["customer.created"]),
    )
    assert edited.status_code == 303

    answer = send(bridge, endpoint_id, fixture_bytes(INVOICE_PAID)).json()
    assert answer["status"] == "ignored"
    assert "invoice.paid is not enabled" in answer["reason"]
    form = Page(admin.get(f"/admin/endpoints/{endpoint_id}/edit"))
    assert form["name"]["value"] == "Stripe customers"
    assert 'value="customer.created" checked' in form.source
    assert 'value="invoice.paid" checked' not in form.source
    (shown,) = cli(env, "endpoints", "list", "--json")
    assert shown["event_types"] == ["customer.created"]


def test_paused_endpoint_keeps_webhooks_until_resumed(env, sandbox: Sandbox, bridge, admin):
    add_account(admin)
    held = create_endpoint(admin, SECRET, name="Held", loops_event="heldEvent")
    other = create_endpoint(admin, SECRET, name="Other", loops_event="otherEvent")

    assert admin.post(f"/admin/endpoints/{held}/pause").status_code == 303
    page = Page(admin.get(f"/admin/endpoints/{held}"))
    assert page["status"]["text"] == "paused"
    assert (
        "Webhooks are still accepted and kept; nothing goes to Loops until you resume"
        in (page["paused-notice"]["text"])
    )
    listed = Page(admin.get("/admin/endpoints"))
    assert "paused" in listed.row(f"/admin/endpoints/{held}")
    assert "active" in listed.row(f"/admin/endpoints/{other}")

    # Same contact on both: the worker delivers one contact's events in arrival order, so
    # once the later one is in Loops, the held one would have gone first had it been due.
    kept = send(bridge, held, customer_created(event_id="evt_held"))
    assert kept.status_code == 200 and kept.json()["status"] == "queued"
    send(bridge, other, customer_created(event_id="evt_other"))
    wait_until(lambda: sandbox.get("events"), what="the other endpoint's event")
    assert [e["eventName"] for e in sandbox.get("events")] == ["otherEvent"]
    (stored,) = cli(env, "deliveries", "list", "--endpoint", held, "--json")
    assert stored["status"] == "queued"

    assert admin.post(f"/admin/endpoints/{held}/resume").status_code == 303
    events = wait_until(
        lambda: [e["eventName"] for e in sandbox.get("events")] == ["otherEvent", "heldEvent"],
        what="the held event after resuming",
    )
    assert events
    page = Page(admin.get(f"/admin/endpoints/{held}"))
    assert page["status"]["text"] == "active" and "paused-notice" not in page.by_id


def test_deleted_endpoint_is_gone_with_its_delivery_log(env, bridge: Bridge, admin):
    add_account(admin)
    endpoint_id = create_endpoint(admin, SECRET, name="Doomed")
    assert send(bridge, endpoint_id, customer_created()).status_code == 200
    page = Page(admin.get(f"/admin/endpoints/{endpoint_id}"))
    (confirm,) = re.findall(
        rf'action="/admin/endpoints/{endpoint_id}/delete"\s+data-confirm="([^"]+)"', page.source
    )
    assert "delivery log goes too" in confirm

    deleted = admin.post(f"/admin/endpoints/{endpoint_id}/delete")
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/admin/endpoints")
    listed = Page(admin.get("/admin/endpoints"))
    assert "Deleted endpoint 'Doomed' and its delivery log." in listed.text
    assert endpoint_id not in listed.source
    assert admin.get(f"/admin/endpoints/{endpoint_id}").status_code == 404
    assert send(bridge, endpoint_id, customer_created("b@example.com", "evt_2")).status_code == 404
    assert cli(env, "deliveries", "list", "--json") == []


def test_secrets_are_added_and_removed_and_never_shown_in_full(bridge: Bridge, admin):
    old, new = "whsec_rollingSecretOLD00000000OLD1", "whsec_rollingSecretNEW00000000NEW2"
    add_account(admin)
    endpoint_id = create_endpoint(admin, old)
    page = Page(admin.get(f"/admin/endpoints/{endpoint_id}"))
    assert "Add a second one while Stripe rolls the secret" in page.text

    refused = admin.post(f"/admin/endpoints/{endpoint_id}/secrets", data={"secret": "wrong-0123"})
    assert refused.status_code == 400
    page = Page(refused)
    assert page["secret"]["aria-invalid"] == "true"
    assert "starts with whsec_" in page["secret-error"]["text"]
    assert "wrong-0123" not in refused.text

    admin.post(f"/admin/endpoints/{endpoint_id}/secrets", data={"secret": new})
    page = Page(admin.get(f"/admin/endpoints/{endpoint_id}"))
    assert "whsec_…OLD1" in page.text and "whsec_…NEW2" in page.text
    assert old not in page.source and new not in page.source
    assert send(bridge, endpoint_id, customer_created(event_id="evt_a"), new).status_code == 200

    remove_old, _ = page.actions(rf"/admin/endpoints/{endpoint_id}/secrets/\d+/remove")
    assert admin.post(remove_old).status_code == 303
    page = Page(admin.get(f"/admin/endpoints/{endpoint_id}"))
    assert "Removed signing secret whsec_…OLD1" in page.text
    assert "whsec_…OLD1" not in page.text.replace("Removed signing secret whsec_…OLD1", "")
    by_old = send(bridge, endpoint_id, customer_created(event_id="evt_b"), old)
    assert by_old.status_code == 400
    assert send(bridge, endpoint_id, customer_created(event_id="evt_c"), new).status_code == 200


def test_unknown_ids_answer_a_404_page(admin: httpx.Client):
    add_account(admin)
    real = create_endpoint(admin, SECRET)
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
    ]:
        answer = admin.request(method, path, data=endpoint_form())
        assert answer.status_code == 404, (method, path, answer.text)
        assert "<h1>No such" in answer.text, (method, path)
    assert admin.get(f"/admin/endpoints/{real}").status_code == 200
