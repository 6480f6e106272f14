"""The admin's delivery pages, as an admin uses them: a signed-in client of the bridge, its
delivery worker and the Loops sandbox, in-process (tests/harness.py). Webhooks are Stripe
events built and signed by the provider's own sample maker, POSTed to the webhook URL.

The keyset pagination is also checked against every filter combination, with a tiny page
and search window so that every edge case is reached."""

from __future__ import annotations

import html
import itertools
import random
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlmodel import Session

import providers
from bridge import accounts, db, registry
from bridge.admin.deliveries import SCAN_LIMIT, Filters, list_deliveries
from bridge.admin.formats import pretty, when
from bridge.admin.overview import busiest_second
from bridge.models import STATUSES, Delivery, LoopsCall
from tests.harness import PUBLIC_URL, Harness
from tests.helpers import (
    account_state,
    every_event_type,
    signed_headers,
    stored_delivery,
    stored_endpoint,
    without_key_types,
    words,
)
from tests.servers import free_port

SECRET = "whsec_adminDeliveriesSecretAAAAAAAA"
STRIPE = providers.get("stripe")


# --- helpers --------------------------------------------------------------------------------


def send(bridge: Harness, endpoint: str, event_type: str, email: str) -> dict:
    """A Stripe event of ``event_type`` for ``email``, signed with SECRET, POSTed as Stripe
    would; the bridge's JSON answer."""
    body, headers = STRIPE.sample(event_type, email, SECRET)
    response = bridge.webhook(endpoint, body, SECRET, headers)
    assert response.status_code == 200, response.text
    return response.json()


def page(bridge: Harness, url: str, status: int = 200) -> str:
    return bridge.page(url, status).source


def status_of(bridge: Harness, delivery_id: int) -> str:
    text = page(bridge, f"/admin/deliveries/{delivery_id}")
    return re.search(r'<h1>Delivery \d+ <span class="status status-(\w+)"', text)[1]  # type: ignore[index]


def wait_for_status(bridge: Harness, delivery_id: int, status: str) -> str:
    bridge.until(
        lambda: status_of(bridge, delivery_id) == status,
        what=f"delivery {delivery_id} to be {status}",
    )
    return page(bridge, f"/admin/deliveries/{delivery_id}")


def listed(bridge: Harness, url: str) -> tuple[list[int], str | None, str | None]:
    """The delivery ids on a list page, newest first, and its Older and Newer links."""
    text = page(bridge, url)
    ids = [int(i) for i in re.findall(r'<td><a href="/admin/deliveries/(\d+)">', text)]
    older = re.search(r'rel="next" href="([^"]+)"', text)
    newer = re.search(r'rel="prev" href="([^"]+)"', text)
    return (
        ids,
        html.unescape(older[1]) if older else None,
        html.unescape(newer[1]) if newer else None,
    )


# --- test event, delivery page, Loops calls ---------------------------------------------------


def test_test_event_reaches_loops_and_its_page_shows_every_call(harness: Harness):
    harness.sign_in()
    harness.connect_admin()
    endpoint = harness.endpoint(loops_event="successfulPayment", secret=SECRET)
    form = page(harness, f"/admin/endpoints/{endpoint}/test")
    assert '<option value="invoice.paid" selected>' in form
    assert f"{PUBLIC_URL}/webhooks/{endpoint}" in form

    url = f"/admin/endpoints/{endpoint}/test"
    sent = harness.form(url, event_type="invoice.paid", email="jo@example.com")
    assert sent.status_code == 303, sent.text
    location = sent.headers["location"]
    delivery_id = int(re.fullmatch(r"/admin/deliveries/(\d+)", location)[1])  # type: ignore[index]
    first_look = page(harness, location)
    assert f"Test invoice.paid event for jo@example.com sent through {PUBLIC_URL}" in first_look

    shown = html.unescape(wait_for_status(harness, delivery_id, "delivered"))
    assert "data-refresh" not in shown
    assert "POST /contacts/create → 200 in" in shown
    assert "POST /events/send → 200 in" in shown
    assert '"eventName": "successfulPayment"' in shown  # the request body, pretty
    assert '"success": true' in shown  # Loops' answer
    assert '"type": "invoice.paid"' in shown  # the Stripe event
    assert "contact created; event successfulPayment sent" in shown  # what was decided

    (contact,) = harness.loops_get("contacts")
    assert contact["email"] == "jo@example.com"
    (event,) = harness.loops_get("events")
    assert (event["email"], event["eventName"]) == ("jo@example.com", "successfulPayment")
    assert event["eventProperties"]["stripeEventType"] == "invoice.paid"


# A secret of each provider's form, for endpoints that take test events from the admin.
PROVIDER_SECRETS = {
    "stripe": SECRET,
    "clerk": "whsec_YWRtaW5DbGVya1Rlc3RTZWNyZXQwMTIz",
    "supabase": "supabaseAdminTestSecret0123456789abcdef",
}


@pytest.mark.parametrize("name", sorted(PROVIDER_SECRETS))
def test_test_event_of_every_type_goes_through_for_every_provider(offline: Harness, name: str):
    if name not in providers.names():
        pytest.skip(f"provider {name!r} is not registered (pyproject.toml entry point)")
    offline.connect_admin()
    plugin = providers.get(name)
    endpoint = offline.endpoint(
        ",".join(without_key_types(plugin)),
        provider=name,
        name=f"{plugin.label} e",
        secret=PROVIDER_SECRETS[name],
    )
    every_event_type(offline.engine, endpoint)  # subscription types too: a key is set first
    url = f"/admin/endpoints/{endpoint}/test"
    form = page(offline, url)
    offered = re.findall(r'<option value="([^"]+)"', form.split('id="event_type"', 1)[1])
    assert offered == list(plugin.event_types)
    assert f"builds a realistic {plugin.label} event" in form
    for n, event_type in enumerate(plugin.event_types):
        sent = offline.form(url, event_type=event_type, email=f"t{n}@example.com")
        assert sent.status_code == 303, (event_type, sent.text[-800:])
    rows = offline.deliveries(endpoint_id=endpoint)
    assert [(r["event_type"], r["status"]) for r in rows] == [
        (t, "queued") for t in plugin.event_types
    ]
    assert offline.get(f"/admin/endpoints/{endpoint}/rejections").text.count("<td>400</td>") == 0


def test_refused_request_of_a_provider_with_a_secret_header_is_explained_its_way(
    offline: Harness,
):
    if "supabase" not in providers.names():
        pytest.skip("provider 'supabase' is not registered (pyproject.toml entry point)")
    secret = PROVIDER_SECRETS["supabase"]
    endpoint = offline.endpoint("INSERT", provider="supabase", name="Users", secret=secret)
    body, headers = providers.get("supabase").sample("INSERT", "hidden@example.com", secret)
    wrong = {**headers, "Loops-Secret": "wrongValueFromElsewhere_QWERTYzxcvbnmPOIU"}
    refused = offline.run(offline.client.post(f"/webhooks/{endpoint}", content=body, headers=wrong))
    assert refused.status_code == 400
    text = html.unescape(page(offline, f"/admin/endpoints/{endpoint}/rejections"))
    assert "<td>400</td>" in text
    assert "The Loops-Secret header does not match this endpoint's secret" in text
    assert "loops-secret: [redacted]" in text
    assert "wrongValueFromElsewhere" not in text and "hidden@example.com" not in text
    assert "Stripe" not in text and "whsec_" not in text


def test_test_event_form_checks_its_fields(offline: Harness):
    offline.connect_admin()
    endpoint = offline.endpoint("invoice.paid,customer.created", secret=SECRET)
    url = f"/admin/endpoints/{endpoint}/test"
    bad_email = offline.form(url, event_type="invoice.paid", email="jo@example")
    assert bad_email.status_code == 400
    assert 'id="email" name="email" type="email" value="jo@example"' in bad_email.text
    assert 'aria-invalid="true" aria-describedby="email-error"' in bad_email.text
    assert "is not an email address" in bad_email.text
    not_accepted = offline.form(
        url, event_type="checkout.session.completed", email="jo@example.com"
    )
    assert not_accepted.status_code == 400
    assert "Pick one of the event types this endpoint accepts" in not_accepted.text
    assert offline.deliveries() == []

    waiting = offline.endpoint(name="No secret yet")
    text = page(offline, f"/admin/endpoints/{waiting}/test")
    assert "This endpoint has no signing secret yet" in text
    assert f'action="/admin/endpoints/{waiting}/test"' not in text
    refused = offline.form(
        f"/admin/endpoints/{waiting}/test", event_type="invoice.paid", email="jo@example.com"
    )
    assert refused.status_code == 400 and "no signing secret yet" in refused.text
    assert offline.deliveries() == []


def test_test_event_says_when_the_public_url_does_not_reach_the_bridge(tmp_path: Path):
    elsewhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # The harness still calls the admin at http://bridge.test: a host it must allow.
    with Harness(
        tmp_path, worker=False, BRIDGE_PUBLIC_URL=elsewhere, BRIDGE_ALLOWED_HOSTS="bridge.test"
    ) as bridge:
        bridge.sign_in()
        endpoint = bridge.endpoint(secret=SECRET)
        answer = bridge.form(
            f"/admin/endpoints/{endpoint}/test", event_type="invoice.paid", email="jo@example.com"
        )
    assert answer.status_code == 502
    assert f"could not reach its own webhook URL {elsewhere}/webhooks/" in answer.text
    assert "BRIDGE_PUBLIC_URL must be an address where this bridge can be reached" in answer.text
    assert "ConnectError" in answer.text
    assert 'value="jo@example.com"' in answer.text  # the form keeps what was typed


# --- the list: filters and pages ------------------------------------------------------------


def test_filters_return_only_matching_deliveries(harness: Harness):
    harness.sign_in()
    a = harness.endpoint("customer.created,invoice.paid", name="Shop A", secret=SECRET)
    b = harness.endpoint("customer.created", name="Shop B", secret=SECRET)
    a1 = send(harness, a, "customer.created", "Ann@Example.com")["id"]
    a2 = send(harness, a, "invoice.paid", "ann@example.com")["id"]
    a3 = send(harness, a, "checkout.session.completed", "carol@example.com")["id"]
    harness.settled(3)
    harness.fault(status=400, count=1)
    b1 = send(harness, b, "customer.created", "bob@example.com")["id"]
    wait_for_status(harness, b1, "failed")
    b2 = send(harness, b, "invoice.paid", "bob@example.com")["id"]

    def ids(**query: str) -> set[int]:
        shown, older, newer = listed(harness, Filters(**query).url())
        assert older is None and newer is None
        return set(shown)

    assert ids() == {a1, a2, a3, b1, b2}
    assert ids(status="failed") == {b1}
    assert ids(status="ignored") == {a3, b2}
    assert ids(status="delivered") == {a1, a2}
    assert ids(status="queued") == set()
    assert ids(event_type="invoice.paid") == {a2, b2}
    assert ids(search="ANN@example.COM") == {a1, a2}
    assert ids(endpoint=b) == {b1, b2}
    assert ids(endpoint=a, status="delivered") == {a1, a2}
    assert ids(endpoint=b, event_type="invoice.paid", search="bob@example.com") == {b2}

    text = page(harness, f"/admin/deliveries?status=failed&endpoint={b}")
    assert '<span class="status status-failed">failed</span>' in text
    assert "Shop B" in text and "Loops answered 400" in text
    assert f'<option value="{b}" selected>Shop B</option>' in text
    assert '<option value="failed" selected>failed</option>' in text
    # Nonsense in the query string is ignored, never an error.
    assert set(listed(harness, "/admin/deliveries?status=nope&before=x&after=")[0]) == ids()


def test_search_finds_an_address_part_of_one_or_an_event_id(offline: Harness):
    registry.add_account(offline.engine, "acme", "loops_key_acme_1234")
    endpoint = stored_endpoint(offline.engine, "acme")
    # One needle far down the log, more deliveries than a page searches at once, three more.
    emails = ["needle@rare.io", *(f"c{n}@example.com" for n in range(SCAN_LIMIT))]
    emails += ["Jane.Doe@Acme.com", "jo@acme.com", "bob@example.com"]
    with offline.engine.begin() as conn:
        conn.execute(
            Delivery.__table__.insert(),  # type: ignore[attr-defined]
            [
                {"endpoint_id": endpoint, "event_id": f"evt_1Qsearch{n:05d}", "email": email,
                 "event_type": "invoice.paid", "occurred_at": n, "status": "delivered",
                 "received_at": float(n)}
                for n, email in enumerate(emails)
            ],
        )  # fmt: skip
    needle, jane, jo, bob = 1, len(emails) - 2, len(emails) - 1, len(emails)

    def found(search: str, key: str = "search") -> list[int]:
        return listed(offline, f"/admin/deliveries?{urlencode({key: search})}")[0]

    assert found("jane.doe@acme.COM") == [jane]  # the address, any case
    assert found("jane") == [jane]  # its start
    assert found("ACME.com") == [jo, jane]  # its domain
    assert found(f"evt_1Qsearch{jo - 1:05d}") == [jo]  # Stripe's event id
    # An address or an event id, however old: an index finds it.
    assert found("NEEDLE@rare.io") == found("evt_1Qsearch00000") == [needle]
    assert found("bob@example.com", key="email") == [bob]  # a link from before the search
    assert found("%@") == found("_@acme.com") == []  # text, not LIKE's wildcards

    # Part of an address is looked for in a page's worth of the log at a time, and says so.
    shown = offline.page("/admin/deliveries?search=rare.io")
    assert words(shown["partial"]["text"]) == (
        "No delivery has the address, user id or event id “rare.io”: this page looked for "
        f"addresses containing it through {SCAN_LIMIT:,} deliveries and found none. “Older” "
        "searches on from there."
    )
    _, older, _ = listed(offline, "/admin/deliveries?search=rare.io")
    assert older is not None and "search=rare.io" in older
    assert listed(offline, older)[0] == [needle]


def test_keyset_pages_show_every_delivery_exactly_once(offline: Harness):
    endpoint = offline.endpoint("customer.created", secret=SECRET)
    sent: dict[str, list[int]] = {"customer.updated": [], "invoice.paid": []}  # both ignored
    for n in range(130):
        event_type = "invoice.paid" if n % 19 == 0 else "customer.updated"
        body, _ = STRIPE.sample(event_type, f"c{n}@example.com", SECRET)
        sent[event_type].append(offline.webhook(endpoint, body, SECRET).json()["id"])

    for query, expected in (
        ("/admin/deliveries", sent["customer.updated"] + sent["invoice.paid"]),
        ("/admin/deliveries?event_type=customer.updated", sent["customer.updated"]),
    ):
        pages, url, last = [], query, query
        while url:
            last = url
            shown, url, _ = listed(offline, url)
            pages.append(shown)
            assert len(pages) <= 3, "the Older links go round in a circle"
            assert url is None or query.partition("?")[2] in url  # the filter is kept
        seen = [i for shown in pages for i in shown]
        assert seen == sorted(expected, reverse=True)  # each once, newest first
        assert [len(p) for p in pages] == [50, 50, len(expected) - 100]
        # And back with "Newer", from the oldest page to the newest: the same pages.
        back, url = [], last
        while url:
            shown, _, url = listed(offline, url)
            back.insert(0, shown)
            assert len(back) <= 3, "the Newer links go round in a circle"
        assert back == pages


@pytest.mark.parametrize("size,scan", [(7, 20), (3, 1_000), (5, 8)])
def test_keyset_pages_under_every_filter_combination(tmp_path: Path, size: int, scan: int):
    """In-process, small enough to check by brute force: every combination of filters, read
    Older from the newest page and Newer back from the oldest, with a search window small
    enough that combined filters yield partial pages."""
    engine = db.connect(f"sqlite:///{tmp_path / 'keyset.db'}")
    registry.add_account(engine, "acme", "loops_key_acme_1234")
    endpoints = [
        registry.create_endpoint(
            engine, name=f"e{n}", account="acme", provider="stripe", event_types=["invoice.paid"]
        )
        for n in range(3)
    ]
    rng = random.Random(size * scan)
    types, emails = ["invoice.paid", "customer.created", "x.rare"], ["a@x.io", "B@x.io", None]
    rows = [
        {
            "endpoint_id": rng.choices(endpoints, [80, 18, 2])[0],
            "event_id": f"evt_{n}",
            "event_type": rng.choices(types, [70, 28, 2])[0],
            "occurred_at": n,
            "email": rng.choice(emails),
            "status": rng.choices(STATUSES, [5, 80, 10, 4, 1])[0],
            "received_at": float(n),
        }
        for n in range(60)
    ]
    with engine.begin() as conn:
        conn.execute(Delivery.__table__.insert(), rows)  # type: ignore[attr-defined]
    stored = list(range(1, len(rows) + 1))
    choices = {
        "endpoint": [None, *endpoints],
        "status": [None, *STATUSES],
        "event_type": [None, *types],
        # An address; an event id; parts of addresses (one a LIKE wildcard, taken as text).
        "search": [None, "b@X.IO", "evt_7", "@X", "_@x.io"],
    }

    def found(row: dict, text: str) -> bool:
        """The search's meaning: the address when some row has it, else the event id when
        some row has it, else part of an address."""
        if any((r["email"] or "").lower() == text.lower() for r in rows):
            return (row["email"] or "").lower() == text.lower()
        if any(r["event_id"] == text for r in rows):
            return row["event_id"] == text
        return text.lower() in (row["email"] or "").lower()

    # Every combination of the filters; each search with fewer of them (it is the costly
    # dimension, and its windowing is the same whatever else narrows the page).
    combinations = [
        *itertools.product(choices["endpoint"], choices["status"], choices["event_type"], [None]),
        *itertools.product(
            choices["endpoint"][:2], choices["status"], choices["event_type"][:2],
            choices["search"][1:],
        ),
    ]  # fmt: skip
    for values in combinations:
        given = {k: v for k, v in zip(choices, values, strict=True) if v is not None}
        filters = Filters(**given)

        def matches(i: int, given: dict = given) -> bool:
            row = rows[i - 1]
            return all(
                found(row, v)
                if k == "search"
                else (row["endpoint_id"] if k == "endpoint" else row[k] or "").lower() == v.lower()
                for k, v in given.items()
            )

        expected = [i for i in reversed(stored) if matches(i)]
        pages, older = [], None
        first = list_deliveries(engine, filters, size=size, scan_limit=scan)
        assert first.newer is None
        current = first
        while True:
            assert len(current.rows) <= size
            pages.append([r.id for r in current.rows])
            if current.older is None:
                break
            older = current.older
            current = list_deliveries(engine, filters, before=older, size=size, scan_limit=scan)
        assert [i for p in pages for i in p] == expected, given
        # Newer, from the last page back to the first, shows the same pages.
        back = [pages[-1]]
        while current.newer is not None:
            current = list_deliveries(
                engine, filters, after=current.newer, size=size, scan_limit=scan
            )
            back.insert(0, [r.id for r in current.rows])
        assert [i for p in back for i in p] == expected, given
    engine.dispose()


# --- actions on a delivery --------------------------------------------------------------------


def test_failed_delivery_retried_after_the_cause_is_gone(harness: Harness):
    harness.sign_in()
    endpoint = harness.endpoint(loops_event="successfulPayment", secret=SECRET)
    harness.fault(status=400, count=1)  # Loops refuses once
    delivery_id = send(harness, endpoint, "invoice.paid", "retry@example.com")["id"]
    failed = wait_for_status(harness, delivery_id, "failed")
    assert "Loops answered 400" in failed
    assert f'action="/admin/deliveries/{delivery_id}/retry"' in failed and "Retry now" in failed
    assert "send-again" not in failed

    retried = harness.form(f"/admin/deliveries/{delivery_id}/retry")
    assert retried.status_code == 303
    assert retried.headers["location"] == f"/admin/deliveries/{delivery_id}"
    delivered = wait_for_status(harness, delivery_id, "delivered")
    # The refused try, then the retry.
    assert "POST /contacts/create → 400" in delivered
    assert "POST /contacts/create → 200" in delivered
    assert len(harness.loops_get("events")) == 1

    # Retrying what is not failed explains itself instead of doing anything.
    again = harness.form(f"/admin/deliveries/{delivery_id}/retry")
    assert again.status_code == 303
    said = "Delivery {} is delivered; only a failed or dead delivery can be retried."
    assert said.format(delivery_id) in page(harness, again.headers["location"])


def test_send_again_fires_the_loops_event_with_a_new_key(harness: Harness):
    harness.sign_in()
    endpoint = harness.endpoint(loops_event="successfulPayment", secret=SECRET)
    delivery_id = send(harness, endpoint, "invoice.paid", "twice@example.com")["id"]
    shown = wait_for_status(harness, delivery_id, "delivered")
    assert f'action="/admin/deliveries/{delivery_id}/send-again"' in shown
    assert (
        'data-confirm="Send this event to Loops again? Its Loops event successfulPayment goes '
        "with a new idempotency key"
    ) in shown
    assert "Retry now" not in shown

    assert "earlier-outcomes" not in harness.page(f"/admin/deliveries/{delivery_id}").by_id
    answer = harness.form(f"/admin/deliveries/{delivery_id}/send-again")
    assert answer.status_code == 303
    queued = harness.page(answer.headers["location"])
    assert words(queued["notice"]["text"]) == (
        f"Delivery {delivery_id} is queued to be sent again, with a new idempotency key: Loops "
        "runs its workflow again. What it came to before is kept on this page, under “Earlier "
        "outcomes”."
    )
    harness.until(lambda: len(harness.loops_get("events")) == 2, what="the event sent again")
    first, second = harness.loops_get("events")
    assert first["idempotencyKey"] != second["idempotencyKey"]
    assert first["eventName"] == second["eventName"] == "successfulPayment"
    wait_for_status(harness, delivery_id, "delivered")
    shown = harness.page(f"/admin/deliveries/{delivery_id}")
    assert shown.text.count("POST /events/send → 200") == 2
    assert "(new, from “Send again”)" in shown.text
    # The first outcome is kept, and the new one is the delivery's own.
    earlier = words(shown["earlier-outcomes"]["text"])
    assert earlier.startswith("delivered at ") and earlier.endswith(
        " UTC after 1 attempt: contact created; event successfulPayment sent"
    )
    assert shown["why"]["text"] == "event successfulPayment sent"  # the contact was there
    assert words(shown["attempts"]["text"]) == ("2 in all, counting those of its earlier outcomes")


def loops_call(offline: Harness, delivery_id: int, status_code: int, answer: str) -> None:
    with Session(offline.engine) as session:
        session.add(
            LoopsCall(
                delivery_id=delivery_id,
                method="POST",
                path="/contacts/create",
                request_body='{"email": "jo@example.com"}',
                status_code=status_code,
                response_body=answer,
                started_at=time.time() - 3 * 3600,
                duration_ms=12.0,
            )
        )
        session.commit()


def test_dead_delivery_says_why_and_is_retried_with_a_fresh_max_age(tmp_path: Path):
    with Harness(tmp_path, worker=False, BRIDGE_MAX_AGE_HOURS="30") as offline:
        offline.sign_in()
        now = time.time()
        registry.add_account(offline.engine, "acme", "loops_key_acme_1234")
        endpoint = stored_endpoint(offline.engine, "acme")
        dead = stored_delivery(
            offline.engine,
            endpoint,
            status="dead",
            reason="Loops answered 503: Service Unavailable",
            attempts=17,
            received_at=now - 32 * 3600,
            queued_at=now - 32 * 3600,
            finished_at=now - 2 * 3600,
            next_attempt_at=None,
        )
        loops_call(offline, dead, 503, '{"message": "Service Unavailable"}')
        failed = stored_delivery(
            offline.engine, endpoint, status="failed", reason="Loops answered 400: bad email"
        )

        shown = offline.page(f"/admin/deliveries/{dead}")
        assert f'<h1>Delivery {dead} <span class="status status-dead">dead</span>' in (shown.source)
        assert words(shown["why"]["text"]) == (
            "Not delivered after 30 hours of retrying; last reason: Loops answered 503: "
            "Service Unavailable"
        )
        assert shown.actions(rf"/admin/deliveries/{dead}/retry") == [
            f"/admin/deliveries/{dead}/retry"
        ]
        assert "with a fresh 30 hours of tries (BRIDGE_MAX_AGE_HOURS)" in words(shown.text)
        assert "POST /contacts/create → 503" in shown.text and "send-again" not in shown.source
        # The list filters by it and badges it; the overview counts it.
        listed = offline.get("/admin/deliveries?status=dead").text
        assert re.findall(r'<td><a href="/admin/deliveries/(\d+)">', listed) == [str(dead)]
        assert '<span class="status status-dead">dead</span>' in listed
        assert '<option value="dead" selected>dead</option>' in listed
        assert overview_of(offline)["dead-recent"] == "1"

        retried = offline.form(f"/admin/deliveries/{dead}/retry")
        assert (retried.status_code, retried.headers["location"]) == (
            303,
            f"/admin/deliveries/{dead}",
        )
        after = time.time()
        shown = offline.page(f"/admin/deliveries/{dead}")
        assert words(shown["notice"]["text"]).startswith(
            f"Delivery {dead} is queued again: the worker sends it within about a second."
        )
        # What it came to is kept, with its reason and attempts.
        assert words(shown["earlier-outcomes"]["text"]) == (
            f"dead at {words(when(now - 2 * 3600))} after 17 attempts: Loops answered 503: "
            "Service Unavailable"
        )
        assert 'class="status status-queued">queued</span>' in shown.source
        assert shown["why"]["text"] == "retry requested by an admin"
        assert shown["next-try"]["text"] == "now"
        # Thirty fresh hours from the retry, not from when it was first queued.
        tries_until = words(shown["gives-up"]["text"])
        assert tries_until.startswith(
            tuple(words(when(at)) for at in range(int(now) + 30 * 3600, int(after) + 30 * 3600 + 2))
        ), tries_until
        assert "POST /contacts/create → 503" in shown.text  # the Loops calls are kept
        assert overview_of(offline)["dead-recent"] == "0"

        again = offline.form(f"/admin/deliveries/{dead}/retry")
        assert again.status_code == 303
        notice = f"Delivery {dead} is queued; only a failed or dead delivery can be retried."
        assert notice in offline.page(f"/admin/deliveries/{dead}").text
        # A failed delivery is retried the same way.
        assert offline.form(f"/admin/deliveries/{failed}/retry").status_code == 303
        assert offline.page(f"/admin/deliveries/{failed}")["next-try"]["text"] == "now"


def test_pruned_payload_is_said_and_the_event_cannot_be_sent_again(tmp_path: Path):
    with Harness(tmp_path, worker=False, BRIDGE_RETENTION_DAYS="14") as offline:
        offline.sign_in()
        long_ago = time.time() - 20 * 86400
        registry.add_account(offline.engine, "acme", "loops_key_acme_1234")
        endpoint = stored_endpoint(offline.engine, "acme")
        pruned, ignored, kept = (
            stored_delivery(
                offline.engine,
                endpoint,
                status=status,
                payload=payload,
                reason=reason,
                received_at=long_ago,
                finished_at=long_ago,
                next_attempt_at=None,
            )
            for status, payload, reason in (
                ("delivered", None, "contact created"),
                ("ignored", None, "customer.deleted is not enabled"),
                ("delivered", b'{"id": "evt_kept"}', "contact created"),
            )
        )
        loops_call(offline, pruned, 200, '{"success": true}')

        shown = offline.page(f"/admin/deliveries/{pruned}")
        assert words(shown["payload-deleted"]["text"]) == (
            "Deleted 14 days after it was received (BRIDGE_RETENTION_DAYS). The outcome above "
            "and the Loops calls are kept."
        )
        assert shown.actions(r"/admin/deliveries/\d+/send-again") == []
        assert "It cannot be sent again" in shown["no-send-again"]["text"]
        assert "POST /contacts/create → 200" in shown.text
        assert shown["why"]["text"] == "contact created"
        assert "payload-deleted" in offline.page(f"/admin/deliveries/{ignored}").by_id
        control = offline.page(f"/admin/deliveries/{kept}")
        assert "payload-deleted" not in control.by_id and "evt_kept" in control.text
        assert control.actions(r"/admin/deliveries/\d+/send-again") == [
            f"/admin/deliveries/{kept}/send-again"
        ]

        # Sent anyway (an old form, a script): refused, with why.
        answer = offline.form(f"/admin/deliveries/{pruned}/send-again")
        assert answer.status_code == 303
        shown = offline.page(f"/admin/deliveries/{pruned}")
        assert (
            f"Delivery {pruned} cannot be sent again: its event was deleted after the retention "
            "period (BRIDGE_RETENTION_DAYS)." in shown.text
        )
        assert 'class="status status-delivered">delivered</span>' in shown.source


def test_queued_delivery_tells_when_its_account_is_held(offline: Harness):
    now = time.time()
    acme = registry.add_account(offline.engine, "acme", "loops_key_acme_1234").id
    delivery = stored_delivery(offline.engine, stored_endpoint(offline.engine, "acme"))
    assert "account-problem" not in offline.page(f"/admin/deliveries/{delivery}").by_id
    account_state(
        offline.engine,
        acme,
        problem="no answer (ReadTimeout)",
        problem_kind="outage",
        problem_since=now - 120,
        held_until=now + 10,
        failures=2,
    )
    said = words(offline.page(f"/admin/deliveries/{delivery}")["account-problem"]["text"])
    assert said.startswith("Its Loops account acme Loops unreachable")
    assert f"Loops could not be reached since {words(when(now - 120))}" in said


# --- rejected requests ----------------------------------------------------------------------


def test_bad_signature_is_listed_without_signature_or_body(offline: Harness):
    endpoint = offline.endpoint(secret=SECRET)
    assert "No refused requests for this endpoint" in page(
        offline, f"/admin/endpoints/{endpoint}/rejections"
    )
    body, _ = STRIPE.sample("invoice.paid", "hidden-body@example.com", SECRET)
    headers = signed_headers(body, "whsec_someOtherSecretBBBBBBBBBBBB")
    refused = offline.run(
        offline.client.post(f"/webhooks/{endpoint}", content=body, headers=headers)
    )
    assert refused.status_code == 400
    signature = headers["Stripe-Signature"].split("v1=")[1]

    def listed_refusal() -> str | None:
        text = page(offline, f"/admin/endpoints/{endpoint}/rejections")
        return text if "<td>400</td>" in text else None

    text = offline.until(listed_refusal, what="the refusal to be listed")
    assert "No signature in the Stripe-Signature header matches" in text
    assert "stripe-signature: t=" in text and "v1=…" in text
    assert signature not in text and SECRET not in text and "whsec_someOther" not in text
    assert "hidden-body@example.com" not in text and "evt_" not in text
    # What the page explains above the table.
    assert "No signature … matches" in text
    assert "Test-mode and live-mode" in text and "proxy" in text


def test_unknown_ids_are_404_pages(offline: Harness):
    for method, url in (
        ("GET", "/admin/deliveries/999999"),
        ("GET", "/admin/deliveries/not-a-number"),
        ("POST", "/admin/deliveries/999999/retry"),
        ("POST", "/admin/deliveries/abc/send-again"),
        ("GET", "/admin/endpoints/nope/rejections"),
        ("GET", "/admin/endpoints/nope/test"),
        ("POST", "/admin/endpoints/nope/test"),
    ):
        answer = offline.run(offline.client.request(method, url))
        assert answer.status_code == 404, (method, url)
        assert "Back to the overview" in answer.text and "Traceback" not in answer.text


# --- overview -------------------------------------------------------------------------------


def overview_numbers(bridge: Harness) -> dict[str, str]:
    text = page(bridge, "/admin/")
    numbers = dict(re.findall(r'<strong id="([\w-]+)">(?:<a[^>]*>)?([^<]+)<', text))
    row = re.search(
        r'<tr id="pace-1">.*?<td class="calls">(\d+)</td>.*?<td class="busiest">(\d+)', text, re.S
    )
    if row:
        numbers |= {"calls": row[1], "busiest": row[2]}
    return numbers


def test_overview_counts_what_was_sent(harness: Harness):
    harness.sign_in()
    start = page(harness, "/admin/")
    assert "Getting started" in start and 'href="/admin/accounts"' in start
    endpoint = harness.endpoint(loops_event="successfulPayment", secret=SECRET)
    assert "Getting started" not in page(harness, "/admin/")

    for n in range(2):
        send(harness, endpoint, "invoice.paid", f"d{n}@example.com")
    send(harness, endpoint, "customer.created", "ignored@example.com")
    harness.settled(3)
    harness.fault(status=400, count=1)
    failed = send(harness, endpoint, "invoice.paid", "f@example.com")["id"]
    wait_for_status(harness, failed, "failed")

    harness.fault(status=503)  # until cleared: stays queued
    queued = send(harness, endpoint, "invoice.paid", "q@example.com")["id"]
    numbers = overview_numbers(harness)
    assert numbers["queue-depth"] == "1" and numbers["count-queued"] == "1"
    assert f'href="/admin/deliveries/{queued}">' in page(harness, "/admin/")  # oldest queued
    assert 'data-refresh="2"' in page(harness, f"/admin/deliveries/{queued}")

    harness.clear_faults()
    wait_for_status(harness, queued, "delivered")
    numbers = overview_numbers(harness)
    assert {k: numbers[k] for k in ("count-delivered", "count-ignored", "count-failed")} == {
        "count-delivered": "3",
        "count-ignored": "1",
        "count-failed": "1",
    }
    assert numbers["count-queued"] == "0" and numbers["queue-depth"] == "0"
    assert numbers["oldest-queued"] == "none"
    # Every Loops call was made within the last minute, at most 10 in any second.
    assert int(numbers["calls"]) == len(harness.loops_calls())
    assert 1 <= int(numbers["busiest"]) <= 10


def overview_of(offline: Harness) -> dict[str, str]:
    text = offline.get("/admin/").text
    return dict(re.findall(r'<strong id="([\w-]+)">(?:<a[^>]*>)?([^<]+)<', text))


def test_busiest_second_slides_rather_than_counting_clock_seconds():
    # No clock second (0-1, 1-2, 2-3) holds more than two calls; 0.9 to 1.6 holds three.
    assert busiest_second([0.5, 0.9, 1.4, 1.6, 2.6]) == 3
    assert busiest_second([0.0, 1.0, 2.0]) == 1  # exactly a second apart: never together
    assert busiest_second([]) == 0


def test_payloads_are_shown_as_indented_json_or_as_the_text_they_are():
    assert pretty(b'{"id":"evt_1","data":[1]}') == '{\n  "id": "evt_1",\n  "data": [\n    1\n  ]\n}'
    assert pretty(b"not json \xff") == "not json \ufffd"
    assert pretty(None) == ""


def test_a_deliverys_page_says_what_sending_it_again_does_and_why_no_email_follows(harness):
    harness.sign_in()
    endpoint = harness.endpoint(
        "invoice.paid,customer.created",
        secret=SECRET,
        loops_events={"invoice.paid": "successfulPayment"},
    )
    paid = send(harness, endpoint, "invoice.paid", "ada@example.com")["id"]
    created = send(harness, endpoint, "customer.created", "bob@example.com")["id"]
    harness.settled(2)
    harness.fault(status=400, count=1)
    refused = send(harness, endpoint, "invoice.paid", "cy@example.com")["id"]
    wait_for_status(harness, refused, "failed")
    shown = {d: harness.page(f"/admin/deliveries/{d}") for d in (paid, created, refused)}

    assert words(shown[paid]["send-again-does"]["text"]) == (
        "sends the Loops event successfulPayment again, with a new idempotency key: its "
        "workflow runs again"
    )
    assert words(shown[created]["send-again-does"]["text"]) == (
        "updates the contact in Loops again; the endpoint sends no Loops event for "
        "customer.created, so no workflow runs"
    )
    assert words(shown[created]["outcome-none"]["text"]) == (
        "The endpoint sends no Loops event for customer.created: no loop email can follow it."
    )
    assert words(shown[refused]["outcome-none"]["text"]) == (
        "Loops did not take its event successfulPayment (see its calls below): no loop email "
        "can follow it."
    )


def test_a_users_deliveries_are_found_by_their_user_id_and_shown_without_an_email(offline):
    """A Clerk user.deleted carries only the user's id: the log shows it in place of the
    email, its page names it, and searching for it finds every delivery of that user."""
    endpoint = offline.endpoint("user.created,user.deleted", provider="clerk", name="Clerk")
    user = "user_29w83sxmDNGwOuEthce5gg56FcC"
    created = stored_delivery(
        offline.engine, endpoint, event_type="user.created", email="ex@example.org", user_id=user
    )
    deleted = stored_delivery(
        offline.engine, endpoint, event_type="user.deleted", email=None, user_id=user
    )
    stored_delivery(offline.engine, endpoint, event_type="user.created", user_id="user_other")

    ids, _, _ = listed(offline, f"/admin/deliveries?search={user}")
    assert ids == [deleted, created]
    log = offline.page(f"/admin/deliveries?search={user}").source
    assert f'class="mono" title="the user id: no email came with this event">{user}</a>' in log
    shown = offline.page(f"/admin/deliveries/{deleted}")
    assert shown["user-id"]["text"] == user


def test_a_queued_deliverys_next_try_waits_for_its_held_account(offline):
    """Loops answered the account 429 with a wait of ten minutes: its queued delivery's
    next try is then, whatever its own schedule says, and the page says why."""
    endpoint = offline.endpoint(secret=SECRET)
    delivery = stored_delivery(offline.engine, endpoint)  # due now, by its own schedule
    (account,) = registry.list_accounts(offline.engine)
    with offline.engine.begin() as conn:
        accounts.ensure(conn, account.id)
        accounts.hold(conn, account.id, 600.0)
    shown = offline.page(f"/admin/deliveries/{delivery}")
    said = words(shown["next-try"]["text"])
    assert said.endswith("(in 10 min): its Loops account is held until then"), said


def test_imports_are_marked_and_can_be_left_out_of_the_log_or_shown_alone(offline):
    endpoint = offline.endpoint("customer.created", secret=SECRET)
    webhook = stored_delivery(offline.engine, endpoint, event_type="customer.created")
    imported = [
        stored_delivery(
            offline.engine,
            endpoint,
            event_type="customer.created",
            event_id=f"import:cus_{n}",
            backfill=True,
            email=f"old{n}@example.com",
        )
        for n in range(3)
    ]
    everything, _, _ = listed(offline, "/admin/deliveries")
    assert everything == [*reversed(imported), webhook]
    assert listed(offline, "/admin/deliveries?source=webhooks")[0] == [webhook]
    assert listed(offline, "/admin/deliveries?source=imports")[0] == list(reversed(imported))
    log = offline.page("/admin/deliveries").source
    assert (
        log.count('title="made by an import of existing customers, not by a webhook">import') == 3
    )
    assert listed(offline, "/admin/deliveries?source=bogus")[0] == everything  # unknown: any
    shown = offline.page("/admin/deliveries?source=bogus&status=sent")
    assert words(shown["ignored-filters"]["text"]) == (
        "Not a filter here, so every one is shown: status “sent” (statuses: "
        f"{', '.join(STATUSES)}); source “bogus” (sources: webhooks, imports)."
    )


def test_sending_a_deletion_again_is_confirmed_and_says_what_it_does(offline):
    endpoint = offline.endpoint("customer.deleted", secret=SECRET, on_delete="delete")
    deletion = stored_delivery(
        offline.engine, endpoint, event_type="customer.deleted", deletion=True, status="delivered"
    )
    shown = offline.page(f"/admin/deliveries/{deletion}")
    assert words(shown["send-again-does"]["text"]) == (
        "deletes the contact in Loops again, even if it came back since"
    )
    assert 'data-confirm="Send this deletion to Loops again? The contact is deleted' in (
        shown.source
    )
