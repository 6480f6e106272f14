"""What the admin shows of Loops' reports (issue 14): a delivery's outcome after Loops, a
contact's timeline and the overview's week, on deliveries made by the real app and worker
with the Loops sandbox, and Loops events stored as the receiver stores them
(tests/test_outcomes.py)."""

from __future__ import annotations

import re

from bridge import outcomes
from bridge.admin.deliveries import clock
from tests.helpers import Page, words
from tests.test_outcomes import account_id, event_sent_at, invoice_endpoint, paid, report


def chain(page) -> str:  # type: ignore[no-untyped-def]
    return words(page["outcome-chain"]["text"])


def test_a_delivery_shows_its_email_delivered_then_opened(harness):
    harness.sign_in()
    delivery = paid(harness, invoice_endpoint(harness))
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    page = harness.page(f"/admin/deliveries/{delivery}")
    assert "No loop email is linked to it yet" in words(page["outcome-waiting"]["text"])
    assert chain(page) == f"successfulPayment sent {clock(at, at)}"

    report(harness, "loop.email.sent", at + 30, account=acme, email_id="em_1")
    report(harness, "email.delivered", at + 31, account=acme, email_id="em_1")
    report(harness, "email.opened", at + 1500, account=acme, email_id="em_1")
    page = harness.page(f"/admin/deliveries/{delivery}")
    times = [clock(t, at) for t in (int(at + 30), int(at + 31), int(at + 1500))]
    assert chain(page) == (
        f"successfulPayment sent {clock(at, at)} → loop email “Thanks for your payment” sent "
        f"{times[0]} → delivered {times[1]} → opened {times[2]}"
    )
    assert "Loop: Payment received." in page.text
    assert "outcome-waiting" not in page.by_id and "outcome-alert-1" not in page.by_id
    # The contact's timeline, from the delivery.
    assert page["contact-link"]["href"] == f"/admin/contacts?email=jo%40example.com&account={acme}"


def test_a_hard_bounce_stands_out(harness):
    harness.sign_in()
    delivery = paid(harness, invoice_endpoint(harness))
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    report(harness, "loop.email.sent", at + 3, account=acme, email_id="em_b")
    report(harness, "email.hardBounced", at + 4, account=acme, email_id="em_b")

    page = harness.page(f"/admin/deliveries/{delivery}")
    alert = words(page["outcome-alert-1"]["text"])
    assert alert.startswith("hard bounced:") and "the contact is now unsubscribed" in alert
    assert 'class="error-box"' in page.source.split('id="outcome-alert-1"')[0].rsplit("<", 1)[1]
    assert chain(page).endswith(f"hard bounced {clock(int(at + 4), at)}")
    assert '<li class="chain-bad">' in page.source


def test_the_contact_view_has_everything_in_one_timeline(harness):
    harness.sign_in()
    delivery = paid(harness, invoice_endpoint(harness))
    acme, at = account_id(harness), event_sent_at(harness, delivery)
    report(harness, "loop.email.sent", at + 3, account=acme, email_id="em_c")
    report(harness, "email.spamReported", at + 9, account=acme, email_id="em_c")
    report(harness, "contact.unsubscribed", at + 10, account=acme, source=None, subject=None)

    log = harness.page("/admin/deliveries")
    assert 'href="/admin/contacts?email=jo%40example.com"' in log.source
    page = harness.page("/admin/contacts?email=JO@example.com")
    assert page["contact-email"]["text"] == "JO@example.com"
    rows = re.findall(r'<tr class="timeline-(\w+)', page.source)
    assert rows == ["delivery", "call", "call", "loops", "loops", "loops"]
    text = words(page["timeline"]["text"])
    assert "invoice.paid received: delivery" in text
    assert "event successfulPayment sent" in text
    assert "loop email sent loop.email.sent “Thanks for your payment” loop Payment received" in text
    assert "contact.unsubscribed" in text
    assert "reported as spam by the contact" in words(page["contact-alerts"]["text"])
    assert f'href="/admin/deliveries/{delivery}"' in page.source


def test_an_empty_or_unknown_address_is_a_helpful_page(harness):
    harness.sign_in()
    empty = harness.page("/admin/contacts")
    assert "Type a contact's email address" in words(empty["contact-empty"]["text"])
    unknown = harness.page("/admin/contacts?email=nobody@example.com&account=99")
    assert "Nothing is known about nobody@example.com" in words(unknown["contact-unknown"]["text"])
    hostile = Page(harness.get("/admin/contacts", email="<script>alert(1)</script>\u202e@x.io"))
    assert hostile.status_code == 200
    assert "<script>alert" not in hostile.source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile.source
    assert "\u202e" not in hostile.source  # the bidi override shown as an escape


def test_the_overview_draws_each_endpoints_week(harness):
    harness.sign_in()
    endpoint = invoice_endpoint(harness)
    first, second = paid(harness, endpoint), paid(harness, endpoint)
    acme, at = account_id(harness), event_sent_at(harness, second)
    report(harness, "loop.email.sent", at + 1, account=acme, email_id="em_1")
    report(harness, "email.delivered", at + 2, account=acme, email_id="em_1")
    report(harness, "loop.email.sent", at + 3, account=acme, email_id="em_2")
    report(harness, "email.hardBounced", at + 4, account=acme, email_id="em_2")
    assert outcomes.for_delivery(harness.engine, first)[-1]["event"] == "email.hardBounced"

    page = harness.page("/admin/")
    assert words(page["funnel-1-desc"]["text"]) == (
        "Received: 2. Delivered to Loops: 2. Emails sent: 2. Delivered: 1. Bounced: 1. "
        "Complained: 0."
    )
    assert words(page["funnel-1-alarm"]["text"]) == "1 bounced"
    assert "chart-alarming" in page["funnel-1"]["class"]
    assert page["funnel-1-title"]["text"] == "Stripe acme, last 7 days"
    svg = page.source.split('id="funnel-1"')[1].split("</svg>")[0]
    assert 'role="img"' in svg and 'viewBox="0 0 360 144"' in svg and 'width="100%"' in svg
    assert svg.count("<rect") == 6 and 'class="bar-bad"' in svg
    calls = len(harness.loops_calls())
    assert (page["hours-deliveries"]["text"], page["hours-calls"]["text"]) == ("2", str(calls))
    assert "2 deliveries and " in page["hours-desc"]["text"]
    assert "<polyline" in page.source and "<script" not in page.source.split("</head>")[1]


def test_the_overview_week_without_endpoints_or_events(offline):
    page = offline.page("/admin/")
    assert "funnel-1" not in page.by_id and "hours" not in page.by_id
    offline.endpoint(name="Quiet")
    page = offline.page("/admin/")
    assert words(page["funnel-1-desc"]["text"]).startswith("Received: 0. Delivered to Loops: 0.")
    assert "funnel-1-alarm" not in page.by_id
    assert page["hours-deliveries"]["text"] == "0"
