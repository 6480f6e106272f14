"""A Stripe endpoint's API key and its import of Stripe's customers, on the endpoint's admin
page: forms POSTed to the real app in-process (tests/harness.py), its delivery worker against
the Loops sandbox, and the Stripe API stand-in served on loopback (tests/stripe_standin.py),
which the import, running in a thread of the app as it does in ``serve``, reads from."""

from __future__ import annotations

import json
import threading

import pytest

from bridge import backfill
from bridge.stripe_api import StripeAPI
from tests import stripe_standin
from tests.harness import Harness
from tests.helpers import Page, signed_headers, words
from tests.stripe_standin import StripeStandin

KEY = "rk_test_51AdminStripeKeyReadOnly00cc22dd"  # shown only as rk_test_…22dd
NO_EVENTS_KEY = "rk_test_51AdminStripeKeyNoEvents0ee33ff"
SECRET_KEY = "sk_test_51AdminStripeSecretKey000gg44hh"
UNKNOWN_KEY = "rk_test_51AdminStripeKeyNobodyKnows0ii55"
SECRET = "whsec_admin_stripe_test_secret_0123456789"


@pytest.fixture
def stripe(stripe_standin: StripeStandin) -> StripeStandin:
    stripe_standin.add_key(KEY)
    stripe_standin.add_key(NO_EVENTS_KEY, {"rak_customer_read"})
    stripe_standin.add_key(SECRET_KEY)
    return stripe_standin


@pytest.fixture
def admin(importing: Harness) -> Harness:
    importing.sign_in()
    return importing


def stripe_endpoint(admin: Harness) -> str:
    return admin.endpoint("customer.created,invoice.paid", secret=SECRET)


def posted(admin: Harness, url: str, **fields: str) -> Page:
    """POST an admin form that answers 303 back to the endpoint's page; that page, with the
    notice the answer left."""
    answer = admin.form(url, **fields)
    assert answer.status_code == 303, answer.text[:500]
    return admin.page(answer.headers["location"])


def notice(page: Page) -> str:
    return words(page["notice"]["text"])


def set_key(admin: Harness, endpoint_id: str, key: str = KEY) -> Page:
    return posted(admin, f"/admin/endpoints/{endpoint_id}/stripe-key", stripe_key=key)


def test_a_key_is_checked_with_stripe_then_shown_only_as_its_hint(admin, stripe):
    endpoint_id = stripe_endpoint(admin)
    before = admin.page(f"/admin/endpoints/{endpoint_id}")
    assert before["stripe-key-hint"]["text"] == "none yet"
    assert "Customers: Read" in before["stripe-key-steps"]["text"]
    assert "Add a Stripe API key above first" in before["import-needs-key"]["text"]
    assert "import-start" not in before.by_id

    page = set_key(admin, endpoint_id)

    # A restricted key may not read the account: Stripe's refusal still names it.
    assert notice(page) == (
        "Saved the Stripe API key rk_test_…22dd (Stripe account acct_1StandinTestAcct, test "
        "mode). Stripe took it: it may read customers and events."
    )
    assert page["stripe-key-hint"]["text"] == "rk_test_…22dd"
    assert page["stripe-key"].get("value") is None
    assert "import-start" in page.by_id
    assert [c.path for c in stripe.calls()] == ["/v1/account", "/v1/customers", "/v1/events"]

    # A secret key works, with the advice that a restricted key is safer.
    page = set_key(admin, endpoint_id, SECRET_KEY)
    assert "Saved the Stripe API key sk_test_…44hh (Stripe account Stand-in Test Co" in (
        notice(page)
    )
    assert "Note: The key sk_test_…44hh is a secret key" in notice(page)
    assert "A restricted key is safer" in notice(page)
    assert page["stripe-key-hint"]["text"] == "sk_test_…44hh"

    removed = posted(admin, f"/admin/endpoints/{endpoint_id}/stripe-key/remove")
    assert notice(removed).startswith("Removed the Stripe API key")
    assert removed["stripe-key-hint"]["text"] == "none yet"
    for key in (KEY, SECRET_KEY):
        assert key[8:] not in removed.source


def test_a_refused_key_says_why_and_is_not_kept(admin, stripe):
    endpoint_id = stripe_endpoint(admin)
    url = f"/admin/endpoints/{endpoint_id}/stripe-key"

    for key, why in (
        (NO_EVENTS_KEY, "may not read what the bridge needs: it lacks Events: Read"),
        (UNKNOWN_KEY, "rk_test_…ii55"),
        ("pk_test_51AdminPublishableKey000jj66kk", "is a publishable key"),
        ("", "Paste the key first"),
    ):
        refused = admin.form(url, stripe_key=key)
        assert refused.status_code == 400, key
        page = Page(refused)
        assert why in page["stripe-key-error"]["text"], (key, page["stripe-key-error"])
        assert page["stripe-key"]["aria-invalid"] == "true"
        assert "value" not in page["stripe-key"]
        assert not key or key[8:] not in refused.text
        assert admin.page(f"/admin/endpoints/{endpoint_id}")["stripe-key-hint"]["text"] == (
            "none yet"
        )

    # Unchecked, the key is saved as it is (Stripe out of reach, say).
    unchecked = posted(admin, url, stripe_key=UNKNOWN_KEY, no_check="on")
    assert "without checking it with Stripe" in notice(unchecked)
    assert unchecked["stripe-key-hint"]["text"] == "rk_test_…ii55"


def test_a_key_of_the_other_mode_than_the_endpoints_events_is_refused(admin, stripe):
    endpoint_id = stripe_endpoint(admin)
    live = stripe_standin.event("customer.created", stripe_standin.customer(1, livemode=True))
    body = json.dumps(live).encode()
    answer = admin.run(
        admin.client.post(
            f"/webhooks/{endpoint_id}", content=body, headers=signed_headers(body, SECRET)
        )
    )
    assert answer.status_code == 200

    refused = admin.form(f"/admin/endpoints/{endpoint_id}/stripe-key", stripe_key=KEY)

    assert refused.status_code == 400
    assert words(Page(refused)["stripe-key-error"]["text"]) == (
        "The key rk_test_…22dd is a test-mode key, but this endpoint receives live-mode "
        "events: paste a key of the same mode."
    )


def import_status(page: Page) -> dict[str, str]:
    fields = ("state", "customers", "imported", "created", "known", "skipped", "failed")
    return {name: words(page[f"import-{name}"]["text"]) for name in fields}


def test_a_preview_counts_what_an_import_would_do_and_changes_nothing(admin, stripe):
    stripe.add(stripe_standin.customers(130, without_email_every=13))
    endpoint_id = stripe_endpoint(admin)
    page_url = f"/admin/endpoints/{endpoint_id}"
    admin.cli("accounts", "set", "acme", "--rate-limit", "10")
    assert "import-preview" not in admin.page(page_url).by_id  # no key yet: nothing to read
    assert notice(posted(admin, f"{page_url}/import/preview")).startswith(
        f"No preview. Endpoint {endpoint_id} has no Stripe API key"
    )
    set_key(admin, endpoint_id)
    assert "import-preview" in admin.page(page_url).by_id

    previewed = posted(admin, f"{page_url}/import/preview")

    assert notice(previewed) == (
        "Preview: Would import 120 customers into Loops (130 read from Stripe; 10 skipped: "
        "deleted or without an email; 0 already in Loops). At the account's 10 requests/s "
        "that takes about 12 s. Nothing was changed."
    )
    assert admin.deliveries() == [] and "import-status" not in previewed.by_id
    # Stripe refusing the key: said, the key shown only as its hint.
    revoked = "rk_test_51RevokedKeyNotKnown000000000hh66"
    admin.cli("endpoints", "set-stripe-key", endpoint_id, "-", "--no-check", stdin=revoked)
    refused = notice(posted(admin, f"{page_url}/import/preview"))
    assert refused.startswith("No preview.") and "rk_test_…hh66" in refused
    assert revoked not in refused


def test_an_import_runs_is_cancelled_continues_and_finishes(admin, stripe):
    stripe.add(stripe_standin.customers(150, without_email_every=10))  # 2 pages
    endpoint_id = stripe_endpoint(admin)
    page_url = f"/admin/endpoints/{endpoint_id}"
    # customer1@example.com is in Loops already: a webhook brought it.
    known = json.dumps(stripe_standin.event("customer.created", stripe_standin.customer(1)))
    assert admin.webhook(endpoint_id, known.encode(), SECRET).status_code == 200
    admin.settled(1)
    set_key(admin, endpoint_id)
    # Paused, nothing goes to Loops: what the cancel sets aside is all the first page queued.
    posted(admin, f"{page_url}/pause")
    first_page_read = stripe.hold(page=2)

    started = posted(admin, f"{page_url}/import")

    assert notice(started).startswith("Started importing the customers Stripe has into Loops.")
    assert "no Loops event is sent" in notice(started)
    assert first_page_read.reached.wait(10)
    running = admin.page(page_url)
    assert import_status(running) == {
        "state": "running",
        "customers": "100",
        "imported": "90",
        "created": "0",
        "known": "0",
        "skipped": "10",
        "failed": "0",
    }
    assert words(running["import-pending"]["text"]) == (
        "90: about 1 s at the account's 200 requests/s, once you resume this "
        "endpoint (it is paused)"
    )
    assert f'data-refresh="5" data-refresh-url="{page_url}"' in running.source
    assert "import-cancel" in running.by_id and "import-start" not in running.by_id
    again = posted(admin, f"{page_url}/import")
    assert notice(again).startswith("Not started. This server is still running")

    cancelled = posted(admin, f"{page_url}/import/cancel")

    assert notice(cancelled) == (
        "Cancelled the import: it stops after the page it is reading from Stripe. 90 "
        "customers queued but not yet sent to Loops were set aside; Continue sends them, "
        "and imports the rest."
    )
    assert cancelled["import-state"]["text"] == "stopping"
    assert "import-continue" not in cancelled.by_id
    set_aside = admin.deliveries(endpoint_id=endpoint_id, status="ignored")
    assert len(set_aside) == 90 and {r["reason"] for r in set_aside} == {backfill.CANCELLED_REASON}
    first_page_read.release()
    stopped = admin.until(
        lambda: (p := admin.page(page_url)).by_id.get("import-continue") and p,
        what="the cancelled import to end",
    )
    assert stopped["import-state"]["text"] == "cancelled"
    assert "data-refresh" not in stopped.source
    assert stopped["import-customers"]["text"] == "100"  # the page it was reading is not kept

    posted(admin, f"{page_url}/resume")
    continued = posted(admin, f"{page_url}/import")

    assert notice(continued).startswith(
        "Continuing the import where it stopped (100 customers read so far)"
    )
    admin.settled(1 + 134)  # the webhook's delivery, and one per customer imported
    done = admin.until(
        lambda: (p := admin.page(page_url))["import-state"]["text"] == "done" and p,
        what="the import to say it is done",
    )
    assert import_status(done) == {
        "state": "done",
        "customers": "150",
        "imported": "134",
        "created": "134",
        "known": "1",
        "skipped": "15",
        "failed": "0",
    }
    assert "import-problem" not in done.by_id
    assert done["import-start"]["text"].strip() == "Import again"
    assert "import-cancel" not in done.by_id and "data-refresh" not in done.source
    contacts = {c["email"] for c in admin.loops_get("contacts")}
    assert len(contacts) == 135 and "customer9@example.com" not in contacts
    # The imported contacts got no Loops event: only the webhook's customer could have.
    assert not [e for e in admin.loops_get("events") if e.get("email") != "customer1@example.com"]


def test_an_import_another_process_runs_is_shown_and_not_started_twice(admin, stripe):
    stripe.add(stripe_standin.customers(150))
    endpoint_id = stripe_endpoint(admin)
    page_url = f"/admin/endpoints/{endpoint_id}"
    set_key(admin, endpoint_id)
    held = stripe.hold(page=2)
    # As `loops-bridge backfill` would run it.
    api = StripeAPI(KEY, admin.settings.stripe_api_url)
    cli = threading.Thread(target=backfill.run, args=(admin.engine, endpoint_id, api))
    cli.start()
    assert held.reached.wait(10)

    refused = posted(admin, f"{page_url}/import")

    assert notice(refused).startswith(
        f"Not started. An import of endpoint {endpoint_id} is already running"
    )
    assert refused["import-state"]["text"] == "running"
    held.release()
    cli.join(10)
    assert admin.page(page_url)["import-state"]["text"] == "done"


def test_a_stopped_import_says_why(admin, stripe):
    stripe.add(stripe_standin.customers(10))
    endpoint_id = stripe_endpoint(admin)
    page_url = f"/admin/endpoints/{endpoint_id}"
    # Saved unchecked: Stripe refuses it once the import asks for customers.
    posted(admin, f"{page_url}/stripe-key", stripe_key=UNKNOWN_KEY, no_check="on")

    posted(admin, f"{page_url}/import")

    stopped = admin.until(
        lambda: (p := admin.page(page_url)).by_id.get("import-continue") and p,
        what="the import to stop",
    )
    assert stopped["import-state"]["text"] == "interrupted"
    assert "rk_test_…ii55" in stopped["import-problem"]["text"]


def test_a_clerk_endpoint_has_no_stripe_sections(admin, stripe):
    endpoint_id = admin.endpoint("user.created", provider="clerk", name="Clerk")
    page = admin.page(f"/admin/endpoints/{endpoint_id}")
    assert "Stripe API key" not in page.text and "Import existing customers" not in page.text
    for action in ("stripe-key", "stripe-key/remove", "import", "import/cancel"):
        refused = admin.form(f"/admin/endpoints/{endpoint_id}/{action}", stripe_key=KEY)
        assert refused.status_code == 400, action
        assert "only a Stripe endpoint has a Stripe API key" in words(refused.text)
    assert admin.page(f"/admin/endpoints/{endpoint_id}")  # nothing changed, nothing broke
    assert admin.form("/admin/endpoints/nope/import").status_code == 404


def test_without_a_key_an_import_is_not_started(admin, stripe):
    endpoint_id = stripe_endpoint(admin)
    refused = posted(admin, f"/admin/endpoints/{endpoint_id}/import")
    assert notice(refused).startswith(f"Not started. Endpoint {endpoint_id} has no Stripe API key")
    assert "import-status" not in refused.by_id
    nothing = posted(admin, f"/admin/endpoints/{endpoint_id}/import/cancel")
    assert notice(nothing).startswith("Nothing cancelled.")
