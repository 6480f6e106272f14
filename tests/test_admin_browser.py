"""The admin in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the bridge (its app and delivery worker) and the Loops sandbox, each in
uvicorn on loopback in a thread of the test process (``tests.harness.Served``). Skipped,
with how to install it, where Chromium is missing."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import providers
from bridge import db, registry, sandbox
from bridge.app import create_app
from bridge.delivery import Worker
from bridge.settings import load
from tests import leaks
from tests.harness import ADMIN_PASSWORD, Served, settings_env
from tests.helpers import every_event_type, stored_delivery, without_key_types

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed; install it (Debian: apt-get install chromium) "
    "to run the browser tests of the admin",
)
SECRET = "whsec_browserTestSecretGGGGGGGGGGGG"
API_KEY = "loops_browser_key_1234"


class Live:
    """The bridge and the Loops sandbox on loopback, where a browser can reach them."""

    def __init__(self, tmp_path: Path) -> None:
        self.loops = Served(sandbox.create_app())
        sock = Served.bound_socket()
        env = settings_env(
            tmp_path,
            BRIDGE_PUBLIC_URL=f"http://127.0.0.1:{sock.getsockname()[1]}",
            BRIDGE_LOOPS_API_URL=f"{self.loops.url}/api/v1",
        )
        leaks.environment(env)
        self.settings = load(env)
        self.engine = db.connect(self.settings.database_url)
        worker = Worker(self.engine, self.settings, poll_seconds=0.05, shutdown_grace=1.0)
        self.bridge = Served(create_app(self.settings, self.engine, worker=worker), sock)
        self.url = self.bridge.url

    def sandbox(self, what: str) -> Any:
        """What the sandbox saw: ``requests``, ``contacts`` or ``events``."""
        return httpx.get(f"{self.loops.url}/_sandbox/{what}", timeout=5).json()

    def fault(self, **fault: Any) -> None:
        httpx.post(f"{self.loops.url}/_sandbox/faults", json=fault).raise_for_status()

    def stop(self) -> None:
        self.bridge.stop()
        self.loops.stop()
        self.engine.dispose()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    started = Live(tmp_path)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium for the module (starting it is most of a test's time); each test gets
    a context of its own, so no cookie or page carries over."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        started = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield started
        started.close()


@pytest.fixture
def page(browser, live: Live) -> Iterator:
    context = browser.new_context(base_url=live.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    # Chromium logs every answer over 399 as an error; a form sent back with its mistakes is
    # one (400) by design, so answers are checked below, each but a page's own.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )
    yield page
    context.close()
    # No page may break the Content-Security-Policy or throw.
    assert errors == []


def sign_in(page) -> None:
    page.goto("/admin/deliveries")
    assert "/admin/login" in page.url
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.keyboard.press("Enter")  # the keyboard is enough
    page.wait_for_url(lambda url: "/login" not in url)


def test_set_up_and_watch_a_test_event_arrive(page, live: Live):
    sign_in(page)

    page.get_by_role("link", name="Loops accounts").click()
    page.get_by_label("Name").fill("acme")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Add account").click()
    assert API_KEY not in page.content()
    page.get_by_role("button", name="Test the key of acme with Loops").click()
    page.get_by_text("Sandbox team").wait_for()

    page.goto("/admin/endpoints/new")
    page.get_by_label("Name", exact=True).fill("Stripe test")
    # Choosing the provider swaps in its event types, in place: what was typed stays.
    page.get_by_label("Provider").select_option("stripe")
    assert page.get_by_role("button", name="Show its event types").is_hidden()
    page.get_by_text("Stripe event types, and the Loops event for each").wait_for()
    assert page.get_by_label("Name", exact=True).input_value() == "Stripe test"
    page.get_by_label("customer.created", exact=True).check()
    assert page.get_by_label("Loops event for invoice.payment_failed").get_attribute(
        "placeholder"
    ) == ("e.g. failedPayment")
    # A Loops event typed for a type ticks it.
    page.get_by_label("Loops event for invoice.paid").fill("successfulPayment")
    assert page.get_by_label("invoice.paid", exact=True).is_checked()
    page.get_by_label("User group for new contacts").fill("customers")
    page.get_by_label("Mailing lists for new contacts").fill("cm1paying, cm2news")
    page.get_by_label("When a user or customer is deleted").select_option("delete")
    page.get_by_role("button", name="Create endpoint").click()
    page.get_by_text("Waiting for the signing secret").first.wait_for()
    url = page.locator("#endpoint-url").inner_text().strip()
    assert url.startswith(f"{live.url}/webhooks/")
    mapping = " ".join(page.locator("#loops-events").inner_text().split())
    assert mapping == (
        "customer.created → no Loops event: the contact only invoice.paid → successfulPayment"
    )
    assert page.locator("#mailing-lists").inner_text() == "cm1paying, cm2news"
    assert page.locator("#on-delete").inner_text().startswith("delete:")
    (endpoint,) = registry.list_endpoints(live.engine)
    assert endpoint.loops_events == {"invoice.paid": "successfulPayment"}

    page.get_by_label("Paste the signing secret").fill(SECRET)
    page.get_by_role("button", name="Add secret").click()
    assert SECRET not in page.content()
    page.get_by_text("whsec_…GGGG", exact=True).wait_for()

    page.get_by_role("link", name="Send a test event").click()
    page.get_by_label("Event type").select_option("invoice.paid")
    page.get_by_label("Email address").fill("jenny@example.com")
    page.get_by_role("button", name="Send test event").click()
    page.wait_for_url("**/admin/deliveries/*")
    # The page refreshes itself while the delivery is queued.
    page.locator("h1 .status-delivered").wait_for()
    page.get_by_text("/contacts/create").first.wait_for()
    page.get_by_text("/events/send").first.wait_for()

    (contact,) = live.sandbox("contacts")
    assert (contact["email"], contact["userGroup"]) == ("jenny@example.com", "customers")
    assert contact["mailingLists"] == {"cm1paying": True, "cm2news": True}
    assert [e["eventName"] for e in live.sandbox("events")] == ["successfulPayment"]


def stripe_endpoint(live: Live, event_type: str) -> str:
    """A Stripe endpoint for ``event_type``, of the account acme made here; its id."""
    registry.add_account(live.engine, "acme", API_KEY)
    return registry.create_endpoint(
        live.engine,
        name="e",
        account="acme",
        provider="stripe",
        event_types=[event_type],
        signing_secret=SECRET,
    )


def test_retry_a_failed_delivery(page, live: Live):
    endpoint = stripe_endpoint(live, "customer.created")
    live.fault(status=400, count=1)
    sign_in(page)
    page.goto(f"/admin/endpoints/{endpoint}/test")
    page.get_by_label("Email address").fill("jenny@example.com")
    page.get_by_role("button", name="Send test event").click()
    page.locator("h1 .status-failed").wait_for()
    page.get_by_text("Loops answered 400").first.wait_for()

    page.get_by_role("button", name="Retry now").click()
    page.locator("h1 .status-delivered").wait_for()
    assert len(live.sandbox("contacts")) == 1


def test_a_queued_delivery_page_follows_it_but_not_while_a_section_is_open(page, live: Live):
    endpoint = stripe_endpoint(live, "invoice.paid")
    live.fault(status=503)  # Loops down: the delivery stays queued
    sign_in(page)
    page.goto(f"/admin/endpoints/{endpoint}/test")
    page.get_by_label("Email address").fill("jenny@example.com")
    page.clock.install()  # the page's timers run only as the test moves this clock
    page.get_by_role("button", name="Send test event").click()
    page.locator("h1 .status-queued").wait_for()
    with page.expect_event("load"):  # left alone, it reloads itself
        page.clock.run_for(2_500)

    section = page.locator("details").first
    section.locator("summary").click()  # someone reads what the bridge read from the event
    page.clock.run_for(10_000)
    assert section.evaluate("details => details.open")  # still open: no reload took it away
    section.locator("summary").click()  # done reading: the page follows the delivery again
    with page.expect_event("load"):
        page.clock.run_for(2_500)


def test_a_form_sent_back_with_a_mistake_puts_the_focus_on_the_field_to_fix(page, live: Live):
    registry.add_account(live.engine, "acme", API_KEY)
    sign_in(page)
    page.goto("/admin/endpoints/new?provider=stripe")
    page.get_by_label("customer.created", exact=True).check()
    page.get_by_role("button", name="Create endpoint").click()  # without a name
    page.get_by_text("Nothing was saved.").wait_for()
    assert page.evaluate("document.activeElement.getAttribute('aria-invalid')") == "true"
    assert page.evaluate("document.activeElement.name") == "name"


@pytest.mark.parametrize("width", [375, 1280], ids=["phone", "laptop"])
def test_pages_fit_the_screen(page, live: Live, width):
    added = registry.add_account(live.engine, "acme", "k_1234567890")
    page.set_viewport_size({"width": width, "height": 800})
    sign_in(page)
    endpoints = [
        registry.create_endpoint(
            live.engine,
            name=f"{name} endpoint",
            account="acme",
            provider=name,
            event_types=without_key_types(providers.get(name)),
            loops_events={providers.get(name).event_types[0]: "aRatherLongLoopsEventName"},
            mailing_lists=["cm1abcdefghijklmnopqrstu", "cm2abcdefghijklmnopqrstu"],
        )
        for name in providers.names()
    ]
    for endpoint_id in endpoints:  # subscription types too: a key is set first
        every_event_type(live.engine, endpoint_id)
    for path in (
        "/admin/",
        "/admin/deliveries",
        "/admin/endpoints/new",
        "/admin/accounts",
        f"/admin/accounts/{added.id}",
        *(f"/admin/endpoints/{e}" for e in endpoints),
        f"/admin/endpoints/{endpoints[0]}/edit",
    ):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is wider than a {width}px screen by {overflow}px"


# --- layout: what does not fit a screen -------------------------------------------------------

# The words of an element's text that the browser broke across two lines, or that are wider
# than the screen; a line break at a space or a hyphen is no broken word.
BROKEN_WORDS = """(element) => {
  const broken = [];
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const word of node.data.matchAll(/[^\\s-]+/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      const boxes = [...range.getClientRects()].filter((box) => box.width > 0);
      const lines = new Set(boxes.map((box) => Math.round(box.bottom)));
      if (lines.size > 1 || boxes.some((box) => box.right > window.innerWidth)) {
        broken.push(word[0]);
      }
    }
  }
  return broken;
}"""


# How many lines an element's text takes.
LINES = """(element) => {
  const range = document.createRange();
  range.selectNodeContents(element);
  const boxes = [...range.getClientRects()].filter((box) => box.width > 0);
  return new Set(boxes.map((box) => Math.round(box.bottom))).size;
}"""


def broken_words(locator) -> list[str]:
    return [w for element in locator.all() for w in element.evaluate(BROKEN_WORDS)]


def shot(page, name: str) -> None:
    """A screenshot of the whole page into BRIDGE_TEST_SCREENSHOTS, when that names a folder:
    layout is for people to look at, too."""
    folder = os.environ.get("BRIDGE_TEST_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def long_values(live: Live) -> tuple[str, list[int]]:
    """An account, an endpoint and deliveries with long names, addresses and reasons, as
    real ones have: the endpoint's id and the deliveries' ids, newest first."""
    registry.add_account(live.engine, "acme-production-team", "loops_key_abcdefghijkl1234")
    endpoint = registry.create_endpoint(
        live.engine,
        name="Stripe live payments",
        account="acme-production-team",
        provider="stripe",
        event_types=["invoice.paid", "customer.created", "invoice.payment_failed"],
        loops_events={"invoice.paid": "successfulPayment"},
        mailing_lists=["cm1abcdefghijklmnopqrstu"],
        signing_secret=SECRET,
    )
    now = time.time()
    delivered = "contact created; event successfulPayment sent"
    refused = 'Loops answered 400: {"success":false,"message":"Invalid email address provided"}'
    ids = [
        stored_delivery(
            live.engine,
            endpoint,
            status=status,
            reason=reason,
            email=email,
            payload=providers.get("stripe").sample("invoice.paid", email, SECRET)[0],
            received_at=now - n * 3600,
            finished_at=now - n * 3600 + 1,
            next_attempt_at=None,
        )
        for n, (status, reason, email) in enumerate(
            [
                ("delivered", delivered, "jane.doe@acme-corporation.example.com"),
                ("failed", refused, "bob@example.com"),
                ("dead", "Loops answered 503: Service Unavailable", "christopher@example.org"),
            ]
        )
    ]
    return endpoint, ids[::-1]


def test_dates_and_key_hints_stay_on_one_line(page, live: Live):
    long_values(live)
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page)
    page.goto("/admin/deliveries")
    dates = page.locator("tbody td:nth-child(2)")
    assert [d.evaluate(LINES) for d in dates.all()] == [1, 1, 1]
    shot(page, "deliveries-1280")
    page.goto("/admin/accounts")
    hint = page.locator("tbody td code")
    assert hint.inner_text() == "loops_…1234"
    assert hint.evaluate(LINES) == 1
    shot(page, "accounts-1280")


def test_a_phone_shows_each_row_whole_and_labelled(page, live: Live):
    endpoint, _ = long_values(live)
    page.set_viewport_size({"width": 390, "height": 800})
    sign_in(page)
    for path, texts in (
        (
            "/admin/deliveries",
            ["jane.doe@acme-corporation.example.com", "Invalid email address", "Stripe live"],
        ),
        ("/admin/accounts", ["acme-production-team", "loops_…1234"]),
    ):
        page.goto(path)
        # Nothing hides behind sideways scrolling: each cell is on the screen, after its label.
        table = page.locator(".table-wrap")
        assert table.evaluate("e => e.scrollWidth - e.clientWidth") <= 0, path
        headers = page.locator("thead th").all_inner_texts()
        for row in page.locator("tbody tr").all():
            cells = row.locator("td").all()
            labels = [c.evaluate("e => getComputedStyle(e, '::before').content") for c in cells]
            assert labels == [f'"{h}"' for h in headers], path
            for cell in cells:
                box = cell.bounding_box()
                assert box is None or (0 <= box["x"] and box["x"] + box["width"] <= 390), path
        for text in texts:
            assert page.locator("tbody").get_by_text(text).first.is_visible(), (path, text)
        shot(page, f"{path.rsplit('/', 1)[1]}-390")
    buttons = page.get_by_role("button", name="Test the key of acme-production-team with Loops")
    assert buttons.bounding_box()["x"] + buttons.bounding_box()["width"] <= 390

    # The endpoint page: each label above its value, which has the width and breaks no word.
    page.goto(f"/admin/endpoints/{endpoint}")
    facts = page.locator("dl.facts").first
    width = facts.bounding_box()["width"]
    for value in facts.locator("dd").all():
        assert value.bounding_box()["width"] >= 0.9 * width
    assert broken_words(facts.locator("dd")) == []
    shot(page, "endpoint-390")


def test_send_again_keeps_the_first_outcome_and_says_it_is_queued(page, live: Live):
    _, (dead, *_) = long_values(live)
    registry.retry_delivery(live.engine, dead)  # the sandbox delivers it this time
    sign_in(page)
    page.goto(f"/admin/deliveries/{dead}")
    page.locator("h1 .status-delivered").wait_for()
    page.on("dialog", lambda dialog: dialog.accept())  # "Send this event to Loops again?"
    page.get_by_role("button", name="Send again").click()
    notice = page.get_by_role("status").filter(has_text="queued to be sent again")
    assert notice.inner_text().startswith(f"Delivery {dead} is queued to be sent again")
    shot(page, "delivery-queued-again")
    page.locator("h1 .status-delivered").wait_for()
    outcomes = page.locator("#earlier-outcomes li").all_inner_texts()
    assert [o.split(" at ")[0] for o in outcomes] == ["dead", "delivered"]
    assert outcomes[0].endswith("after 0 attempts: Loops answered 503: Service Unavailable")
    assert outcomes[1].endswith("after 1 attempt: contact created; event successfulPayment sent")
    assert page.locator("#why").inner_text() == "event successfulPayment sent"
    shot(page, "delivery-sent-again")
