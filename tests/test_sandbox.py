"""The Loops sandbox, driven in-process through httpx's ASGI transport.

Time is a fake clock handed to the app, so rate-limit and idempotency windows need no sleeps.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from bridge.sandbox import create_app

KEY = "sk_test_alpha_000000000001a2b"
OTHER_KEY = "sk_test_beta_0000000000009c8d"
HINT, OTHER_HINT = "…1a2b", "…9c8d"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """A synchronous face on ``httpx.AsyncClient(transport=ASGITransport(app))``."""

    def __init__(self, app: Starlette, key: str | None = KEY) -> None:
        self.app = app
        self.key = key

    def request(self, method: str, path: str, *, key: str | None = "", **kwargs: Any):
        key = self.key if key == "" else key
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as c:
                return await c.request(method, path, headers=headers, **kwargs)

        return anyio.run(send)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> Client:
    return Client(create_app(rate_limit=1000, clock=clock))


def create(client: Client, **body: Any) -> httpx.Response:
    return client.post("/api/v1/contacts/create", json=body)


def send_event(client: Client, idempotency_key: str | None = None, **body: Any):
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return client.post("/api/v1/events/send", json=body, headers=headers)


def find(client: Client, **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/contacts/find", params=params)
    assert response.status_code == 200
    return response.json()


# --- authentication ------------------------------------------------------------------------

LOOPS_CALLS = [
    ("GET", "/api/v1/api-key"),
    ("POST", "/api/v1/contacts/create"),
    ("PUT", "/api/v1/contacts/update"),
    ("GET", "/api/v1/contacts/find?email=a@example.com"),
    ("POST", "/api/v1/contacts/delete"),
    ("POST", "/api/v1/events/send"),
]


def test_api_key_names_the_team_by_the_key_hint(client: Client) -> None:
    response = client.get("/api/v1/api-key")
    assert response.status_code == 200
    assert response.json() == {"success": True, "teamName": f"Sandbox team {HINT}"}


@pytest.mark.parametrize(("method", "path"), LOOPS_CALLS)
def test_a_key_not_configured_is_401_everywhere(method: str, path: str) -> None:
    client = Client(create_app(api_keys=[KEY]), key=OTHER_KEY)
    response = client.request(method, path, json={"email": "a@example.com"})
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "message": "Invalid API key",
        "error": "Invalid API key",
    }
    assert response.headers["x-ratelimit-limit"] == "10"


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic abc", "abc"])
def test_a_missing_or_malformed_authorization_is_401(authorization: str | None) -> None:
    client = Client(create_app(), key=None)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/api/v1/api-key", headers=headers)
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid API key"


def test_without_configured_keys_each_key_is_its_own_team(client: Client) -> None:
    assert create(client, email="a@example.com").status_code == 200
    assert create(client, email="a@example.com").status_code == 409
    assert (
        client.post(
            "/api/v1/contacts/create", key=OTHER_KEY, json={"email": "a@example.com"}
        ).status_code
        == 200
    )
    assert client.get("/api/v1/contacts/find?email=b@example.com", key=OTHER_KEY).json() == []


# --- contacts ------------------------------------------------------------------------------


def test_creating_an_existing_email_is_409(client: Client) -> None:
    first = create(client, email="ada@example.com", firstName="Ada")
    assert first.status_code == 200
    assert first.json()["success"] is True and first.json()["id"]
    again = create(client, email="ADA@example.com")
    assert again.status_code == 409
    assert again.json() == {"success": False, "message": "Email or userId already exists"}


def test_creating_an_existing_user_id_is_409(client: Client) -> None:
    assert create(client, email="ada@example.com", userId="u1").status_code == 200
    assert create(client, email="other@example.com", userId="u1").status_code == 409


def test_create_applies_loops_defaults_and_custom_properties(client: Client) -> None:
    create(client, email="ada@example.com", firstName="Ada", plan="pro")
    (contact,) = find(client, email="ada@example.com")
    assert contact == {
        "id": contact["id"],
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": None,
        "source": "API",
        "subscribed": True,
        "userGroup": "",
        "userId": None,
        "mailingLists": {},
        "optInStatus": None,
        "plan": "pro",
    }


def test_update_changes_only_the_fields_sent(client: Client) -> None:
    create(client, email="ada@example.com", firstName="Ada", source="Stripe", userGroup="vip")
    create_id = find(client, email="ada@example.com")[0]["id"]
    response = client.put(
        "/api/v1/contacts/update", json={"email": "ada@example.com", "lastName": "Lovelace"}
    )
    assert response.status_code == 200
    assert response.json() == {"success": True, "id": create_id}
    (contact,) = find(client, email="ada@example.com")
    assert (contact["firstName"], contact["lastName"]) == ("Ada", "Lovelace")
    assert (contact["source"], contact["userGroup"]) == ("Stripe", "vip")


def test_update_null_resets_a_property(client: Client) -> None:
    create(client, email="ada@example.com", firstName="Ada", plan="pro")
    client.put(
        "/api/v1/contacts/update",
        json={"email": "ada@example.com", "firstName": None, "plan": None},
    )
    (contact,) = find(client, email="ada@example.com")
    assert contact["firstName"] is None
    assert "plan" not in contact


def test_update_is_an_upsert_and_never_409(client: Client) -> None:
    for _ in range(2):
        response = client.put(
            "/api/v1/contacts/update", json={"email": "new@example.com", "userGroup": "trial"}
        )
        assert response.status_code == 200
    (contact,) = find(client, email="new@example.com")
    assert (contact["source"], contact["userGroup"], contact["subscribed"]) == (
        "API",
        "trial",
        True,
    )


def test_update_by_user_id_changes_the_email(client: Client) -> None:
    create(client, email="old@example.com", userId="u1")
    client.put("/api/v1/contacts/update", json={"userId": "u1", "email": "new@example.com"})
    assert find(client, email="old@example.com") == []
    assert find(client, userId="u1")[0]["email"] == "new@example.com"


def test_update_needs_an_email_or_a_known_user_id(client: Client) -> None:
    assert client.put("/api/v1/contacts/update", json={"firstName": "A"}).status_code == 400
    assert client.put("/api/v1/contacts/update", json={"userId": "nobody"}).status_code == 400


def test_find_by_email_or_user_id_returns_an_array(client: Client) -> None:
    create(client, email="ada@example.com", userId="u1")
    assert [c["userId"] for c in find(client, email="ada@example.com")] == ["u1"]
    assert [c["email"] for c in find(client, userId="u1")] == ["ada@example.com"]
    assert find(client, email="nobody@example.com") == []


@pytest.mark.parametrize("query", ["", "?email=a@example.com&userId=u1"])
def test_find_takes_exactly_one_parameter(client: Client, query: str) -> None:
    response = client.get(f"/api/v1/contacts/find{query}")
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_delete_then_delete_again_is_404(client: Client) -> None:
    create(client, email="ada@example.com")
    response = client.post("/api/v1/contacts/delete", json={"email": "ada@example.com"})
    assert response.json() == {"success": True, "message": "Contact deleted."}
    again = client.post("/api/v1/contacts/delete", json={"email": "ada@example.com"})
    assert again.status_code == 404
    assert again.json()["success"] is False
    assert find(client, email="ada@example.com") == []


def test_delete_takes_exactly_one_of_email_and_user_id(client: Client) -> None:
    create(client, email="ada@example.com", userId="u1")
    body = {"email": "ada@example.com", "userId": "u1"}
    assert client.post("/api/v1/contacts/delete", json=body).status_code == 400
    assert client.post("/api/v1/contacts/delete", json={"userId": "u1"}).status_code == 200


# --- events --------------------------------------------------------------------------------


def test_a_reused_idempotency_key_is_409_and_the_event_is_recorded_once(client: Client) -> None:
    body = {"email": "ada@example.com", "eventName": "successfulPayment"}
    assert send_event(client, "evt_1", **body).json() == {"success": True}
    again = send_event(client, "evt_1", **body)
    assert again.status_code == 409
    assert again.json() == {"success": False, "message": "Idempotency key has been used"}
    assert send_event(client, "evt_2", **body).status_code == 200
    events = client.get("/_sandbox/events").json()
    assert [e["idempotencyKey"] for e in events] == ["evt_1", "evt_2"]


def test_idempotency_keys_are_per_team_and_last_24_hours(client: Client, clock: FakeClock):
    body = {"email": "ada@example.com", "eventName": "x"}
    assert send_event(client, "evt_1", **body).status_code == 200
    other = client.post(
        "/api/v1/events/send", key=OTHER_KEY, json=body, headers={"Idempotency-Key": "evt_1"}
    )
    assert other.status_code == 200
    clock.now += 24 * 3600 - 1
    assert send_event(client, "evt_1", **body).status_code == 409
    clock.now += 1
    assert send_event(client, "evt_1", **body).status_code == 200


def test_an_idempotency_key_over_100_characters_is_400(client: Client) -> None:
    body = {"email": "ada@example.com", "eventName": "x"}
    response = send_event(client, "k" * 101, **body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert send_event(client, "k" * 100, **body).status_code == 200
    assert len(client.get("/_sandbox/events").json()) == 1


def test_an_event_upserts_the_contact_from_top_level_properties(client: Client) -> None:
    response = send_event(
        client,
        email="ada@example.com",
        eventName="newStripeCustomer",
        eventProperties={"amount": 42, "currency": "eur", "trial": False},
        firstName="Ada",
        plan="pro",
    )
    assert response.status_code == 200
    (contact,) = find(client, email="ada@example.com")
    assert (contact["firstName"], contact["plan"], contact["source"]) == ("Ada", "pro", "API")
    (event,) = client.get("/_sandbox/events").json()
    assert event == {
        "at": 1000.0,
        "key": HINT,
        "email": "ada@example.com",
        "userId": None,
        "eventName": "newStripeCustomer",
        "eventProperties": {"amount": 42, "currency": "eur", "trial": False},
        "contactProperties": {"firstName": "Ada", "plan": "pro"},
        "mailingLists": {},
        "idempotencyKey": None,
    }


def test_an_event_keeps_an_existing_contacts_source(client: Client) -> None:
    create(client, email="ada@example.com", source="Stripe webhook", userGroup="vip")
    send_event(client, email="ada@example.com", eventName="x", lastName="Lovelace")
    (contact,) = find(client, email="ada@example.com")
    assert (contact["source"], contact["userGroup"]) == ("Stripe webhook", "vip")


def test_event_name_is_required(client: Client) -> None:
    response = send_event(client, email="ada@example.com")
    assert response.status_code == 400
    assert "eventName" in response.json()["message"]


@pytest.mark.parametrize(
    "event_properties",
    [{"plan": {"name": "pro"}}, {"items": [1, 2]}, {"coupon": None}, ["a"], "a", None],
)
def test_event_properties_must_be_a_flat_object(client: Client, event_properties: Any) -> None:
    response = send_event(
        client, email="ada@example.com", eventName="x", eventProperties=event_properties
    )
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert client.get("/_sandbox/events").json() == []


# --- validation shared by the endpoints ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/contacts/create", {}),
        ("PUT", "/api/v1/contacts/update", {}),
        ("POST", "/api/v1/events/send", {"eventName": "x"}),
        ("POST", "/api/v1/contacts/delete", {}),
    ],
)
@pytest.mark.parametrize("email", ["not-an-email", "a@b", "a b@example.com", "@example.com", 7])
def test_an_invalid_email_is_400_with_a_message(
    client: Client, method: str, path: str, body: dict[str, Any], email: Any
) -> None:
    response = client.request(method, path, json={**body, "email": email})
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": f"Invalid email address: {email!r}."}


def test_find_with_an_invalid_email_is_400(client: Client) -> None:
    response = client.get("/api/v1/contacts/find", params={"email": "nope"})
    assert response.status_code == 400


def test_a_value_over_500_characters_quotes_counted_is_400(client: Client) -> None:
    # 498 characters plus two quotes is the longest string Loops accepts.
    fits = create(client, email="a@example.com", note="n" * 498)
    assert fits.status_code == 200
    for body in (
        {"email": "b@example.com", "note": "n" * 499},
        {"email": "b@example.com", "n" * 499: "key too long"},
        {"email": "b@example.com", "eventName": "x", "eventProperties": {"p": "n" * 600}},
    ):
        path = "/api/v1/events/send" if "eventName" in body else "/api/v1/contacts/create"
        response = client.post(path, json=body)
        assert response.status_code == 400
        assert response.json() == {
            "success": False,
            "message": "Some body key or value is longer than allowable",
        }
    assert find(client, email="b@example.com") == []


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'"text"', b"null", b"NaN"])
def test_the_body_must_be_a_json_object(client: Client, content: bytes) -> None:
    response = client.post(
        "/api/v1/contacts/create", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["success"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/contacts/update"),
        ("GET", "/api/v1/events/send"),
        ("DELETE", "/api/v1/contacts/delete"),
        ("POST", "/api/v1/api-key"),
    ],
)
def test_a_wrong_method_is_405(client: Client, method: str, path: str) -> None:
    response = client.request(method, path, json={"email": "a@example.com"})
    assert response.status_code == 405
    assert response.json()["success"] is False
    assert "x-ratelimit-remaining" in response.headers


def test_an_endpoint_the_sandbox_does_not_emulate_is_404(client: Client) -> None:
    response = client.post("/api/v1/transactional", json={})
    assert response.status_code == 404
    assert "not emulated" in response.json()["message"]


# --- rate limit ----------------------------------------------------------------------------


@pytest.fixture
def limited(clock: FakeClock) -> Client:
    return Client(create_app(clock=clock))


def test_the_eleventh_request_in_a_second_is_429(limited: Client, clock: FakeClock) -> None:
    remaining = []
    for i in range(10):
        clock.now = 1000.0 + i * 0.09
        response = limited.get("/api/v1/api-key")
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "10"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    response = limited.get("/api/v1/api-key")
    assert response.status_code == 429
    assert response.json() == {
        "success": False,
        "message": "Rate limit of 10 requests per second exceeded.",
    }
    assert response.headers["x-ratelimit-limit"] == "10"
    assert response.headers["x-ratelimit-remaining"] == "0"


def test_the_window_slides_and_a_429_uses_no_quota(limited: Client, clock: FakeClock) -> None:
    for _ in range(5):
        assert limited.get("/api/v1/api-key").status_code == 200
    clock.now += 0.5
    for _ in range(5):
        assert limited.get("/api/v1/api-key").status_code == 200
    for _ in range(3):
        assert limited.get("/api/v1/api-key").status_code == 429
    clock.now += 0.5  # the first five left the window; the 429s never entered it
    statuses = [limited.get("/api/v1/api-key").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    clock.now += 1.0
    assert limited.get("/api/v1/api-key").headers["x-ratelimit-remaining"] == "9"


def test_each_key_has_its_own_rate_limit(limited: Client) -> None:
    for _ in range(10):
        assert limited.get("/api/v1/api-key").status_code == 200
    assert limited.get("/api/v1/api-key").status_code == 429
    other = limited.get("/api/v1/api-key", key=OTHER_KEY)
    assert other.status_code == 200
    assert other.headers["x-ratelimit-remaining"] == "9"


def test_errors_count_against_the_limit_and_carry_the_headers(limited: Client) -> None:
    response = create(limited, email="bad")
    assert response.status_code == 400
    assert response.headers["x-ratelimit-remaining"] == "9"


def test_auth_is_checked_before_the_rate_limit(clock: FakeClock) -> None:
    client = Client(create_app(api_keys=[KEY], clock=clock))
    for _ in range(10):
        assert client.get("/api/v1/api-key").status_code == 200
    assert client.get("/api/v1/api-key", key=OTHER_KEY).status_code == 401
    assert client.get("/api/v1/api-key", key=None).status_code == 401
    assert client.get("/api/v1/api-key").status_code == 429


# --- faults --------------------------------------------------------------------------------


def test_a_fault_with_a_count_answers_that_many_requests(client: Client) -> None:
    set_ = client.post("/_sandbox/faults", json={"status": 503, "count": 2})
    assert set_.json() == {"fault": {"status": 503, "count": 2, "delay": 0.0}}
    for _ in range(2):
        response = create(client, email="ada@example.com")
        assert response.status_code == 503
        assert response.json()["success"] is False
        assert "x-ratelimit-remaining" in response.headers
    assert client.get("/_sandbox/faults").json() == {"fault": None}
    assert create(client, email="ada@example.com").status_code == 200
    assert [r["status"] for r in client.get("/_sandbox/requests").json()] == [503, 503, 200]


def test_a_fault_without_a_count_lasts_until_cleared(client: Client) -> None:
    client.post("/_sandbox/faults", json={"status": 500})
    assert [client.get("/api/v1/api-key").status_code for _ in range(3)] == [500] * 3
    assert client.delete("/_sandbox/faults").json() == {"fault": None}
    assert client.get("/api/v1/api-key").status_code == 200


def test_a_delay_alone_slows_a_normal_answer(client: Client) -> None:
    client.post("/_sandbox/faults", json={"delay": 0.01, "count": 1})
    assert client.get("/api/v1/api-key").status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"status": "503"}, {"status": 99}, {"status": 503, "count": 0}, {"delay": -1}]
)
def test_a_malformed_fault_is_400(client: Client, body: dict[str, Any]) -> None:
    assert client.post("/_sandbox/faults", json=body).status_code == 400
    assert client.get("/_sandbox/faults").json() == {"fault": None}


def test_a_fault_for_one_key_leaves_the_others_alone(client: Client) -> None:
    set_ = client.post("/_sandbox/faults", json={"status": 503, "key": OTHER_KEY})
    assert set_.json() == {"fault": {"status": 503, "count": None, "delay": 0.0, "key": OTHER_HINT}}
    assert client.get("/api/v1/api-key", key=OTHER_KEY).status_code == 503
    assert client.get("/api/v1/api-key").status_code == 200
    assert client.get("/api/v1/api-key", key=OTHER_KEY).status_code == 503


@pytest.mark.parametrize("given", [OTHER_KEY, OTHER_HINT, "...9c8d", "9c8d"])
def test_a_fault_names_its_key_in_full_or_by_hint(client: Client, given: str) -> None:
    fault = client.post("/_sandbox/faults", json={"status": 500, "count": 1, "key": given})
    assert fault.json()["fault"]["key"] == OTHER_HINT
    assert client.get("/api/v1/api-key").status_code == 200
    assert client.get("/api/v1/api-key", key=OTHER_KEY).status_code == 500
    assert client.get("/_sandbox/faults").json() == {"fault": None}


def test_an_injected_401_is_loops_refusing_the_key(clock: FakeClock) -> None:
    client = Client(create_app(api_keys=[KEY, OTHER_KEY], clock=clock))
    client.post("/_sandbox/faults", json={"status": 401, "key": HINT})
    injected = client.get("/api/v1/api-key")
    real = client.get("/api/v1/api-key", key="sk_test_Zq81xV4r00000000ffff")
    assert injected.status_code == real.status_code == 401
    refused = {"success": False, "message": "Invalid API key", "error": "Invalid API key"}
    assert injected.json() == real.json() == refused
    assert injected.headers["x-ratelimit-remaining"] == real.headers["x-ratelimit-remaining"]
    assert client.get("/api/v1/api-key", key=OTHER_KEY).status_code == 200


def test_an_injected_429_is_the_rate_limit(clock: FakeClock) -> None:
    client = Client(create_app(rate_limit=1, clock=clock))
    client.post("/_sandbox/faults", json={"status": 429, "count": 1, "key": HINT})
    injected = client.get("/api/v1/api-key")
    assert client.get("/api/v1/api-key").status_code == 200  # the 429 used no quota
    real = client.get("/api/v1/api-key")
    assert injected.status_code == real.status_code == 429
    assert injected.json() == real.json()
    assert injected.headers["x-ratelimit-remaining"] == real.headers["x-ratelimit-remaining"] == "0"


def test_a_key_uses_its_own_fault_before_the_global_one(client: Client) -> None:
    client.post("/_sandbox/faults", json={"status": 503, "count": 1})
    client.post("/_sandbox/faults", json={"status": 401, "count": 2, "key": HINT})
    assert client.get("/_sandbox/faults").json() == {
        "fault": {"status": 503, "count": 1, "delay": 0.0},
        "byKey": {HINT: {"status": 401, "count": 2, "delay": 0.0, "key": HINT}},
    }
    statuses = [
        client.get("/api/v1/api-key").status_code,
        client.get("/api/v1/api-key", key=OTHER_KEY).status_code,
        client.get("/api/v1/api-key", key=OTHER_KEY).status_code,
        client.get("/api/v1/api-key").status_code,
        client.get("/api/v1/api-key").status_code,
    ]
    assert statuses == [401, 503, 200, 401, 200]
    assert client.get("/_sandbox/faults").json() == {"fault": None}


def test_a_new_fault_for_a_key_replaces_its_old_one(client: Client) -> None:
    client.post("/_sandbox/faults", json={"status": 503, "key": KEY})
    client.post("/_sandbox/faults", json={"status": 429, "count": 3, "key": "...1a2b"})
    assert client.get("/_sandbox/faults").json()["byKey"] == {
        HINT: {"status": 429, "count": 3, "delay": 0.0, "key": HINT}
    }


def test_delete_clears_one_key_or_every_fault(client: Client) -> None:
    client.post("/_sandbox/faults", json={"status": 500})
    client.post("/_sandbox/faults", json={"status": 401, "key": HINT})
    client.post("/_sandbox/faults", json={"status": 429, "key": OTHER_HINT})
    left = client.delete("/_sandbox/faults", params={"key": KEY}).json()
    assert left == {
        "fault": {"status": 500, "count": None, "delay": 0.0},
        "byKey": {OTHER_HINT: {"status": 429, "count": None, "delay": 0.0, "key": OTHER_HINT}},
    }
    assert client.get("/api/v1/api-key").status_code == 500
    assert client.delete("/_sandbox/faults", params={"key": "short"}).status_code == 400
    assert client.delete("/_sandbox/faults").json() == {"fault": None}
    assert client.get("/api/v1/api-key", key=OTHER_KEY).status_code == 200


@pytest.mark.parametrize("key", ["short", "", "…1a2", "...1a2b3", 1234, None])
def test_a_fault_with_a_malformed_key_is_400(client: Client, key: Any) -> None:
    response = client.post("/_sandbox/faults", json={"status": 503, "key": key})
    if key is None:  # null is no key: a global fault
        assert response.json() == {"fault": {"status": 503, "count": None, "delay": 0.0}}
        return
    assert response.status_code == 400
    assert "key must be" in response.json()["message"]
    assert client.get("/_sandbox/faults").json() == {"fault": None}


def test_faults_show_a_key_only_by_its_hint(client: Client) -> None:
    shown = [client.post("/_sandbox/faults", json={"status": 503, "key": KEY}).text]
    shown += [client.get(path).text for path in ("/_sandbox/faults", "/")]
    assert all(KEY not in text and HINT in text for text in shown)
    assert client.get("/").json()["byKey"] == {
        HINT: {"status": 503, "count": None, "delay": 0.0, "key": HINT}
    }
    client.post("/_sandbox/reset")
    assert client.get("/_sandbox/faults").json() == {"fault": None}


# --- inspection ----------------------------------------------------------------------------


def test_the_request_log_records_every_loops_call_in_order(client: Client) -> None:
    create(client, email="ada@example.com")
    send_event(client, "evt_1", email="ada@example.com", eventName="x")
    client.get("/api/v1/contacts/find", params={"email": "ada@example.com"}, key=OTHER_KEY)
    client.post("/api/v1/contacts/create", content=b"oops")
    log = client.get("/_sandbox/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("POST", "/api/v1/contacts/create", 200),
        ("POST", "/api/v1/events/send", 200),
        ("GET", "/api/v1/contacts/find", 200),
        ("POST", "/api/v1/contacts/create", 400),
    ]
    assert log[1] == {
        "at": 1000.0,
        "method": "POST",
        "path": "/api/v1/events/send",
        "query": {},
        "key": HINT,
        "idempotencyKey": "evt_1",
        "body": {"email": "ada@example.com", "eventName": "x"},
        "status": 200,
        "response": {"success": True},
    }
    assert (log[2]["key"], log[2]["query"], log[2]["response"]) == (
        OTHER_HINT,
        {"email": "ada@example.com"},
        [],
    )
    assert log[3]["body"] is None


def test_logged_responses_do_not_change_afterwards(client: Client) -> None:
    create(client, email="ada@example.com", mailingLists={"list1": True})
    find(client, email="ada@example.com")
    client.put(
        "/api/v1/contacts/update", json={"email": "ada@example.com", "mailingLists": {"l2": True}}
    )
    logged = client.get("/_sandbox/requests").json()[1]["response"]
    assert logged[0]["mailingLists"] == {"list1": True}


def test_inspection_lists_filter_by_key_hint(client: Client) -> None:
    create(client, email="a@example.com")
    client.post("/api/v1/contacts/create", key=OTHER_KEY, json={"email": "b@example.com"})
    contacts = client.get("/_sandbox/contacts").json()
    assert [(c["key"], c["email"]) for c in contacts] == [
        (HINT, "a@example.com"),
        (OTHER_HINT, "b@example.com"),
    ]
    for wanted in (OTHER_HINT, "...9c8d", "9c8d"):
        assert [c["email"] for c in client.get(f"/_sandbox/contacts?key={wanted}").json()] == [
            "b@example.com"
        ]
    assert len(client.get("/_sandbox/requests", params={"key": HINT}).json()) == 1
    assert client.get("/_sandbox/events", params={"key": HINT}).json() == []


def test_no_inspection_page_or_log_line_shows_a_full_key(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.sandbox")
    guarded = Client(create_app(api_keys=[KEY]))
    for c in (client, guarded):
        create(c, email="ada@example.com", userId="u1")
        send_event(c, "evt_1", email="ada@example.com", eventName="x")
        c.get("/api/v1/api-key")
        c.get("/api/v1/api-key", key=OTHER_KEY)
        shown = "".join(
            c.get(path).text
            for path in ("/", "/_sandbox/requests", "/_sandbox/contacts", "/_sandbox/events")
        )
        assert KEY not in shown and OTHER_KEY not in shown
        assert HINT in shown
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.sandbox"]
    assert "POST /api/v1/contacts/create 200 key=…1a2b" in lines
    assert "GET /api/v1/api-key 401 key=…9c8d" in lines
    assert not any(KEY in line or OTHER_KEY in line for line in lines)


def test_a_short_key_shows_no_characters(client: Client) -> None:
    response = client.get("/api/v1/api-key", key="short")
    assert response.json()["teamName"] == "Sandbox team …"
    assert client.get("/_sandbox/requests").json()[0]["key"] == "…"


def test_the_summary_counts_what_arrived(client: Client) -> None:
    create(client, email="a@example.com")
    send_event(client, email="a@example.com", eventName="x")
    client.get("/api/v1/api-key", key=OTHER_KEY)
    summary = client.get("/").json()
    assert summary["counts"] == {"requests": 3, "teams": 2, "contacts": 1, "events": 1}
    assert summary["teams"] == [
        {"key": HINT, "contacts": 1, "events": 1},
        {"key": OTHER_HINT, "contacts": 0, "events": 0},
    ]
    assert summary["baseUrl"] == "http://sandbox/api/v1"


def test_reset_clears_everything(client: Client) -> None:
    create(client, email="a@example.com")
    send_event(client, "evt_1", email="a@example.com", eventName="x")
    client.post("/_sandbox/faults", json={"status": 503})
    assert client.post("/_sandbox/reset").json() == {"success": True}
    for path in ("/_sandbox/requests", "/_sandbox/contacts", "/_sandbox/events"):
        assert client.get(path).json() == []
    assert client.get("/_sandbox/faults").json() == {"fault": None}
    assert send_event(client, "evt_1", email="a@example.com", eventName="x").status_code == 200
