"""bridge/stripe_api.py against the Stripe stand-in (tests/stripe_standin.py) on loopback."""

from __future__ import annotations

import json
import threading

import pytest

from bridge.stripe_api import MAX_TYPES, StripeAPI, StripeAPIError
from tests import stripe_standin
from tests.servers import free_port
from tests.stripe_standin import StripeStandin

SECRET_TEST_KEY = "sk_test_51StandinSecretKeyForTheTestsOnly0a1b2"
RESTRICTED_KEY = "rk_test_51StandinRestrictedKeyCustomersEvents3c4d"
CUSTOMERS_ONLY_KEY = "rk_test_51StandinRestrictedKeyCustomersOnly5e6f"
LIVE_KEY = "rk_live_51StandinRestrictedLiveKeyCustomersEv7a8b"
UNKNOWN_KEY = "rk_test_51StandinKeyStripeHasNeverHeardOf9c0d"
ALL_KEYS = (SECRET_TEST_KEY, RESTRICTED_KEY, CUSTOMERS_ONLY_KEY, LIVE_KEY, UNKNOWN_KEY)
SINCE = 1_714_600_000


@pytest.fixture
def standin(stripe_standin: StripeStandin) -> StripeStandin:
    made = stripe_standin
    made.add_key(SECRET_TEST_KEY)
    made.add_key(RESTRICTED_KEY)
    made.add_key(CUSTOMERS_ONLY_KEY, ["rak_customer_read"])
    made.add_key(LIVE_KEY)
    return made


@pytest.fixture
def url(standin: StripeStandin) -> str:
    return standin.url


def api(key: str, url: str, waits: list[float] | None = None, max_waits: int = 6) -> StripeAPI:
    sleep = waits.append if waits is not None else _no_sleep
    return StripeAPI(key, url, sleep=sleep, max_waits=max_waits)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"asked to wait {seconds} s")


def _shows_no_key(text: str) -> None:
    for key in ALL_KEYS:
        assert key not in text
        assert key[8:20] not in text  # nor a long piece of one


def test_customer_pages_list_every_customer_newest_first(standin: StripeStandin, url: str) -> None:
    made = stripe_standin.customers(250, deleted_every=10, without_email_every=7)
    standin.add(made)
    pages = list(api(RESTRICTED_KEY, url).customer_pages(None))

    listed = [c for page, _ in pages for c in page]
    expected = sorted((c for c in made if not c.get("deleted")), key=lambda c: -c["created"])
    assert [c["id"] for c in listed] == [c["id"] for c in expected]  # Stripe omits deleted
    assert [len(page) for page, _ in pages] == [100, 100, 25]
    assert [after for _, after in pages] == [page[-1]["id"] for page, _ in pages]
    assert sum(c["email"] is None for c in listed) == sum(c["email"] is None for c in expected)
    assert all(type(c) is dict and c["object"] == "customer" for c in listed)
    sent = [r.params for r in standin.calls("/v1/customers")]
    assert sent == [
        {"limit": ["100"]},
        {"limit": ["100"], "starting_after": [pages[0][1]]},
        {"limit": ["100"], "starting_after": [pages[1][1]]},
    ]


def test_customer_pages_resume_after_the_last_id_given(standin: StripeStandin, url: str) -> None:
    standin.add(stripe_standin.customers(230))
    client = api(RESTRICTED_KEY, url)
    first, after = next(client.customer_pages(None))
    rest = [c["id"] for page, _ in client.customer_pages(after) for c in page]
    everyone = [c["id"] for page, _ in client.customer_pages(None) for c in page]
    assert [c["id"] for c in first] + rest == everyone
    assert len(set(everyone)) == 230


def test_customer_pages_of_an_account_without_customers_is_empty(url: str) -> None:
    assert list(api(RESTRICTED_KEY, url).customer_pages(None)) == []


def test_events_since_a_time_of_the_types_asked_oldest_first(
    standin: StripeStandin, url: str
) -> None:
    people = stripe_standin.customers(150, start=SINCE - 50)
    created = [stripe_standin.event("customer.created", c) for c in people]
    updated = [
        stripe_standin.event("customer.updated", c, created=SINCE + 200 + n, previous_attributes={})
        for n, c in enumerate(people[:30])
    ]
    paid = stripe_standin.event("invoice.paid", stripe_standin.INVOICE, created=SINCE + 5)
    live = stripe_standin.event("customer.created", stripe_standin.customer(999, livemode=True))
    live["created"] = SINCE + 1
    standin.add([*created, *updated, paid, live])

    found = api(RESTRICTED_KEY, url).events(["customer.created", "customer.updated"], SINCE)

    events = [json.loads(body) for body in found]
    wanted = [e for e in created if e["created"] >= SINCE] + updated
    assert [e["id"] for e in events] == [e["id"] for e in wanted]  # oldest first, no live one
    assert events[0] == created[50]  # the event object exactly as stored: a webhook body
    assert [e["created"] for e in events] == sorted(e["created"] for e in events)
    calls = standin.calls("/v1/events")
    assert len(calls) == 2  # 130 events: two pages of 100
    assert calls[0].params["created[gte]"] == [str(SINCE)]
    assert calls[0].params["types[0]"] == ["customer.created"]


def test_events_of_one_second_keep_stripes_order(standin: StripeStandin, url: str) -> None:
    people = stripe_standin.customers(5)
    same_second = [stripe_standin.event("customer.created", c, created=SINCE) for c in people]
    standin.add(same_second)  # Stripe lists the later of one second first

    found = api(RESTRICTED_KEY, url).events(["customer.created"], SINCE)

    assert [json.loads(body)["id"] for body in found] == [e["id"] for e in same_second]


def test_events_asks_for_at_most_twenty_types_a_call(standin: StripeStandin, url: str) -> None:
    types = [f"customer.test_type_{n}" for n in range(MAX_TYPES + 5)]
    people = stripe_standin.customers(len(types), start=SINCE)
    standin.add(stripe_standin.event(t, c) for t, c in zip(types, people, strict=True))

    found = [json.loads(body)["type"] for body in api(RESTRICTED_KEY, url).events(types, SINCE)]

    assert found == types  # one a second, oldest first, across both calls
    asked = [sum(name.startswith("types[") for name in r.params) for r in standin.calls()]
    assert asked == [MAX_TYPES, 5]


def test_one_customer_and_those_stripe_does_not_have(standin: StripeStandin, url: str) -> None:
    alive, gone = stripe_standin.customers(2, deleted_every=2)
    live = stripe_standin.customer(7, livemode=True)
    standin.add([alive, gone, live])
    client = api(RESTRICTED_KEY, url)

    assert client.customer(alive["id"]) == alive
    assert client.customer(gone["id"]) is None  # {"deleted": true}
    assert client.customer("cus_NoSuchCustomer00") is None  # 404 resource_missing
    assert client.customer(live["id"]) is None  # a live customer, a test key
    assert api(LIVE_KEY, url).customer(live["id"]) == live
    assert [r.status for r in standin.calls()] == [200, 200, 404, 404, 200]


def test_a_429_is_waited_out_as_long_as_stripe_says(standin: StripeStandin, url: str) -> None:
    standin.add(stripe_standin.customers(3))
    waits: list[float] = []
    standin.rate_limit(2, retry_after=3)

    pages = list(api(RESTRICTED_KEY, url, waits).customer_pages(None))

    assert waits == [3.0, 3.0]
    assert len(pages[0][0]) == 3
    assert [r.status for r in standin.calls()] == [429, 429, 200]


def test_a_429_without_retry_after_backs_off_1_2_4(standin: StripeStandin, url: str) -> None:
    waits: list[float] = []
    standin.rate_limit(3)
    assert api(RESTRICTED_KEY, url, waits).customer("cus_NoSuchCustomer00") is None
    assert waits == [1.0, 2.0, 4.0]


def test_429_after_every_wait_is_a_readable_error(standin: StripeStandin, url: str) -> None:
    waits: list[float] = []
    standin.rate_limit(100)

    with pytest.raises(StripeAPIError) as raised:
        api(RESTRICTED_KEY, url, waits, max_waits=3).events(["customer.created"], SINCE)

    assert waits == [1.0, 2.0, 4.0]
    assert raised.value.kind == "rate_limited" and raised.value.retryable
    assert "429" in str(raised.value) and "try again in a few minutes" in str(raised.value)
    assert len(standin.calls()) == 4


def test_a_key_stripe_refuses(url: str) -> None:
    check = api(UNKNOWN_KEY, url).check()
    assert not check.ok
    assert check.hint == "rk_test_…9c0d"
    assert "Stripe refused the API key rk_test_…9c0d" in check.problems[0]
    assert "replace" in check.problems[0]

    with pytest.raises(StripeAPIError) as raised:
        next(api(UNKNOWN_KEY, url).customer_pages(None))
    assert raised.value.kind == "key_refused" and not raised.value.retryable
    for text in (*check.problems, str(raised.value), repr(raised.value)):
        _shows_no_key(text)


def test_a_restricted_key_without_events_is_told_what_to_tick(url: str) -> None:
    check = api(CUSTOMERS_ONLY_KEY, url).check()

    assert not check.ok
    assert check.kind == "restricted" and check.livemode is False and check.mode == "test"
    assert check.missing == ("rak_event_read",)
    assert "lacks Events: Read" in check.problems[0]
    assert "Developers → API keys" in check.problems[0]
    assert check.account_id == stripe_standin.ACCOUNT_ID  # named in Stripe's 403
    assert check.account_name is None  # a restricted key may not read the account
    assert check.warnings == ()

    with pytest.raises(StripeAPIError) as raised:
        api(CUSTOMERS_ONLY_KEY, url).events(["customer.created"], SINCE)
    assert raised.value.kind == "permission" and raised.value.permission == "rak_event_read"
    assert "Events: Read" in str(raised.value)
    for text in (*check.problems, str(raised.value)):
        _shows_no_key(text)


def test_a_restricted_key_with_both_permissions_is_fine(url: str) -> None:
    check = api(RESTRICTED_KEY, url).check()
    assert check.ok and check.missing == () and check.warnings == ()
    assert check.account_id == stripe_standin.ACCOUNT_ID

    live = api(LIVE_KEY, url).check()
    assert live.ok and live.livemode is True and live.mode == "live"


def test_a_secret_key_works_with_a_warning_that_restricted_is_safer(url: str) -> None:
    check = api(SECRET_TEST_KEY, url).check()
    assert check.ok and check.kind == "secret"
    assert check.account_id == stripe_standin.ACCOUNT_ID
    assert check.account_name == stripe_standin.ACCOUNT_NAME
    assert "A restricted key is safer" in check.warnings[0]
    _shows_no_key(check.warnings[0])


def test_a_publishable_key_is_refused_without_asking_stripe(
    standin: StripeStandin, url: str
) -> None:
    check = api("pk_test_51StandinPublishableKeyNotForServers1234", url).check()
    assert not check.ok and "publishable key" in check.problems[0]
    assert standin.calls() == []


def test_a_key_cut_short_when_copied_is_refused_saying_so(standin: StripeStandin, url: str) -> None:
    check = api("rk_test_bogus", url).check()
    assert not check.ok
    assert check.problems == (
        "The key is 13 characters long, too short to be a Stripe API key (they are about 100): "
        "it looks cut short when it was copied. Copy it again from Stripe's dashboard: "
        "Developers → API keys.",
    )
    assert standin.calls() == []


def test_stripe_out_of_reach_names_the_url_and_the_setting() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    client = api(RESTRICTED_KEY, nowhere)
    for call in (client.check, lambda: client.customer("cus_NffrFeUfNV2Hib")):
        with pytest.raises(StripeAPIError) as raised:
            call()
        assert raised.value.kind == "unreachable" and raised.value.retryable
        assert nowhere in str(raised.value) and "BRIDGE_STRIPE_API_URL" in str(raised.value)
        _shows_no_key(str(raised.value))


def test_a_held_page_waits_for_the_test(standin: StripeStandin, url: str) -> None:
    standin.add(stripe_standin.customers(350))
    hold = standin.hold(page=3)
    seen: list[int] = []

    def pager() -> None:
        for page, _ in api(RESTRICTED_KEY, url).customer_pages(None):
            seen.append(len(page))

    thread = threading.Thread(target=pager)
    thread.start()
    assert hold.reached.wait(10)
    assert seen == [100, 100]
    assert [r.status for r in standin.calls()] == [200, 200, 0]  # the third is held
    hold.release()
    thread.join(10)
    assert seen == [100, 100, 100, 50]
