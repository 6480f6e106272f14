"""Refused webhooks where an admin looks first: the overview names each endpoint that refused
requests in the last 24 hours, with the latest reason, and one list holds every endpoint's.

The bridge runs in-process without its worker (tests/harness.py); the requests are real
Stripe events signed with a secret that is not the endpoint's, as after a wrong paste."""

from __future__ import annotations

import re
import time

from sqlmodel import Session

from bridge.inbox import REJECTIONS_KEPT
from bridge.models import Rejection
from tests.harness import Harness
from tests.helpers import fixture_bytes, words

SECRET = "whsec_rejectionsSecretAAAAAAAAAAAA"
WRONG = "whsec_pastedFromAnotherEndpointBBBB"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"


def refused(bridge: Harness, endpoint_id: str, times: int) -> None:
    for _ in range(times):
        answer = bridge.webhook(endpoint_id, fixture_bytes(INVOICE_PAID), WRONG)
        assert answer.status_code == 400, answer.text


def old_rejection(bridge: Harness, endpoint_id: str, days: float, reason: str) -> None:
    with Session(bridge.engine) as session:
        session.add(
            Rejection(
                endpoint_id=endpoint_id,
                at=time.time() - days * 86400,
                status_code=400,
                reason=reason,
                headers="{}",
            )
        )
        session.commit()


def test_the_overview_names_each_endpoint_that_refused_requests_today(offline: Harness):
    live = offline.endpoint(name="Stripe live", secret=SECRET)
    test = offline.endpoint(name="Stripe test", secret=SECRET)
    quiet = offline.endpoint(name="Stripe old", secret=SECRET)
    start = offline.page("/admin/")
    assert "rejected-recently" not in start.by_id
    assert "No webhook was rejected in the last 24 hours" in start["rejected-none"]["text"]

    old_rejection(offline, quiet, 2, "refused two days ago")
    refused(offline, live, 3)
    refused(offline, test, 1)
    page = offline.page("/admin/")
    assert "rejected-none" not in page.by_id
    rows = [words(page[f"rejected-{n}"]["text"]) for n in (1, 2)]
    assert "rejected-3" not in page.by_id  # the old one is not of the last 24 hours
    assert rows[0].startswith("Stripe test: 1 rejected, the latest ")
    assert rows[1].startswith("Stripe live: 3 rejected, the latest ")
    for row in rows:
        assert "No signature in the Stripe-Signature header matches this endpoint's" in row
    assert f'href="/admin/endpoints/{live}/rejections">3 rejected</a>' in page.source
    assert 'href="/admin/rejections"' in page.source


def test_an_endpoint_whose_whole_log_is_of_today_shows_a_count_with_a_plus(offline: Harness):
    endpoint = offline.endpoint(name="Flooded", secret=SECRET)
    for n in range(REJECTIONS_KEPT):  # one a minute, the oldest first
        old_rejection(offline, endpoint, (REJECTIONS_KEPT - n) / 1440, f"reason {n}")
    said = words(offline.page("/admin/")["rejected-1"]["text"])
    assert said.startswith(f"Flooded: {REJECTIONS_KEPT}+ rejected, the latest ")
    assert said.endswith(" ago: reason 49")


def test_one_list_holds_every_endpoints_rejections_newest_first(offline: Harness):
    live = offline.endpoint(name="Stripe live", secret=SECRET)
    test = offline.endpoint(name="Stripe test", secret=SECRET)
    old_rejection(offline, test, 3, "refused three days ago")
    refused(offline, live, 2)
    page = offline.page("/admin/rejections")
    listed = re.findall(
        r'<td><a href="/admin/endpoints/([^/]+)/rejections">([^<]+)</a></td>', page.source
    )
    assert listed == [(live, "Stripe live"), (live, "Stripe live"), (test, "Stripe test")]
    assert page["main"]["text"].count("matches this endpoint's signing secret") == 2
    assert "refused three days ago" in page.text
    assert "every endpoint's" in offline.page(f"/admin/endpoints/{test}/rejections").text

    for endpoint_id in (live, test):
        offline.form(f"/admin/endpoints/{endpoint_id}/delete")  # their logs go with them
    assert "No refused requests." in offline.page("/admin/rejections").text
