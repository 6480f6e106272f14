"""The admin in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the real bridge and the Loops sandbox on loopback. Skipped, with how to
install it, where Chromium is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.servers import ADMIN_PASSWORD, Bridge, Sandbox

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed; install it (Debian: apt-get install chromium) "
    "to run the browser tests of the admin",
)
SECRET = "whsec_browserTestSecretGGGGGGGGGGGG"


@pytest.fixture
def page(bridge: Bridge) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
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
        context = browser.new_context(base_url=bridge.url)
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page
        # No page may break the Content-Security-Policy or throw.
        assert errors == []
        browser.close()


def sign_in(page) -> None:
    page.goto("/admin/deliveries")
    assert "/admin/login" in page.url
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.keyboard.press("Enter")  # the keyboard is enough
    page.wait_for_url(lambda url: "/login" not in url)


def test_set_up_and_watch_a_test_event_arrive(page, sandbox: Sandbox, env):
    sign_in(page)

    page.get_by_role("link", name="Loops accounts").click()
    page.get_by_label("Name").fill("acme")
    page.get_by_label("API key").fill("loops_browser_key_1234")
    page.get_by_role("button", name="Add account").click()
    assert "loops_browser_key_1234" not in page.content()
    page.get_by_role("button", name="Test the key of acme with Loops").click()
    page.get_by_text("Sandbox team").wait_for()

    page.goto("/admin/endpoints/new")
    page.get_by_label("Name", exact=True).fill("Stripe test")
    page.get_by_label("customer.created").check()
    page.get_by_label("invoice.paid").check()
    page.get_by_label("User group for new contacts").fill("customers")
    page.get_by_label("Loops event to send").fill("successfulPayment")
    page.get_by_role("button", name="Create endpoint").click()
    page.get_by_text("Waiting for the signing secret").first.wait_for()
    url = page.locator("#endpoint-url").inner_text().strip()
    assert url.startswith(f"{env['BRIDGE_PUBLIC_URL']}/webhooks/")

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

    (contact,) = sandbox.get("contacts")
    assert (contact["email"], contact["userGroup"]) == ("jenny@example.com", "customers")
    assert [e["eventName"] for e in sandbox.get("events")] == ["successfulPayment"]


def test_retry_a_failed_delivery(page, sandbox: Sandbox, env):
    from tests.servers import cli

    cli(env, "accounts", "add", "--name", "acme", "--api-key", "loops_browser_key_1234")
    endpoint = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "e",
        "--account",
        "acme",
        "--events",
        "customer.created",
        "--signing-secret",
        SECRET,
        "--json",
    )["id"]
    sandbox.post("faults", {"status": 400, "count": 1}).raise_for_status()
    sign_in(page)
    page.goto(f"/admin/endpoints/{endpoint}/test")
    page.get_by_label("Email address").fill("jenny@example.com")
    page.get_by_role("button", name="Send test event").click()
    page.locator("h1 .status-failed").wait_for()
    page.get_by_text("Loops answered 400").first.wait_for()

    page.get_by_role("button", name="Retry now").click()
    page.locator("h1 .status-delivered").wait_for()
    assert len(sandbox.get("contacts")) == 1


@pytest.mark.parametrize("width", [375, 1280], ids=["phone", "laptop"])
def test_pages_fit_the_screen(page, env, width):
    from tests.servers import cli

    added = cli(env, "accounts", "add", "--name", "acme", "--api-key", "k_1234567890", "--json")
    page.set_viewport_size({"width": width, "height": 800})
    sign_in(page)
    for path in (
        "/admin/",
        "/admin/deliveries",
        "/admin/endpoints/new",
        "/admin/accounts",
        f"/admin/accounts/{added['id']}",
    ):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is wider than a {width}px screen by {overflow}px"
