"""Loops' own webhooks (bridge/loops_webhooks.py): the fixtures of tests/fixtures/loops,
signed as Loops signs them (Standard Webhooks, with the ``standardwebhooks`` library's own
``Webhook.sign``), POSTed to the app in-process (tests/harness.py); the account's URL and
secrets from the CLI and the admin; the metrics; retention of the bodies."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from bridge import metrics, registry
from bridge.loops_webhooks import TOKEN
from bridge.models import LoopsEvent
from bridge.queue import Queue
from tests.harness import Harness
from tests.helpers import Page, fixture_bytes, stored_delivery, stored_endpoint, words
from tests.test_metrics import added, counted

SECRET = "whsec_loopsWebhooksTestSecretAAAAAAAAAAAAAAAAAAAA"
ROLLED_SECRET = "whsec_loopsRolledTestSecretBBBBBBBBBBBBBBBBBBBBBB"
OTHER_SECRET = "whsec_notThisAccountsSecretCCCCCCCCCCCCCCCCCCCCCC"
FIXTURES = Path(__file__).parent / "fixtures" / "loops"
EVENTS = sorted(path.stem for path in FIXTURES.glob("*.json"))
MAX_BODY_BYTES = 4096

CAMPAIGN = "cm4t1suns001uw6atri87v54s"
LOOP = "cm5loopfilled0001ow9hloop01"
TRANSACTIONAL = "cm5txfilled00001ow9htransac"
CAMPAIGN_EMAIL = ("cm4t1sseg004tje7982991nan", "Subject of the email")
LOOP_EMAIL = ("cm5emailfilled01ow9hloopem", "Payment received")
TX_EMAIL = ("cm5emailfilled02ow9htxemai", "Your receipt")
CONTACT = ("cm4ittmhq0011ow9h6fb460yw", "test+1@loops.so")
# eventName -> (contact id and email, source type, id and name, email id and subject)
COLUMNS = {
    "testing.testEvent": ((None, None), (None, None, None), (None, None)),
    "contact.created": (
        ("cm4itta800003ow9hhekzk94o", "test+5@loops.so"),
        (None, None, None),
        (None, None),
    ),
    "contact.unsubscribed": (CONTACT, (None, None, None), (None, None)),
    "contact.deleted": (CONTACT, (None, None, None), (None, None)),
    "contact.mailingList.subscribed": (CONTACT, (None, None, None), (None, None)),
    "contact.mailingList.unsubscribed": (CONTACT, (None, None, None), (None, None)),
    "campaign.email.sent": (
        CONTACT,
        ("campaign", CAMPAIGN, "December newsletter"),
        CAMPAIGN_EMAIL,
    ),
    "loop.email.sent": (CONTACT, ("loop", LOOP, "Payment received"), LOOP_EMAIL),
    "transactional.email.sent": (
        CONTACT,
        ("transactional", TRANSACTIONAL, "Receipt"),
        TX_EMAIL,
    ),
    "email.delivered": (CONTACT, ("campaign", CAMPAIGN, None), CAMPAIGN_EMAIL),
    "email.softBounced": (CONTACT, ("loop", LOOP, None), LOOP_EMAIL),
    "email.hardBounced": (CONTACT, ("transactional", TRANSACTIONAL, None), TX_EMAIL),
    "email.opened": (CONTACT, ("loop", LOOP, None), LOOP_EMAIL),
    "email.clicked": (CONTACT, ("campaign", CAMPAIGN, None), CAMPAIGN_EMAIL),
    "email.unsubscribed": (CONTACT, ("campaign", CAMPAIGN, None), CAMPAIGN_EMAIL),
    "email.resubscribed": (CONTACT, ("campaign", CAMPAIGN, None), CAMPAIGN_EMAIL),
    "email.spamReported": (CONTACT, ("loop", LOOP, None), LOOP_EMAIL),
}


def fixture(event: str) -> bytes:
    return (FIXTURES / f"{event}.json").read_bytes()


def signed(
    body: bytes,
    *secrets: str,
    at: int | None = None,
    msg_id: str | None = None,
) -> dict[str, str]:
    """The headers Loops sends: one ``v1,`` signature per secret, space-separated."""
    at = int(time.time()) if at is None else at
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(at, UTC)
    signatures = [Webhook(s).sign(msg_id, when, body.decode()) for s in secrets or (SECRET,)]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


def set_up(h: Harness, name: str = "acme", *secrets: str) -> str:
    """A Loops account with these Loops webhook secrets (default: SECRET); its URL's path."""
    if not any(a.name == name for a in registry.list_accounts(h.engine)):
        h.account(name, f"loops_key_{name}_00001234")
    for secret in secrets or (SECRET,):
        registry.add_loops_webhook_secret(h.engine, name, secret)
    return urlsplit(registry.loops_webhook_url(h.engine, h.settings, name)).path


def post(h: Harness, path: str, body: bytes, headers: dict) -> httpx.Response:
    return h.run(h.client.post(path, content=body, headers=headers))


def stored(h: Harness) -> list[dict]:
    with h.engine.connect() as conn:
        rows = conn.execute(sa.select(LoopsEvent).order_by(LoopsEvent.id)).mappings()  # type: ignore[arg-type]
        return [dict(row) for row in rows]


def refused(answer: httpx.Response, status: int = 400) -> str:
    assert answer.status_code == status, answer.text
    assert answer.json()["status"] == "rejected"
    return answer.json()["reason"]


@pytest.fixture
def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Harness(tmp_path, worker=False, BRIDGE_MAX_BODY_BYTES=str(MAX_BODY_BYTES)) as started:
        started.sign_in()
        yield started


# -- receiving -------------------------------------------------------------------------------


def test_every_documented_event_is_stored_with_its_columns(h):
    assert EVENTS == sorted(COLUMNS) == sorted(metrics.LOOPS_EVENTS)
    path = set_up(h)
    for event in EVENTS:
        headers = signed(fixture(event), msg_id=f"msg_{event}")
        answer = post(h, path, fixture(event), headers)
        assert answer.status_code == 200, (event, answer.text)
        assert answer.json()["status"] == "stored"
    rows = stored(h)
    assert [row["event_name"] for row in rows] == EVENTS
    for row in rows:
        event = row["event_name"]
        (contact_id, email), source, (email_id, subject) = COLUMNS[event]
        assert row["webhook_id"] == f"msg_{event}"
        assert row["event_time"] == 1734425918
        assert (row["contact_id"], row["email"], row["user_id"]) == (contact_id, email, None)
        assert (row["source_type"], row["source_id"], row["source_name"]) == source, event
        assert (row["email_id"], row["subject"]) == (email_id, subject), event
        assert row["payload"] == fixture(event)  # the body, byte for byte


def test_emails_are_lowercased_texts_cut_and_an_unknown_event_still_stored(h):
    path = set_up(h)
    body = json.dumps(
        {
            "eventName": "email.somethingNew",
            "eventTime": 1734425918,
            "contactIdentity": {"id": "c1", "email": "  Jane.DOE@Example.com ", "userId": "u_1"},
            "email": {"id": "e1", "subject": "S" * 1500},
            "sourceType": "loop",
            "loopId": "l" * 400,
        }
    ).encode()
    assert post(h, path, body, signed(body)).json()["status"] == "stored"
    (row,) = stored(h)
    assert row["event_name"] == "email.somethingNew"
    assert (row["email"], row["user_id"]) == ("jane.doe@example.com", "u_1")
    assert len(row["subject"]) == 1000 and len(row["source_id"]) == 255


def test_a_retried_event_is_a_duplicate_per_account(h):
    acme, beta = set_up(h, "acme"), set_up(h, "beta")
    body = fixture("email.delivered")
    first = post(h, acme, body, signed(body, msg_id="msg_same"))
    again = post(h, acme, body, signed(body, msg_id="msg_same"))
    assert first.json() == {"status": "stored", "id": first.json()["id"]}
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate" and again.json()["id"] == first.json()["id"]
    # Another account's webhook with the same id is another event.
    assert post(h, beta, body, signed(body, msg_id="msg_same")).json()["status"] == "stored"
    assert len(stored(h)) == 2


def test_while_a_secret_rolls_either_is_accepted_and_a_removed_one_is_refused(h):
    path = set_up(h, "acme", SECRET, ROLLED_SECRET)
    body = fixture("loop.email.sent")
    for secrets in ((SECRET,), (ROLLED_SECRET,), (OTHER_SECRET, ROLLED_SECRET)):
        assert post(h, path, body, signed(body, *secrets)).json()["status"] == "stored"
    assert words(refused(post(h, path, body, signed(body, OTHER_SECRET)))).startswith(
        "The signature does not match any of this account's Loops signing secrets: copy the "
        "signing secret (whsec_...) from Loops, Settings → Webhooks"
    )
    registry.remove_loops_webhook_secret(h.engine, "acme", SECRET)
    h.until(lambda: post(h, path, body, signed(body, SECRET)).status_code == 400)  # cached 2 s
    assert post(h, path, body, signed(body, ROLLED_SECRET)).status_code == 200


@pytest.mark.parametrize(
    ("offset", "accepted", "said"),
    [
        (-250, True, None),
        (250, True, None),
        (-400, False, "The Webhook-Timestamp is more than 300 s old"),
        (400, False, "The Webhook-Timestamp is more than 300 s in the future"),
    ],
)
def test_a_timestamp_is_taken_within_300_seconds_either_way(h, offset, accepted, said):
    path = set_up(h)
    body = fixture("email.opened")
    answer = post(h, path, body, signed(body, at=int(time.time()) + offset))
    if accepted:
        assert answer.json()["status"] == "stored"
    else:
        assert refused(answer).startswith(said)
        assert stored(h) == []


def replace(headers: dict, name: str, value: str | bytes | None) -> dict:
    changed = {k: v for k, v in headers.items() if k != name}
    return changed if value is None else {**changed, name: value}


MALFORMED_HEADERS = [
    ("webhook-id", None, "The request has no Webhook-Id header"),
    ("webhook-timestamp", None, "The request has no Webhook-Timestamp header"),
    ("webhook-signature", None, "The request has no Webhook-Signature header"),
    ("webhook-id", "m" * 256, "The Webhook-Id header is longer than 255 characters"),
    ("webhook-id", "msg\tid", "The Webhook-Id header is longer than 255 characters or holds"),
    ("webhook-timestamp", "1.7e9", "The Webhook-Timestamp header is not a unix time"),
    ("webhook-timestamp", " 1734425918", "The Webhook-Timestamp header is not a unix time"),
    ("webhook-signature", "v2,c2lnbmF0dXJl", "The Webhook-Signature header has no v1 signature"),
    ("webhook-signature", "v1,a,b", "The Webhook-Signature header is malformed"),
    ("webhook-signature", "v1,not*base64", "The Webhook-Signature header is malformed"),
    ("webhook-signature", "v1,é".encode(), "The Webhook-Signature header is malformed"),
    ("webhook-signature", " ".join(["v1,AAAA"] * 11), "The Webhook-Signature header is longer"),
    ("webhook-signature", "v1," + "A" * 2100, "The Webhook-Signature header is longer"),
]


@pytest.mark.parametrize(("name", "value", "said"), MALFORMED_HEADERS)
def test_each_malformed_header_is_refused_with_its_own_reason(h, caplog, name, value, said):
    path = set_up(h)
    body = fixture("email.delivered")
    headers = replace(signed(body), name, value)
    with caplog.at_level(logging.INFO, logger="bridge.loops_webhooks"):
        assert refused(post(h, path, body, headers)).startswith(said)
    assert stored(h) == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bridge.loops_webhooks"]
    assert line.startswith(f"Loops account acme: a Loops webhook was refused (400): {said}")


def test_an_account_without_a_secret_says_where_to_copy_it(h):
    h.account("acme", "loops_key_acme_00001234")
    path = urlsplit(registry.loops_webhook_url(h.engine, h.settings, "acme")).path
    body = fixture("testing.testEvent")
    assert words(refused(post(h, path, body, signed(body)))) == (
        "This Loops account has no signing secret in the bridge yet: copy the signing secret "
        "(whsec_...) from Loops, Settings → Webhooks, and add it to the account in the bridge."
    )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "The body is not JSON, so it is not a Loops event."),
        (b"[1, 2]", "The body is JSON but not an object, so it is not a Loops event."),
        (b'{"eventTime": 1734425918}', "The body is a JSON object without a valid eventName"),
        (
            b'{"eventName": "", "eventTime": 1}',
            "The body is a JSON object without a valid eventName",
        ),
        (b'{"eventName": "email.opened"}', "The body is a JSON object without a valid eventTime"),
        (
            b'{"eventName": "email.opened", "eventTime": "1734425918"}',
            "The body is a JSON object without a valid eventTime",
        ),
        (
            b'{"eventName": "email.opened", "eventTime": 99999999999}',
            "The body is a JSON object without a valid eventTime",
        ),
        (b"\xff\xfe{}", "The request body is not UTF-8 text"),
    ],
)
def test_a_signed_body_that_is_no_loops_event_is_refused_and_logged(h, caplog, body, said):
    path = set_up(h)
    with caplog.at_level(logging.INFO, logger="bridge.loops_webhooks"):
        headers = signed(body if body.isascii() else b"{}")
        answer = post(h, path, body, headers)
    assert refused(answer).startswith(said)
    assert stored(h) == []
    assert any(said in r.getMessage() for r in caplog.records)


def test_a_body_over_the_limit_is_413_and_nothing_is_stored(h):
    path = set_up(h)
    body = json.dumps(
        {"eventName": "email.opened", "eventTime": 1734425918, "pad": "x" * MAX_BODY_BYTES}
    ).encode()
    assert refused(post(h, path, body, signed(body)), 413) == (
        f"body larger than BRIDGE_MAX_BODY_BYTES ({MAX_BODY_BYTES})"
    )
    assert stored(h) == []


MALFORMED_TOKENS = [
    "",
    "lw_" + "A" * 21,
    "lw_" + "A" * 23,
    "lw_" + "A" * 500,
    "lw_AAAAAAAAAAAAAAAAAAAA!!",
    "lw_AAAAAAAAAAAAAAAAAAAAA%00",
    "lw_AAAAAAAAAAAAAAAAAAAAAA/extra",
    "ep_AAAAAAAAAAAAAAAAAAAAAA",
    "..%2F..%2Fadmin",
]


@pytest.mark.parametrize("method", ["POST", "GET", "PUT", "DELETE"])
def test_an_unknown_token_answers_exactly_like_a_malformed_one(h, method):
    known = set_up(h)
    body = fixture("email.delivered")

    def answer(path: str) -> tuple:
        response = h.run(h.client.request(method, path, content=body, headers=signed(body)))
        return response.status_code, tuple(response.headers.raw), response.content

    expected = answer("/loops-webhooks/lw_" + "B" * 22)
    assert expected[0] == (404 if method == "POST" else 405)
    for token in MALFORMED_TOKENS:
        assert answer(f"/loops-webhooks/{token}") == expected, token
    if method != "POST":  # a known token answers any other method the same way too
        assert answer(known) == expected
        assert (b"allow", b"POST") in expected[1]
    assert stored(h) == []


def test_tokens_carry_128_random_bits_in_the_shape_the_route_looks_up():
    tokens = {registry.new_loops_webhook_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        assert TOKEN.fullmatch(token) and len(token) == 3 + 22  # 16 bytes in base64url


def test_deleting_an_endpoint_keeps_what_loops_reported_and_an_account_takes_it_along(h):
    path = set_up(h)
    endpoint_id = stored_endpoint(h.engine, "acme")
    delivery_id = stored_delivery(h.engine, endpoint_id, status="delivered")
    body = fixture("loop.email.sent")
    event_id = post(h, path, body, signed(body)).json()["id"]
    with h.engine.begin() as conn:  # as bridge.outcomes links it
        conn.execute(
            sa.update(LoopsEvent).where(LoopsEvent.id == event_id).values(delivery_id=delivery_id)  # type: ignore[arg-type]
        )
    registry.delete_endpoint(h.engine, endpoint_id)
    (row,) = stored(h)
    assert (row["event_name"], row["delivery_id"]) == ("loop.email.sent", None)

    registry.delete_account(h.engine, registry.list_accounts(h.engine)[0].id)  # type: ignore[arg-type]
    assert stored(h) == []
    with h.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM loops_webhook_secrets")).scalar() == 0


# -- the account's page ----------------------------------------------------------------------


def test_the_account_page_shows_the_url_the_steps_and_the_loops_test(h):
    path = set_up(h, "acme")
    account_id = registry.list_accounts(h.engine)[0].id
    page = h.page(f"/admin/accounts/{account_id}")
    assert page["loops-webhook-url"]["text"] == f"http://bridge.test{path}"
    assert "Settings → Webhooks" in words(page["loops-webhook-steps"]["text"])
    assert words(page["loops-test"]["text"]) == "no test yet"
    assert page["loops-week"]["text"] == "0"

    body = fixture("testing.testEvent")
    assert post(h, path, body, signed(body)).status_code == 200
    body = fixture("email.delivered")
    assert post(h, path, body, signed(body)).status_code == 200
    page = h.page(f"/admin/accounts/{account_id}")
    assert words(page["loops-test"]["text"]).startswith("Loops test received at 20")
    assert page["loops-week"]["text"] == "2"
    # The URL stays what it was when first shown.
    assert page["loops-webhook-url"]["text"] == f"http://bridge.test{path}"


def test_the_latest_refused_webhook_shows_on_the_page_and_in_the_cli(h):
    # Loops' test never arriving, because the secret pasted was another account's: the page
    # says why, where the test would have shown.
    path = set_up(h, "acme")
    account_id = registry.list_accounts(h.engine)[0].id
    assert "loops-refused" not in h.page(f"/admin/accounts/{account_id}").by_id
    body = fixture("testing.testEvent")
    reason = refused(post(h, path, body, signed(body, ROLLED_SECRET)))
    page = h.page(f"/admin/accounts/{account_id}")
    assert words(page["loops-test"]["text"]) == "no test yet"
    shown = words(page["loops-refused"]["text"])
    assert shown.startswith("20") and shown.endswith(f"400: {words(reason)}")
    assert ROLLED_SECRET not in page.text

    # The latest replaces the one before.
    late = refused(post(h, path, body, signed(body, at=int(time.time()) - 3600)))
    assert late != reason
    cli = h.cli("accounts", "loops-webhook", "acme", "--json")["last_refused"]
    assert cli["reason"] == f"400: {late}" and cli["at"].startswith("20")
    text = h.cli("accounts", "loops-webhook", "acme").stdout
    assert f"last refused: {cli['at']}: 400: {late}" in text


def test_secrets_are_added_and_removed_on_the_page_never_shown(h):
    account_id = h.account("acme", "loops_key_acme_00001234")
    url = f"/admin/accounts/{account_id}"
    bad = h.form(f"{url}/loops-webhook-secrets", secret="sk_live_notawhsec")
    assert bad.status_code == 400
    said = words(Page(bad)["secret-error"]["text"])
    assert said.startswith("That does not look like a Loops signing secret")
    assert "Copy it from Loops, Settings → Webhooks → the signing secret." in said
    assert "sk_live_notawhsec" not in bad.text

    added_ = h.form(f"{url}/loops-webhook-secrets", secret=SECRET)
    assert added_.status_code == 303
    page = h.page(url)
    assert "whsec_…AAAA" in page["loops-secrets"]["text"]
    assert SECRET not in page.text and "Added the Loops webhook secret whsec_…AAAA" in page.text
    again = h.form(f"{url}/loops-webhook-secrets", secret=SECRET)
    assert "already has the secret whsec_…AAAA" in words(Page(again)["secret-error"]["text"])

    (remove,) = page.actions(r"/admin/accounts/\d+/loops-webhook-secrets/\d+/remove")
    assert h.form(remove).status_code == 303
    assert registry.loops_webhook_secrets(h.engine, "acme") == []
    assert h.form(remove).status_code == 404  # gone already


# -- the CLI ---------------------------------------------------------------------------------


def test_the_cli_prints_the_url_and_manages_the_secrets(h):
    h.account("acme", "loops_key_acme_00001234")
    shown = h.cli("accounts", "loops-webhook", "acme", "--json")
    assert shown == {
        "account": "acme",
        "url": shown["url"],
        "signing_secrets": [],
        "last_refused": None,
    }
    token = shown["url"].removeprefix("http://bridge.test/loops-webhooks/")
    assert TOKEN.fullmatch(token)
    assert h.cli("connections", "loops-webhook", "acme", "--json")["url"] == shown["url"]

    added_ = h.cli("accounts", "loops-webhook", "acme", "add-secret", "-", "--json", stdin=SECRET)
    assert added_ == {"account": "acme", "secret": "whsec_…AAAA", "added": True}
    h.cli("connections", "loops-webhook", "acme", "add-secret", ROLLED_SECRET)
    text = h.cli("accounts", "loops-webhook", "acme").stdout
    assert text.splitlines()[0] == shown["url"]
    assert "signing secrets: whsec_…AAAA, whsec_…BBBB" in text
    assert SECRET not in text and ROLLED_SECRET not in text

    # The secret without its action: refused, and the secret never echoed.
    missing = h.cli("accounts", "loops-webhook", "acme", ROLLED_SECRET, check=False)
    assert missing.returncode == 2 and ROLLED_SECRET not in missing.stderr + missing.stdout
    assert "Give add-secret or remove-secret before the secret" in missing.stderr
    bad = h.cli("accounts", "loops-webhook", "acme", "add-secret", "whsec_!!", check=False)
    assert bad.returncode == 2
    assert "Copy it from Loops, Settings → Webhooks → the signing secret." in bad.stderr
    done = h.cli("accounts", "loops-webhook", "acme", "remove-secret", "-", stdin=SECRET)
    assert "Removed the Loops webhook secret whsec_…AAAA" in done.stdout
    gone = h.cli("accounts", "loops-webhook", "acme", "remove-secret", SECRET, check=False)
    assert gone.returncode == 2 and "nothing was removed" in gone.stderr
    assert [hint for _, hint in registry.loops_webhook_secrets(h.engine, "acme")] == ["whsec_…BBBB"]
    rotated = h.cli("rotate-secret-key", "--json")
    assert rotated["loops_webhook_secrets"] == 1


# -- metrics and retention -------------------------------------------------------------------


def test_metrics_count_events_and_each_accounts_bounces_and_complaints(h):
    acme, beta = set_up(h, "acme"), set_up(h, "beta")
    before = counted(h.engine)
    sent = [
        (acme, "email.hardBounced"),
        (acme, "email.hardBounced"),
        (acme, "email.softBounced"),
        (acme, "email.spamReported"),
        (beta, "email.delivered"),
    ]
    for path, event in sent:
        body = fixture(event)
        assert post(h, path, body, signed(body)).json()["status"] == "stored"
    body = fixture("email.delivered")
    headers = signed(body)
    post(h, beta, body, headers)
    assert post(h, beta, body, headers).json()["status"] == "duplicate"  # counted once
    unknown = b'{"eventName": "email.somethingNew", "eventTime": 1}'
    post(h, beta, unknown, signed(unknown))
    after = counted(h.engine)
    assert {
        k: v for k, v in added(before, after, "loops_bridge_loops_webhooks_total").items() if v
    } == {
        ("email.hardBounced",): 2,
        ("email.softBounced",): 1,
        ("email.spamReported",): 1,
        ("email.delivered",): 2,
        ("other",): 1,
    }
    assert after["loops_bridge_loops_bounces_total"] == {
        ("acme", "hard"): 2,
        ("acme", "soft"): 1,
        ("beta", "hard"): 0,
        ("beta", "soft"): 0,
    }
    assert after["loops_bridge_loops_complaints_total"] == {("acme",): 1, ("beta",): 0}
    assert "loops_bridge_loops_bounces_total" in h.get("/metrics").text


def test_retention_deletes_old_bodies_and_keeps_the_events(h):
    path = set_up(h)
    for event in ("email.delivered", "email.opened", "email.clicked"):
        body = fixture(event)
        assert post(h, path, body, signed(body)).status_code == 200
    old = time.time() - 40 * 86400
    with h.engine.begin() as conn:  # the first two were received 40 days ago
        conn.execute(
            sa.update(LoopsEvent).where(LoopsEvent.id <= 2).values(received_at=old)  # type: ignore[arg-type]
        )
    assert Queue(h.engine, "pruner", 30.0, 10).prune_payloads(30, batch=1) == 2
    rows = stored(h)
    assert [(r["event_name"], r["payload"] is None) for r in rows] == [
        ("email.delivered", True),
        ("email.opened", True),
        ("email.clicked", False),
    ]
    assert rows[0]["email_id"] == CAMPAIGN_EMAIL[0]  # the timeline entry stays whole


def test_a_contact_deleted_in_loops_is_created_whole_by_its_next_event(tmp_path):
    """Someone deleted the contact in Loops: its next event creates it as a new contact
    (source, user group, mailing lists), not through the event's upsert without them."""
    stripe_secret = "whsec_loopsDeletedContactStripeSecretDD"
    with Harness(tmp_path) as h:
        endpoint = h.endpoint(
            "customer.created,invoice.paid",
            secret=stripe_secret,
            user_group="customers",
            mailing_lists=["cm_billing"],
            loops_events={"invoice.paid": "successfulPayment"},
        )
        path = set_up(h)
        created = h.webhook(
            endpoint, fixture_bytes("constructed/customer.created.event.json"), stripe_secret
        ).json()
        h.settled(1)
        (contact,) = h.loops_get("contacts")
        email = contact["email"]
        gone = h.run(
            h.loops.post(
                "/api/v1/contacts/delete",
                json={"email": email},
                headers={"Authorization": "Bearer loops_key_acme_1234"},
            )
        )
        assert gone.status_code == 200 and h.loops_get("contacts") == []
        deleted = json.loads(fixture("contact.deleted"))
        deleted["contactIdentity"].update(email=email, userId=None)
        body = json.dumps(deleted).encode()
        assert post(h, path, body, signed(body)).status_code == 200

        paid = h.webhook(
            endpoint, fixture_bytes("captured-test-mode/invoice.paid.event.json"), stripe_secret
        ).json()
        (row,) = [r for r in h.settled(2) if r["id"] == paid["id"]]
        assert row["reason"] == "contact created; event successfulPayment sent"
        (contact,) = h.loops_get("contacts")
        assert (contact["source"], contact["userGroup"]) == ("Stripe webhook", "customers")
        assert contact["mailingLists"] == {"cm_billing": True}
        assert created["status"] == "queued"
