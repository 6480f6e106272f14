"""The admin against what an attacker controls: numbers in its URLs too large for any id,
customer text holding control and bidi characters, headers it was never told about, and a
page that fails. Signed in, in-process (tests/harness.py), on SQLite and PostgreSQL where the
database is what answers."""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

import providers
from bridge import vault
from bridge.admin.headers import SECURITY_HEADERS
from tests.harness import Harness, stripe_event
from tests.helpers import signed_headers, stored_delivery

SECRET = "whsec_adminHostileSecretHHHHHHHHHHH"
CLERK_SECRET = "whsec_YWRtaW5Ib3N0aWxlQ2xlcmtTZWNyZXQx"
CLERK_OTHER_SECRET = "whsec_bm90VGhpc0VuZHBvaW50c1NlY3JldDAw"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
# Past every id column: PostgreSQL's INTEGER (2**31), SQLite's (2**63), then far past both.
HUGE = ("2147483648", "9223372036854775808", "9999999999999999999999")


@pytest.fixture(params=["sqlite", "postgresql"])
def admin(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Signed in, without the delivery worker; on SQLite or PostgreSQL."""
    env = {}
    if request.param == "postgresql":
        env = {
            "BRIDGE_DATABASE_URL": request.getfixturevalue("postgres_url"),
            "BRIDGE_SECRET_KEY": vault.new_key(),
        }
    with Harness(tmp_path, worker=False, **env) as started:
        started.sign_in()
        yield started


def assert_page(response, status: int) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, (response.status_code, response.text[-500:])
    assert "Traceback" not in response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name


# --- numbers in URLs ---------------------------------------------------------------------------


def test_an_id_no_row_can_have_is_not_found_at_every_admin_url_that_takes_one(admin: Harness):
    endpoint = admin.endpoint("invoice.paid", secret=SECRET)
    stored_delivery(admin.engine, endpoint, status="failed", reason="Loops answered 400")
    for number in (*HUGE, "-1", "٣", "²", "1e3"):
        for url in (
            f"/admin/deliveries/{number}",
            f"/admin/accounts/{number}",
        ):
            assert_page(admin.get(url), 404)
        for url in (
            f"/admin/deliveries/{number}/retry",
            f"/admin/deliveries/{number}/send-again",
            f"/admin/accounts/{number}/rate-limit",
            f"/admin/accounts/{number}/api-key",
            f"/admin/accounts/{number}/test",
            f"/admin/accounts/{number}/delete",
            f"/admin/endpoints/{endpoint}/secrets/{number}/remove",
        ):
            assert_page(admin.form(url, rate_limit="5", api_key="loops_key_new_5678"), 404)
    assert admin.page("/admin/accounts/1").status_code == 200  # the real ones still answer


def test_a_page_of_the_log_past_every_id_is_a_400_page(admin: Harness):
    endpoint = admin.endpoint("invoice.paid", secret=SECRET)
    delivery = stored_delivery(admin.engine, endpoint)
    for number in (*HUGE, "-2147483649", "-9999999999999999999999"):
        for bound in ("before", "after"):
            answer = admin.get(f"/admin/deliveries?{bound}={number}")
            assert_page(answer, 400)
            assert "take a delivery id" in html.unescape(answer.text)
    # Within the range, a bound is a bound, whatever rows exist.
    shown = admin.get("/admin/deliveries?after=-2147483648")
    assert_page(shown, 200)
    assert f'href="/admin/deliveries/{delivery}"' in shown.text


# --- the error page ----------------------------------------------------------------------------


def test_the_500_page_carries_the_security_headers(admin: Harness):
    endpoint = admin.endpoint("invoice.paid", secret=SECRET)
    with admin.engine.begin() as conn:  # a page that cannot be shown: its table is gone
        conn.execute(text("DROP TABLE rejections"))
    answer = admin.get(f"/admin/endpoints/{endpoint}/rejections")
    assert_page(answer, 500)
    assert "The bridge could not show this page" in answer.text


# --- what customers and senders wrote ------------------------------------------------------------


def test_control_and_bidi_characters_in_a_name_show_escaped(tmp_path: Path):
    with Harness(tmp_path, worker=False) as admin:
        admin.sign_in()
        endpoint = admin.endpoint("customer.created", secret=SECRET)
        name = "Ann \u202egpj.exe\x00\x1b[2J\u2066"
        body = stripe_event(CUSTOMER_CREATED, "evt_bidi", email="ann@example.com", name=name)
        accepted = admin.webhook(endpoint, body, SECRET)
        assert accepted.json()["status"] == "queued", accepted.text
        shown = admin.page(f"/admin/deliveries/{accepted.json()['id']}")
    for raw in ("\u202e", "\x00", "\x1b", "\u2066"):
        assert raw not in shown.source
    name_row = shown.source.split("<dt>Name</dt>", 1)[1].split("</dd>", 1)[0]
    assert r"gpj.exe\x00\x1b[2J\u2066" in html.unescape(name_row)
    assert r"\u202egpj.exe" in html.unescape(name_row)
    assert r'"name": "Ann \u202egpj.exe\u0000\u001b[2J\u2066"' in shown.text  # the payload


def test_refused_requests_show_only_the_headers_known_to_be_harmless(tmp_path: Path):
    secret_value = "hook-secret-8f2b7c1d9e0a4b6c"
    signature = "sha256=" + "ab" * 32
    with Harness(tmp_path, worker=False) as admin:
        admin.sign_in()
        endpoint = admin.endpoint("invoice.paid", secret=SECRET)
        body = stripe_event("captured-test-mode/invoice.paid.event.json", "evt_refused")
        headers = {
            **signed_headers(body, "whsec_notThisEndpointsSecretXXXXXXXX"),
            "X-Webhook-Secret": secret_value,
            "X-Hub-Signature-256": signature,
            "User-Agent": "Stripe/1.0 \u00e2\u0080\u00ae",  # the bytes of U+202E, as Latin-1
        }
        refused = admin.run(
            admin.client.post(
                f"/webhooks/{endpoint}",
                content=body,
                headers={k: v.encode("latin-1") for k, v in headers.items()},
            )
        )
        assert refused.status_code == 400
        shown = admin.page(f"/admin/endpoints/{endpoint}/rejections")
        with admin.engine.connect() as conn:
            stored = json.loads(conn.execute(text("SELECT headers FROM rejections")).scalar_one())
    shown_text = html.unescape(shown.source)
    assert secret_value not in shown_text and "ab" * 32 not in shown_text
    for name, value in (("x-webhook-secret", secret_value), ("x-hub-signature-256", signature)):
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        assert f"{name}: [{len(value)} chars, sha256 {digest}]" in shown_text
        assert stored[name] == f"[{len(value)} chars, sha256 {digest}]"  # so it is stored
    assert "content-type: application/json; charset=utf-8" in shown_text
    assert r"user-agent: Stripe/1.0 â\x80®" in shown_text  # shown, its control escaped
    assert "stripe-signature: t=" in shown_text and ",v1=…" in shown_text  # Stripe's way


def test_a_clerk_refusal_shows_its_event_id_and_time(tmp_path: Path):
    clerk = providers.get("clerk")
    with Harness(tmp_path, worker=False) as admin:
        admin.sign_in()
        endpoint = admin.endpoint("user.created", provider="clerk", secret=CLERK_SECRET)
        body, headers = clerk.sample("user.created", "jo@example.com", CLERK_OTHER_SECRET)
        refused = admin.run(
            admin.client.post(f"/webhooks/{endpoint}", content=body, headers=headers)
        )
        assert refused.status_code == 400
        shown = html.unescape(admin.page(f"/admin/endpoints/{endpoint}/rejections").source)
    assert f"svix-id: {headers['svix-id']}" in shown
    assert f"svix-timestamp: {headers['svix-timestamp']}" in shown
    assert "svix-signature: v1,…" in shown
