"""The overview's charts (inline SVG, bridge/admin/overview.py) in headless Chromium at a
phone's width: drawn, labelled, and within a 390 px screen. The bridge and the sandbox are
served as in tests/test_admin_browser.py, whose fixtures this module uses."""

from __future__ import annotations

import time

from sqlmodel import Session

from bridge import outcomes, registry
from bridge.models import DELIVERED, LoopsCall, LoopsEvent
from tests.helpers import stored_delivery
from tests.test_admin_browser import (  # noqa: F401 - the fixtures
    CHROMIUM,
    Live,
    browser,
    live,
    page,
    pytestmark,
    shot,
    sign_in,
)

HOURS_AGO = range(156, -1, -12)  # oldest first, as deliveries are received


def a_week_of_emails(served: Live) -> None:
    """Two endpoints' deliveries over the week, their Loops calls and emails, a few bounced."""
    account = registry.add_account(served.engine, "acme", "k_charts_1234")
    assert account.id is not None
    now = time.time()
    for name in ("Stripe live", "A rather long endpoint name for a phone"):
        endpoint = registry.create_endpoint(
            served.engine,
            name=name,
            account="acme",
            provider="stripe",
            event_types=["invoice.paid"],
            loops_event="successfulPayment",
        )
        for hour in HOURS_AGO:
            at = now - hour * 3600
            delivery = stored_delivery(
                served.engine,
                endpoint,
                status=DELIVERED,
                received_at=at,
                email=f"c{hour}@example.com",
            )
            with Session(served.engine) as session:
                session.add(
                    LoopsCall(
                        delivery_id=delivery,
                        method="POST",
                        path="/events/send",
                        request_body='{"eventName": "successfulPayment"}',
                        status_code=200,
                        started_at=at + 1,
                        duration_ms=20,
                    )
                )
                session.commit()
                outcome = "email.hardBounced" if hour % 36 == 0 else "email.delivered"
                for n, event in enumerate(("loop.email.sent", outcome)):
                    row = LoopsEvent(
                        account_id=account.id,
                        webhook_id=f"msg_{endpoint}_{hour}_{n}",
                        event_name=event,
                        event_time=int(at) + 5 + n,
                        received_at=at + 6 + n,
                        email=f"c{hour}@example.com",
                        email_id=f"em_{endpoint}_{hour}",
                    )
                    session.add(row)
                    session.flush()
                    outcomes.link(session.connection(), row.id)  # type: ignore[arg-type]
                session.commit()


def test_the_week_charts_draw_and_fit_a_phone(page, live: Live):  # noqa: F811
    a_week_of_emails(live)
    page.set_viewport_size({"width": 390, "height": 800})
    sign_in(page)
    page.goto("/admin/")
    drawn = page.evaluate(CHARTS)
    assert len(drawn) == 3  # a funnel per endpoint, and the hours
    for chart in drawn:
        assert chart["role"] == "img" and chart["title"]
        assert chart["width"] > 200 and chart["height"] > 60
        assert 0 <= chart["x"] and chart["x"] + chart["width"] <= 390
        # Every label within its chart, every bar drawn.
        assert all(right <= chart["x"] + chart["width"] + 1 for right in chart["texts"])
        assert any(width > 0 for width in chart["rects"])
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the overview is wider than a 390px screen by {overflow}px"

    funnel = drawn[0]
    assert len(funnel["rects"]) == 6 and funnel["rects"][0] > 50  # the events received
    assert all(width > 0 for width in funnel["rects"][:5]) and funnel["rects"][5] == 0
    # The bounced bar in red (--bad), the others not.
    assert funnel["fills"][4] == "rgb(176, 37, 37)" != funnel["fills"][0]
    assert "bounced" in page.locator("#funnel-1 .alarm").inner_text()
    assert drawn[2]["line"] > 200  # the Loops calls per hour
    assert int(page.locator("#hours-deliveries").inner_text()) == 2 * len(HOURS_AGO)
    shot(page, "overview-charts-390")


# Each chart as drawn: its box, role and title, its texts' right edges, its bars' widths and
# fills, and the width of its line.
CHARTS = """() => [...document.querySelectorAll("svg.chart")].map((svg) => {
  const box = svg.getBoundingClientRect();
  const rects = [...svg.querySelectorAll("rect")];
  const line = svg.querySelector("polyline");
  return {
    x: box.x, width: box.width, height: box.height,
    role: svg.getAttribute("role"), title: svg.querySelector("title")?.textContent,
    texts: [...svg.querySelectorAll("text")].map((t) => t.getBoundingClientRect().right),
    rects: rects.map((r) => r.getBoundingClientRect().width),
    fills: rects.map((r) => getComputedStyle(r).fill),
    line: line ? line.getBoundingClientRect().width : 0,
  };
})"""
