"""The Clerk provider: signatures as Svix makes them, real Clerk payloads as they arrive.

Fixtures are Clerk's published payloads from tests/fixtures/clerk (provenance in its
README); signatures are made with the standard library in tests.helpers.svix_headers, not
with the standardwebhooks package the provider verifies with.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

import providers
from providers.clerk import provider
from tests.helpers import Read, read_with, svix_headers

SECRET = "whsec_5IUwDa9FBtuCMI3Z4ZPIwGRuTUU744zT"
OTHER_SECRET = "whsec_PycOY4nYcfvD2kHiHE4bK6ayAbdt1jSH"
RETIRED_SECRET = "whsec_UnEIK4H1tQaGaNP3VPvuv+L4dcuoMfG9"

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clerk"
USER_ID = "user_29w83sxmDNGwOuEthce5gg56FcC"  # the docs' user, in all three user.* files
MSG_ID = "msg_2dQpLf3hJ8kVx1tNcR6yWb0sZaE"


def fixture(event_type: str) -> bytes:
    return (FIXTURES / f"{event_type}.json").read_bytes()


def fixture_json(event_type: str) -> dict:
    return json.loads(fixture(event_type))


def rejection(body: bytes, headers: dict[str, str], secrets: list[str]) -> str:
    with pytest.raises(providers.Rejected) as caught:
        provider.verify(body, headers, secrets)
    reason = str(caught.value)
    for secret in secrets:
        key = secret.removeprefix("whsec_").strip()
        assert len(key) < 4 or (secret not in reason and key[:12] not in reason)
    return reason


def parse_rejection(body: bytes, headers: dict[str, str] | None = None) -> str:
    with pytest.raises(providers.Rejected) as caught:
        provider.parse(body, {"svix-id": MSG_ID} if headers is None else headers)
    return str(caught.value)


def assert_loops_properties(properties: dict) -> None:
    for key, value in properties.items():
        assert key.isascii() and key.isalnum() and key[0].islower(), key
        assert isinstance(value, str | int | float | bool), key
        assert not isinstance(value, str) or (0 < len(value.strip()) and len(value) + 2 <= 500)


def read(body: bytes, msg_id: str = MSG_ID) -> Read:
    return read_with(provider, body, {"svix-id": msg_id})


def parse(event: dict) -> Read:
    return read(json.dumps(event).encode())


def user_event(**data) -> dict:
    """The docs' user.created with some of its user's fields changed."""
    event = fixture_json("user.created")
    event["data"].update(data)
    return event


# --- the provider as the core sees it ---


def test_registered_under_its_name():
    clerk = providers.get("clerk")
    assert clerk is provider
    assert (clerk.name, clerk.label, clerk.contact_source) == ("clerk", "Clerk", "Clerk webhook")
    assert clerk.event_types == (
        "user.created",
        "user.updated",
        "user.deleted",
        "waitlistEntry.created",
        "waitlistEntry.updated",
    )
    assert clerk.new_secret() is None  # Clerk makes the secret


def test_svix_headers_helper_matches_the_standard_webhooks_test_vector():
    # The test vector of the Standard Webhooks specification, which Svix's libraries test
    # against too: secret, id, timestamp, body and signature as published.
    body = b'{"test": 2432232314}'
    headers = svix_headers(
        body, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1614265330, "msg_p5jXN8AQM9LWM0D4loKWxJek"
    )
    assert headers["svix-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# --- verify ---


@pytest.mark.parametrize(
    "event_type",
    [
        "user.created",
        "user.updated",
        "user.deleted",
        "waitlistEntry.created",
        "waitlistEntry.updated",
        "session.created",
    ],
)
def test_real_events_signed_as_svix_signs_are_accepted(event_type):
    body = fixture(event_type)
    provider.verify(body, svix_headers(body, SECRET), [SECRET])


def test_header_names_in_any_case_and_starlette_headers_as_in_production():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    provider.verify(body, Headers(headers=headers), [SECRET])
    titled = {name.title(): value for name, value in headers.items()}  # Svix-Id, ...
    provider.verify(body, titled, [SECRET])
    assert provider.parse(body, titled).id == headers["svix-id"]
    assert provider.parse(body, Headers(headers=headers)).id == headers["svix-id"]


def test_any_of_the_endpoints_secrets_verifies():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    provider.verify(body, headers, [OTHER_SECRET, SECRET])
    provider.verify(body, headers, [SECRET, OTHER_SECRET])
    provider.verify(body, headers, ["", "whsec_", "whsec_%%%", SECRET])  # unusable ones skipped


def test_a_rolled_secret_two_signatures_in_one_header():
    # While a secret is rolled Svix sends one v1 per active secret, space-separated.
    body = fixture("user.updated")
    t = int(time.time())
    retired = svix_headers(body, RETIRED_SECRET, t, MSG_ID)["svix-signature"]
    current = svix_headers(body, SECRET, t, MSG_ID)["svix-signature"]
    for signature in (f"{retired} {current}", f"{current} {retired}"):
        headers = {"svix-id": MSG_ID, "svix-timestamp": str(t), "svix-signature": signature}
        provider.verify(body, headers, [SECRET])
        provider.verify(body, headers, [OTHER_SECRET, RETIRED_SECRET])
        reason = rejection(body, headers, [OTHER_SECRET])
        assert "does not match any of the endpoint's signing secrets" in reason


def test_other_schemes_are_skipped():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    headers["svix-signature"] = "v2,c2lnbmVkIHdpdGggdjI= " + headers["svix-signature"]
    provider.verify(body, headers, [SECRET])


def test_wrong_secret_is_refused_with_where_to_find_the_right_one():
    body = fixture("user.created")
    reason = rejection(body, svix_headers(body, OTHER_SECRET), [SECRET, RETIRED_SECRET])
    assert reason.startswith(
        "The signature does not match any of the endpoint's signing secrets: paste the "
        "endpoint's Signing Secret (whsec_...) from Clerk's dashboard: Webhooks → your "
        "endpoint → Signing Secret."
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"first_name": "Example"', b'"first_name": "Mallory"'), (b"}", b"} ")],
)
def test_tampered_body_is_refused(old, new):
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    reason = rejection(body.replace(old, new, 1), headers, [SECRET])
    assert "rewrites the body" in reason


def test_tampered_svix_id_or_timestamp_is_refused():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    other_id = {**headers, "svix-id": "msg_2dQpLf3hJ8kVx1tNcR6yWb0sZaF"}
    assert "does not match" in rejection(body, other_id, [SECRET])
    earlier = {**headers, "svix-timestamp": str(int(headers["svix-timestamp"]) - 1)}
    assert "does not match" in rejection(body, earlier, [SECRET])


def test_stale_timestamp_is_refused_as_replay():
    body = fixture("user.created")
    for ago in (301, 86_400):
        headers = svix_headers(body, SECRET, timestamp=int(time.time()) - ago)
        reason = rejection(body, headers, [SECRET])
        assert "svix-timestamp is more than 300 s old" in reason
        assert "replay" in reason and "clock" in reason


def test_timestamp_from_the_future_is_refused():
    body = fixture("user.created")
    for ahead in (301, 86_400):
        headers = svix_headers(body, SECRET, timestamp=int(time.time()) + ahead)
        reason = rejection(body, headers, [SECRET])
        assert "svix-timestamp is more than 300 s in the future" in reason
        assert "clock" in reason


def test_timestamps_within_300_s_either_way_are_accepted():
    body = fixture("user.created")
    for offset in (-240, 240):
        headers = svix_headers(body, SECRET, timestamp=int(time.time()) + offset)
        provider.verify(body, headers, [SECRET])


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_missing_header_is_refused(missing):
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    without = {name: value for name, value in headers.items() if name != missing}
    for sent in (without, {**headers, missing: ""}):
        reason = rejection(body, sent, [SECRET])
        assert reason.startswith(f"The request has no {missing} header: is this request from")


def test_a_standard_webhooks_request_without_svix_names_is_refused():
    body = fixture("user.created")
    headers = {
        name.replace("svix-", "webhook-"): value
        for name, value in svix_headers(body, SECRET).items()
    }
    assert "no svix-id header" in rejection(body, headers, [SECRET])


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        ("garbage", "no v1 signature"),
        ("v1", "no v1 signature"),
        ("v1a,c2lnbmF0dXJl", "no v1 signature"),
        ("v1,abc,def", "malformed"),  # two commas
        ("v1,abc", "malformed"),  # not base64
        ("v1,c2lnbmF0dXJl  v1,c2lnbmF0dXJl", "malformed"),  # two spaces
        ("garbage v1,c2lnbmF0dXJl", "malformed"),
        ("v1,é" + "A" * 43, "malformed"),  # not ASCII
        ("v1,c2lnbmF0dXJl\tv1,c2lnbmF0dXJl", "malformed"),
        ("v1,c2lnbmF0dXJl", "does not match"),  # valid base64, another signature
        ("v1,", "does not match"),
        ("v1,!!!!", "does not match"),  # the library skips what is not base64 alphabet
    ],
)
def test_mangled_signature_is_refused_with_a_reason(signature, reason):
    body = fixture("user.created")
    headers = {**svix_headers(body, SECRET), "svix-signature": signature}
    assert reason in rejection(body, headers, [SECRET])


def test_a_mangled_signature_after_a_valid_one_is_never_read():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    headers["svix-signature"] += " v1,abc,def"
    provider.verify(body, headers, [SECRET])


def test_more_than_ten_signatures_or_a_long_header_is_refused():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    filler = " ".join(["v1,c2lnbmF0dXJl"] * 9)
    provider.verify(
        body, {**headers, "svix-signature": f"{headers['svix-signature']} {filler}"}, [SECRET]
    )
    eleven = f"{headers['svix-signature']} {filler} v1,c2lnbmF0dXJl"
    reason = rejection(body, {**headers, "svix-signature": eleven}, [SECRET])
    assert "more than 10 signatures" in reason
    long = f"{headers['svix-signature']} v2,{'A' * 2100}"
    assert "longer than 2048 characters" in rejection(
        body, {**headers, "svix-signature": long}, [SECRET]
    )


@pytest.mark.parametrize(
    "timestamp", ["1.7e9", " 1716883200", "1716883200.0", "-5", "abc", "9" * 13, "١٢٣"]
)
def test_a_timestamp_that_is_not_whole_seconds_is_refused(timestamp):
    body = fixture("user.created")
    headers = {**svix_headers(body, SECRET), "svix-timestamp": timestamp}
    assert "not a unix time in whole seconds" in rejection(body, headers, [SECRET])


@pytest.mark.parametrize("msg_id", ["msg_\u0000", "msg_" + "x" * 300, "msg_é", "msg 1\n"])
def test_an_svix_id_that_cannot_be_a_dedupe_key_is_refused(msg_id):
    body = fixture("user.created")
    headers = svix_headers(body, SECRET, msg_id=msg_id)
    assert "svix-id header is longer than 255" in rejection(body, headers, [SECRET])
    assert "svix-id header is longer than 255" in parse_rejection(body, {"svix-id": msg_id})


def test_body_that_is_not_utf8_is_refused():
    body = b'{"type": "user.created", "data": {"first_name": "\xff"}}'
    reason = rejection(body, svix_headers(body, SECRET), [SECRET])
    assert "not UTF-8" in reason
    assert "not JSON" in parse_rejection(body)


def test_no_secret_configured_is_refused():
    body = fixture("user.created")
    for secrets in ([], ["", "  "]):
        reason = rejection(body, svix_headers(body, SECRET), secrets)
        assert reason.startswith("This endpoint has no signing secret yet")
        assert "Webhooks → your endpoint → Signing Secret" in reason


@pytest.mark.parametrize("secrets", [["whsec_"], ["whsec_!!!!"], ["whsec_abcde", "whsec_%"]])
def test_secrets_that_are_not_clerk_secrets_are_refused(secrets):
    body = fixture("user.created")
    reason = rejection(body, svix_headers(body, SECRET), secrets)
    assert "None of this endpoint's signing secrets is a Clerk signing secret" in reason


def test_signatures_are_compared_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = fixture("user.created")
    provider.verify(body, svix_headers(body, SECRET), [SECRET])
    rejection(body, svix_headers(body, OTHER_SECRET), [SECRET])
    assert len(compared) == 2


# --- parse and details: real events ---


def test_user_created():
    body = fixture("user.created")
    assert read(body) == Read(
        id=MSG_ID,
        type="user.created",
        occurred_at=1654012591,  # 1654012591835 ms in the body
        email="example@example.org",
        user_id=USER_ID,
        deletion=False,
        first_name="Example",
        last_name="Example",
        properties={
            "clerkEventType": "user.created",
            "userId": USER_ID,
            "externalId": "567772",
            "imageUrl": "https://img.clerk.com/xxxxxx",
            "createdAt": "2022-05-31T15:56:31Z",
        },  # username is null: no username
    )


def test_user_updated_takes_the_primary_address_not_the_first():
    body = fixture("user.updated")
    data = fixture_json("user.updated")["data"]
    assert data["email_addresses"][0]["email_address"] == "example@example.org"
    event = read(body)
    assert (event.type, event.email, event.user_id) == (
        "user.updated",
        "example.renamed@example.com",
        USER_ID,
    )
    assert event.occurred_at == 1654012824
    assert (event.first_name, event.last_name) == ("Renamed", "Person")
    assert not event.deletion


def test_user_deleted_carries_only_the_id():
    event = read(fixture("user.deleted"))
    assert event == Read(
        id=MSG_ID,
        type="user.deleted",
        occurred_at=1716883200,  # seconds in the body
        email=None,
        user_id=USER_ID,
        deletion=True,
        first_name=None,
        last_name=None,
        properties={
            "clerkEventType": "user.deleted",
            "userId": USER_ID,
            "externalId": "ex_123456789",
        },
    )


@pytest.mark.parametrize(("event_type", "status"), [("created", "pending"), ("updated", "invited")])
def test_waitlist_entries_carry_an_email_and_no_user_id(event_type, status):
    event = read(fixture(f"waitlistEntry.{event_type}"))
    assert event == Read(
        id=MSG_ID,
        type=f"waitlistEntry.{event_type}",
        occurred_at=1716883200,
        email="john.doe@example.com",
        user_id=None,  # wle_... is the entry's id, not a user's
        deletion=False,
        first_name=None,
        last_name=None,
        properties={
            "clerkEventType": f"waitlistEntry.{event_type}",
            "waitlistEntryId": "wle_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
            "waitlistStatus": status,
            "createdAt": "2024-05-28T08:00:00Z",
        },
    )


def test_session_created_parses_with_its_type_and_nothing_from_its_user():
    # data.user is a whole user (John Doe): a trap for a parser that looks anywhere for names.
    event = read(fixture("session.created"))
    assert event == Read(
        id=MSG_ID,
        type="session.created",
        occurred_at=1716883200,
        email=None,
        user_id=None,
        deletion=False,
        first_name=None,
        last_name=None,
        properties={"clerkEventType": "session.created"},
    )
    assert event.type not in provider.event_types


def test_the_dedupe_key_is_the_svix_id():
    body = fixture("user.created")
    assert read(body, "msg_a").id == "msg_a"
    assert read(body, "msg_b").id == "msg_b"
    assert "no svix-id header" in parse_rejection(body, {})


@pytest.mark.parametrize(
    ("timestamp", "seconds"),
    [
        (1716883200, 1716883200),  # the OpenAPI examples: seconds
        (1716883200123, 1716883200),  # the docs: milliseconds
        (99_999_999_999, 99_999_999_999),  # the largest read as seconds (year 5138)
        (100_000_000_000, 100_000_000),  # the smallest read as milliseconds (1973)
        (0, 0),
    ],
)
def test_timestamp_seconds_or_milliseconds_by_magnitude(timestamp, seconds):
    assert parse({**fixture_json("user.created"), "timestamp": timestamp}).occurred_at == seconds


@pytest.mark.parametrize(
    ("data", "email"),
    [
        ({"primary_email_address_id": None}, None),  # a user who signed up with a phone
        ({"primary_email_address_id": "idn_gone"}, None),
        ({"email_addresses": []}, None),  # as in the OpenAPI examples
        ({"email_addresses": None}, None),
        ({"email_addresses": ["example@example.org"]}, None),
        (
            {
                "email_addresses": [
                    {"id": "idn_29w83yL7CwVlJXylYLxcslromF1", "email_address": " Ex@Example.org\n"}
                ]
            },
            "Ex@Example.org",
        ),
        ({"email_addresses": [{"id": "idn_29w83yL7CwVlJXylYLxcslromF1"}]}, None),
    ],
)
def test_user_email_is_the_primary_address_trimmed_or_none(data, email):
    event = parse(user_event(**data))
    assert (event.email, event.user_id) == (email, USER_ID)


def test_an_email_with_control_characters_is_refused():
    body = fixture("user.created").replace(b"example@example.org", b"example@example.org\\u0000")
    assert "not an email address" in parse_rejection(body)
    long = fixture("waitlistEntry.created").replace(b"john.doe@", b"j" * 400 + b"@")
    assert "not an email address" in parse_rejection(long)


def test_a_user_id_that_cannot_be_stored_is_refused():
    event = user_event(id="user_\u0000")
    assert "not a Clerk user id" in parse_rejection(json.dumps(event).encode())
    assert parse(user_event(id=None)).user_id is None


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("Jenny", "Rosen", ("Jenny", "Rosen")),
        ("  Mary ", " Jane Watson ", ("Mary", "Jane Watson")),
        (None, None, (None, None)),
        ("", "   ", (None, None)),
        (42, ["x"], (None, None)),
    ],
)
def test_names_are_trimmed_and_never_empty(first, last, expected):
    event = parse(user_event(first_name=first, last_name=last))
    assert (event.first_name, event.last_name) == expected


def test_properties_are_cut_to_loops_limit_and_never_empty():
    event = parse(user_event(username="u" * 600, external_id="", image_url="  "))
    assert event.properties["username"] == "u" * 498  # 500 with the quotes Loops counts
    assert "externalId" not in event.properties
    assert "imageUrl" not in event.properties
    event = parse(user_event(created_at="yesterday", id=7, username={"a": 1}, external_id=None))
    assert event.properties == {
        "clerkEventType": "user.created",
        "imageUrl": "https://img.clerk.com/xxxxxx",
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b"[]", "not an object"),
        (b'"user.created"', "not an object"),
        (b'{"object": "event", "timestamp": 1, "data": {}}', "no valid type"),
        (b'{"type": "user.created", "timestamp": "1", "data": {}}', "no valid timestamp"),
        (b'{"type": "user.created", "timestamp": -1, "data": {}}', "no valid timestamp"),
        (b'{"type": "user.created", "timestamp": 1.5, "data": {}}', "no valid timestamp"),
        (b'{"type": "user.created", "timestamp": true, "data": {}}', "no valid timestamp"),
        (b'{"type": "user.created", "timestamp": 1, "data": []}', "no valid data"),
        (b'{"type": "user.created\\n", "timestamp": 1}', "no valid type, data"),
        (b'{"type": "x", "timestamp": 1, "data": {}, "type": "user.deleted"}', "same key twice"),
        (b'{"type": "x", "timestamp": 1, "data": {"id": 1, "\\u0069d": 2}}', "same key twice"),
        (b'{"type": "x", "timestamp": NaN, "data": {}}', "not JSON"),
        (b'{"type": "\\ud800", "timestamp": 1, "data": {}}', "not JSON"),
    ],
)
def test_bodies_that_are_not_clerk_events_are_refused(body, reason):
    assert reason in parse_rejection(body)


def test_a_clerk_object_that_is_not_an_event_is_refused():
    user = fixture_json("user.created")["data"]
    assert "a Clerk user object, not an event" in parse_rejection(json.dumps(user).encode())
    for kind in ("\u001b[31mred", "x" * 41, ["user"], user, "{'id': 'user_29w83sxmDNGwOuEth'}"):
        junk = json.dumps({**fixture_json("user.created"), "object": kind}).encode()
        assert parse_rejection(junk).startswith("The body is an object, not an event")


@pytest.mark.parametrize("depth", [254, 255, 1024, 1025, 100_000])
def test_deep_nesting_is_refused_with_a_reason(depth):
    body = fixture("user.created").replace(
        b'"public_metadata": {}', b'"public_metadata": ' + b"[" * depth + b"]" * depth, 1
    )
    assert "nested more than 254 levels" in parse_rejection(body)


def test_repeated_keys_anywhere_are_refused():
    body = fixture("user.updated")
    for old, new in [
        (b'"type": "user.updated"', b'"type": "user.created", "type": "user.updated"'),
        (
            b'"primary_email_address_id": ',
            b'"primary_email_address_id": "x", "prim\\u0061ry_email_address_id": ',
        ),
        (b'"public_metadata": {}', b'"public_metadata": {"plan": 1, "plan": 2}'),
    ]:
        repeated = body.replace(old, new, 1)
        assert repeated != body
        assert "same key twice" in parse_rejection(repeated)


# --- secret_problem, redact ---


@pytest.mark.parametrize(
    "secret",
    [SECRET, OTHER_SECRET, RETIRED_SECRET, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_YWJj"],
)
def test_clerk_secrets_have_no_problem(secret):
    assert provider.secret_problem(secret) is None
    assert provider.secret_problem(secret.rstrip("=")) is None  # unpadded base64


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "whsec_",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_not base64!",
        "sk_live_1234",
        "whsec_a",
    ],
)
def test_other_secrets_are_refused_saying_where_the_right_one_is(secret):
    problem = provider.secret_problem(secret)
    assert problem is not None
    assert "whsec_ followed by base64" in problem
    assert "Clerk's dashboard: Webhooks → your endpoint → Signing Secret" in problem
    assert secret in ("", "whsec_") or secret not in problem


def test_redact_shows_only_each_signatures_scheme_and_the_id_and_time_as_they_are():
    body = fixture("user.created")
    headers = svix_headers(body, SECRET)
    signature = headers["svix-signature"]
    rolled = f"{signature} {svix_headers(body, OTHER_SECRET)['svix-signature']}"
    assert provider.redact("svix-signature", signature) == "v1,…"
    assert provider.redact("Svix-Signature", rolled) == "v1,… v1,…"
    assert provider.redact("svix-signature", "v1a,abcdefgh garbage secret,x") == "v1a,… … …"
    assert provider.redact("svix-signature", "") == ""
    assert provider.redact("svix-id", headers["svix-id"]) == headers["svix-id"]
    assert provider.redact("Svix-Timestamp", "1700000000") == "1700000000"
    for name in ("stripe-signature", "content-type", "x-webhook-secret"):
        assert provider.redact(name, "v1,abc") is None


# --- sample ---


@pytest.mark.parametrize("event_type", provider.event_types)
def test_sample_round_trip(event_type):
    body, headers = provider.sample(event_type, "jenny.rosen@example.com", SECRET)
    provider.verify(body, Headers(headers=headers), [SECRET])
    provider.verify(body, headers, [OTHER_SECRET, SECRET])
    # Signed exactly as Svix signs: the stdlib signer agrees with the header.
    t, msg_id = int(headers["svix-timestamp"]), headers["svix-id"]
    assert headers["svix-signature"] == svix_headers(body, SECRET, t, msg_id)["svix-signature"]
    assert abs(t - time.time()) < 60
    assert msg_id.startswith("msg_") and len(msg_id) == 31
    event = read(body, msg_id)
    assert (event.id, event.type, event.deletion) == (
        msg_id,
        event_type,
        event_type == "user.deleted",
    )
    assert abs(event.occurred_at - time.time()) < 60
    assert event.properties["clerkEventType"] == event_type
    if event_type.startswith("user."):
        assert event.user_id and event.user_id.startswith("user_") and len(event.user_id) == 32
    else:
        assert event.user_id is None
    if event_type == "user.deleted":
        assert event.email is None
        assert set(json.loads(body)["data"]) == {"deleted", "id", "object"}
    else:
        assert event.email == "jenny.rosen@example.com"
    assert (event.first_name, event.last_name) == (None, None)  # it never renames a contact


def test_samples_act_on_one_user_per_email_with_fresh_svix_ids():
    def sent(event_type: str, email: str) -> providers.Event:
        body, headers = provider.sample(event_type, email, SECRET)
        return provider.parse(body, headers)

    created, deleted = sent("user.created", "a@example.com"), sent("user.deleted", "A@example.com")
    assert created.user_id == deleted.user_id
    assert sent("user.created", "b@example.com").user_id != created.user_id
    assert sent("user.created", "a@example.com").id != created.id


def test_a_sample_is_about_the_user_it_is_given():
    """The admin gives the userId Loops has for the contact: the test leaves it as it is."""
    for event_type in ("user.created", "user.updated", "user.deleted"):
        body, headers = provider.sample(event_type, "a@example.com", SECRET, user_id="user_2abc")
        assert provider.parse(body, headers).user_id == "user_2abc"
    body, headers = provider.sample("waitlistEntry.created", "a@example.com", SECRET, "user_2x")
    assert provider.parse(body, headers).user_id is None


def test_sample_keeps_the_email_as_it_is():
    body, headers = provider.sample("user.created", "Zoë.Ünïcode@Example.com", SECRET)
    provider.verify(body, headers, [SECRET])
    assert provider.parse(body, headers).email == "Zoë.Ünïcode@Example.com"


def test_sample_of_unknown_type_or_with_a_bad_secret_is_an_error():
    with pytest.raises(ValueError, match="no sample"):
        provider.sample("session.created", "a@example.com", SECRET)
    with pytest.raises(ValueError, match="not a Clerk one") as caught:
        provider.sample("user.created", "a@example.com", "whsec_")
    assert "whsec_" not in str(caught.value).replace("(whsec_ followed", "")


# --- whatever arrives, only Rejected escapes verify and parse ---

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIXTURE_BODIES = [fixture(name.stem) for name in sorted(FIXTURES.glob("*.json"))]
HEADER_NAMES = st.sampled_from(
    ["svix-id", "Svix-Id", "svix-timestamp", "SVIX-TIMESTAMP", "svix-signature", "other"]
)
BASE64 = st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode())
ENTRY = st.one_of(
    BASE64.map("v1,".__add__),
    st.tuples(st.sampled_from(["v1", "v2", "", "v1,v1"]), st.text(max_size=50)).map(",".join),
    st.text(max_size=60),
)
SIGNATURE = st.lists(ENTRY, max_size=12).map(" ".join)
TIMESTAMP = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-600, 600).map(lambda ahead: str(int(time.time()) + ahead)),
    st.text(max_size=20),
)
BODY = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(FIXTURE_BODIES),
    st.tuples(st.sampled_from(FIXTURE_BODIES), st.integers(0, 3000), st.binary(max_size=20)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    ),
)
SECRETS = st.one_of(
    st.just([SECRET]),
    st.lists(
        st.one_of(st.just(SECRET), st.text(max_size=40), BASE64.map("whsec_".__add__)),
        max_size=3,
    ),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
ADDRESS = st.fixed_dictionaries(
    {"id": st.sampled_from(["idn_1", "idn_2"]) | JSON, "email_address": st.text() | JSON}
)
DATA = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "id": st.text() | JSON,
            "primary_email_address_id": st.sampled_from(["idn_1", "idn_2"]) | JSON,
            "email_addresses": st.lists(ADDRESS, max_size=3) | JSON,
            "email_address": st.text() | JSON,
            "first_name": st.text() | JSON,
            "last_name": st.text() | JSON,
            "username": st.text() | JSON,
            "created_at": st.integers() | JSON,
            "status": st.text() | JSON,
        }
    ),
)
EVENT = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from([*provider.event_types, "session.created"]) | st.text(),
            "timestamp": st.integers() | JSON,
            "data": DATA,
        },
        optional={"object": st.sampled_from(["event", "user"]) | JSON},
    ),
)


@FUZZ
@given(
    body=BODY,
    headers=st.dictionaries(HEADER_NAMES, st.text(max_size=80)),
    signature=SIGNATURE,
    timestamp=TIMESTAMP,
    secrets=SECRETS,
)
def test_any_request_is_verified_or_rejected(body, headers, signature, timestamp, secrets):
    mixed = {**headers, "svix-signature": signature, "svix-timestamp": timestamp}
    for candidate in (headers, mixed, {**svix_headers(body, SECRET), **headers}):
        try:
            provider.verify(body, candidate, secrets)
        except providers.Rejected as rejected:
            for secret in secrets:
                assert len(secret) < 12 or secret not in str(rejected)
        try:
            provider.parse(body, candidate)
        except providers.Rejected:
            continue
        provider.details(body)


@FUZZ
@given(event=EVENT, msg_id=st.none() | st.text(max_size=40))
def test_any_signed_json_parses_or_is_rejected(event, msg_id):
    body = json.dumps(event).encode()
    headers = svix_headers(body, SECRET, msg_id=msg_id or None)
    try:
        provider.verify(body, headers, [SECRET])
    except providers.Rejected:
        assert msg_id and not (msg_id.isascii() and msg_id.isprintable())
        return
    try:
        parsed = provider.parse(body, headers)
    except providers.Rejected:
        return
    details = provider.details(body)
    assert_loops_properties(details.properties)
    assert parsed.email is None or (parsed.email.strip() == parsed.email and parsed.email)
    assert parsed.type == event["type"]
    assert parsed.user_id is None or parsed.type.startswith("user.")
