"""A delivery's page with its Loops calls: every call of a delivery called a few times, and
for one called thousands of times (a refused key probed every 30 s for 72 hours) the first
and the latest calls with the number made between them, read without loading the others.

The bridge runs in-process without its worker (tests/harness.py); the calls are written as
the worker writes them."""

from __future__ import annotations

import html
import re
import time

from sqlalchemy import insert

from bridge.admin.calls import SHOWN_FIRST, SHOWN_LATEST
from bridge.models import LoopsCall
from tests.harness import Harness
from tests.helpers import stored_delivery, words

PROBES = 8_640  # every 30 s for 72 hours


def called(bridge: Harness, times: int) -> int:
    """A queued delivery with ``times`` calls refused 401, 30 s apart, the last one now."""
    delivery_id = stored_delivery(bridge.engine, bridge.endpoint())
    start = time.time() - 30 * times
    rows = [
        {
            "delivery_id": delivery_id,
            "method": "POST",
            "path": "/contacts/create",
            "request_body": f'{{"email":"jo@example.com","try":{n}}}',
            "status_code": 401,
            "response_body": '{"success":false,"message":"Invalid API key"}',
            "started_at": start + 30 * n,
            "duration_ms": 12.0,
        }
        for n in range(1, times + 1)
    ]
    with bridge.engine.begin() as conn:
        conn.execute(insert(LoopsCall), rows)
    return delivery_id


def shown_tries(source: str) -> list[int]:
    """The calls shown, by the number each request body carries."""
    return [int(n) for n in re.findall(r"&#34;try&#34;: (\d+)", source)]


def test_a_delivery_called_thousands_of_times_shows_its_first_and_latest_calls(
    offline: Harness,
):
    delivery_id = called(offline, PROBES)
    page = offline.page(f"/admin/deliveries/{delivery_id}")
    assert page["calls"]["text"] == f"Loops calls ({PROBES:,})"
    assert shown_tries(page.source) == [
        *range(1, SHOWN_FIRST + 1),
        *range(PROBES - SHOWN_LATEST + 1, PROBES + 1),
    ]
    between = PROBES - SHOWN_FIRST - SHOWN_LATEST
    said = words(html.unescape(page["calls-between"]["text"]))
    assert said.startswith(f"{between:,} more calls between these, from ")
    # The page is what is shown, not 8,640 calls: well under a tenth of a megabyte.
    assert len(page.source) < 60_000, len(page.source)

    # A delivery called as many times as are shown shows each call, and no gap.
    delivery_id = called(offline, SHOWN_FIRST + SHOWN_LATEST)
    page = offline.page(f"/admin/deliveries/{delivery_id}")
    assert shown_tries(page.source) == list(range(1, SHOWN_FIRST + SHOWN_LATEST + 1))
    assert "calls-between" not in page.by_id
