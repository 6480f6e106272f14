"""The Supabase provider: Database Webhooks on auth.users, as Supabase's trigger sends them.

Fixtures are the bodies in tests/fixtures/supabase (provenance in its README): an INSERT (a
sign-up), an UPDATE (an email change), a DELETE and an INSERT on public.profiles. Requests
are authenticated by a shared secret in the Loops-Secret header, as Loops' own Supabase
integration has users set up.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

import providers
from providers.supabase import provider
from tests.helpers import Read, read_with

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "supabase"
SECRET = "sb_test_9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"
OTHER_SECRET = "sb_test_0000aaaa1111bbbb2222cccc3333dddd"
USER_ID = "d0c6b5a2-3f4e-4b1a-9c8d-7e6f5a4b3c2d"

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict:
    return json.loads(fixture_bytes(name))


def body_of(webhook: dict) -> bytes:
    return json.dumps(webhook, ensure_ascii=False).encode()


def insert(**fields: Any) -> dict:
    """The INSERT fixture with some fields of its record changed."""
    webhook = fixture_json("INSERT.json")
    webhook["record"].update(fields)
    return webhook


def rejection(headers: Any, secrets: list[str]) -> str:
    with pytest.raises(providers.Rejected) as caught:
        provider.verify(fixture_bytes("INSERT.json"), headers, secrets)
    reason = str(caught.value)
    for secret in secrets:
        assert not secret.strip() or secret not in reason
    return reason


def refusal(body: bytes) -> str:
    with pytest.raises(providers.Rejected) as caught:
        provider.parse(body, {})
    return str(caught.value)


def read(body: bytes) -> Read:
    return read_with(provider, body)


def assert_loops_properties(properties: dict) -> None:
    for key, value in properties.items():
        assert isinstance(value, str | int | float | bool), key
        assert not isinstance(value, str) or 0 < len(value.strip()) <= len(value) <= 498, key


def unix(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text).timestamp())


# --- the provider as the core sees it ---


def test_registered_under_its_name():
    supabase = providers.get("supabase")
    assert supabase is provider
    assert (supabase.name, supabase.label, supabase.contact_source) == (
        "supabase",
        "Supabase",
        "Supabase webhook",
    )
    assert tuple(supabase.event_types) == ("INSERT", "UPDATE", "DELETE")


# --- verify ---


def test_the_right_secret_is_accepted_in_any_header_case():
    body = fixture_bytes("INSERT.json")
    for headers in (
        {"loops-secret": SECRET},
        {"Content-Type": "application/json", "Loops-Secret": SECRET},
        {"LOOPS-SECRET": SECRET},
        Headers(headers={"Loops-Secret": SECRET}),  # as in production
    ):
        provider.verify(body, headers, [SECRET])


def test_any_of_several_secrets_is_accepted():
    # While a secret is replaced the endpoint holds both, and Supabase sends either.
    body = fixture_bytes("INSERT.json")
    provider.verify(body, {"loops-secret": SECRET}, [OTHER_SECRET, SECRET])
    provider.verify(body, {"loops-secret": OTHER_SECRET}, [OTHER_SECRET, SECRET])
    provider.verify(body, {"loops-secret": SECRET}, ["", SECRET])


def test_missing_header_says_where_to_add_it():
    for headers in ({"content-type": "application/json"}, {"loops-secret": ""}):
        reason = rejection(headers, [SECRET])
        assert (
            "no Loops-Secret header: in Supabase, Database → Webhooks → this webhook → "
            "HTTP Headers, add Loops-Secret with the endpoint's secret"
        ) in reason


def test_wrong_secret_is_refused_without_showing_either_value():
    sent = "sb_wrong_value_sent_by_someone_else_1234"
    reason = rejection({"loops-secret": sent}, [SECRET, OTHER_SECRET])
    assert reason.startswith("The Loops-Secret header does not match this endpoint's secret")
    assert "Database → Webhooks → this webhook → HTTP Headers" in reason
    assert sent not in reason


def test_a_secret_that_only_shares_a_prefix_is_refused():
    for sent in (SECRET[:-1], SECRET + "0", SECRET.upper(), SECRET[:32]):
        assert "does not match" in rejection({"loops-secret": sent}, [SECRET])


def test_no_secret_configured_is_refused():
    for secrets in ([], ["", "  "]):
        assert "no secret yet" in rejection({"loops-secret": SECRET}, secrets)


def test_a_header_that_is_not_ascii_does_not_match_and_raises_nothing_else():
    # hmac.compare_digest raises TypeError on a non-ASCII str: the provider compares bytes.
    for sent in ("é" * 40, "\ud800" * 40, SECRET + "é"):
        assert "does not match" in rejection({"loops-secret": sent}, [SECRET])
    assert "does not match" in rejection({"loops-secret": SECRET}, ["é" * 40])


def test_secrets_are_compared_in_constant_time_on_bytes(monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = fixture_bytes("INSERT.json")
    provider.verify(body, {"loops-secret": SECRET}, [SECRET])
    rejection({"loops-secret": OTHER_SECRET}, [SECRET])
    assert compared == [
        (SECRET.encode(), SECRET.encode()),
        (OTHER_SECRET.encode(), SECRET.encode()),
    ]


# --- parse: the real payloads ---


def test_insert_is_a_new_user():
    event = read(fixture_bytes("INSERT.json"))
    record = fixture_json("INSERT.json")["record"]
    assert (event.type, event.email, event.user_id, event.deletion) == (
        "INSERT",
        "ada.lovelace@example.com",
        USER_ID,
        False,
    )
    assert event.occurred_at == unix(record["updated_at"]) == 1741944413
    assert (event.first_name, event.last_name) == ("Ada", "Lovelace")
    assert event.properties == {
        "supabaseEventType": "INSERT",
        "userId": USER_ID,
        "createdAt": "2025-03-14T09:26:53Z",
        "provider": "email",
        "providers": "email",
    }  # email_confirmed_at and last_sign_in_at are null: not confirmed, never signed in


def test_update_carries_the_new_email_for_the_same_user():
    event = read(fixture_bytes("UPDATE.json"))
    assert (event.type, event.email, event.user_id, event.deletion) == (
        "UPDATE",
        "ada.byron@example.com",
        USER_ID,
        False,
    )
    assert event.occurred_at == unix("2025-06-02T17:04:41.302918+00:00")
    assert (event.first_name, event.last_name) == ("Ada", "Lovelace")
    assert event.properties == {
        "supabaseEventType": "UPDATE",
        "userId": USER_ID,
        "createdAt": "2025-03-14T09:26:53Z",
        "emailConfirmedAt": "2025-03-14T09:31:02Z",
        "lastSignInAt": "2025-03-14T09:31:02Z",
        "provider": "email",
        "providers": "email",
        "previousEmail": "ada.lovelace@example.com",
    }


def test_delete_reads_the_old_record_and_is_a_deletion():
    event = read(fixture_bytes("DELETE.json"))
    assert fixture_json("DELETE.json")["record"] is None
    assert (event.type, event.email, event.user_id, event.deletion) == (
        "DELETE",
        "ada.byron@example.com",
        USER_ID,
        True,
    )
    # The row does not change on DELETE: the time of the user's last change, never earlier.
    assert event.occurred_at == read(fixture_bytes("UPDATE.json")).occurred_at
    assert (event.first_name, event.last_name) == ("Ada", "Lovelace")
    assert event.properties["supabaseEventType"] == "DELETE"
    assert "previousEmail" not in event.properties


def test_another_table_parses_to_a_type_no_endpoint_accepts():
    event = read(fixture_bytes("public.profiles.INSERT.json"))
    assert event.type == "public.profiles.INSERT"
    assert event.type not in provider.event_types
    # Its id is a user's and it has names, but another table's row is not read as a user.
    assert (event.email, event.user_id, event.deletion, event.occurred_at) == (None, None, False, 0)


@pytest.mark.parametrize(
    ("schema", "table", "operation", "event_type"),
    [
        ("auth", "identities", "INSERT", "auth.identities.INSERT"),
        ("public", "users", "UPDATE", "public.users.UPDATE"),
        ("auth", "users", "TRUNCATE", "TRUNCATE"),
        ("auth", "Users", "DELETE", "auth.Users.DELETE"),
    ],
)
def test_only_auth_users_rows_have_the_plain_types(schema, table, operation, event_type):
    webhook = {**fixture_json("INSERT.json"), "schema": schema, "table": table, "type": operation}
    event = provider.parse(body_of(webhook), {})
    assert event.type == event_type
    assert event.type not in provider.event_types
    assert (event.email, event.user_id) == (None, None)
    assert provider.details(body_of(webhook)).properties["supabaseEventType"] == event_type


def test_the_documented_user_id_member_is_accepted():
    # The docs' payload type lists `user_id`; the trigger function does not send it.
    event = provider.parse(body_of({**fixture_json("INSERT.json"), "user_id": None}), {})
    assert event.user_id == USER_ID


# --- the dedupe key ---


def test_the_dedupe_key_is_the_sha256_of_the_body():
    for name in ("INSERT.json", "UPDATE.json", "DELETE.json", "public.profiles.INSERT.json"):
        body = fixture_bytes(name)
        assert provider.parse(body, {}).id == hashlib.sha256(body).hexdigest()


def test_an_identical_resend_has_the_same_key_and_any_change_another():
    body = fixture_bytes("UPDATE.json")
    again = bytes(bytearray(body))
    assert provider.parse(body, {}).id == provider.parse(again, {}).id
    ids = {
        provider.parse(other, {}).id
        for other in (
            body,
            body.replace(b"17:04:41.302918", b"17:04:41.302919", 1),  # the next change
            body.replace(b'"type": "UPDATE", ', b'"type": "UPDATE",', 1),  # same JSON, not bytes
            fixture_bytes("INSERT.json"),
            fixture_bytes("DELETE.json"),
        )
    }
    assert len(ids) == 5


# --- parse: the event time ---


@pytest.mark.parametrize(
    ("updated_at", "created_at", "occurred_at"),
    [
        ("2025-03-14T09:26:53.999999+00:00", None, 1741944413),  # floored
        ("2025-03-14T11:26:53.5+02:00", None, 1741944413),  # another offset
        ("2025-03-14T09:26:53", None, 1741944413),  # no offset: UTC
        (None, "2025-03-14T09:26:53.571236+00:00", 1741944413),  # no updated_at
        ("infinity", "2025-03-14T09:26:53+00:00", 1741944413),
        ("yesterday", None, 0),
        ("2040-01-01T00:00:00+00:00", None, 0),  # past a 32-bit event time
        ("1969-12-31T23:59:59+00:00", None, 0),
        (1741944413, None, 0),  # not a timestamptz
        (None, None, 0),  # no time at all: the oldest, never overwrites a newer event
    ],
)
def test_event_time_is_updated_at_else_created_at_else_zero(updated_at, created_at, occurred_at):
    body = body_of(insert(updated_at=updated_at, created_at=created_at))
    assert provider.parse(body, {}).occurred_at == occurred_at


def test_the_same_body_reads_the_same_time_whenever_it_comes():
    body = fixture_bytes("INSERT.json")
    assert provider.parse(body, {}) == provider.parse(body, {})


# --- details: names and properties ---


@pytest.mark.parametrize(
    ("meta", "first", "last"),
    [
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada", "Lovelace"),
        ({"first_name": " Ada ", "last_name": ""}, "Ada", None),
        ({"last_name": "Lovelace", "full_name": "Someone Else"}, None, "Lovelace"),
        ({"full_name": "Ada King Lovelace", "name": "Ada"}, "Ada", "King Lovelace"),
        ({"name": "Ada Lovelace"}, "Ada", "Lovelace"),  # Google fills in name and full_name
        ({"first_name": "", "last_name": "  ", "name": "Cher"}, "Cher", None),
        ({"first_name": 7, "last_name": ["x"]}, None, None),
        ({}, None, None),
        (None, None, None),
        ("not an object", None, None),
    ],
)
def test_names_from_user_metadata(meta, first, last):
    details = provider.details(body_of(insert(raw_user_meta_data=meta)))
    assert (details.first_name, details.last_name) == (first, last)


def test_long_values_are_cut_and_empty_ones_left_out():
    webhook = insert(
        id="u" * 255,
        raw_user_meta_data={"first_name": "é" * 600},
        raw_app_meta_data={"provider": "  ", "providers": ["email", "", 3, "google"]},
    )
    details = provider.details(body_of(webhook))
    assert details.first_name == "é" * 498
    assert details.properties["userId"] == "u" * 255
    assert "provider" not in details.properties
    assert details.properties["providers"] == "email, google"
    assert_loops_properties(details.properties)


def test_previous_email_only_when_the_email_changed():
    webhook = fixture_json("UPDATE.json")
    webhook["old_record"]["email"] = webhook["record"]["email"]
    assert "previousEmail" not in provider.details(body_of(webhook)).properties


# --- parse: what is not a Supabase webhook ---


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b'{"type": "INSERT", "email": "\xff"}', "not JSON"),
        (b"[]", "not an object"),
        (b"null", "not an object"),
        (b'{"table": "users", "schema": "auth", "record": {}}', "no valid type"),
        (b'{"type": 1, "table": "users", "schema": "auth"}', "no valid type"),
        (b'{"type": "INSERT", "record": {}}', "no valid schema, table"),
        (b'{"type": "INSERT\\n", "table": "users", "schema": "auth"}', "no valid type"),
        (b'{"type": "INSERT", "table": "users", "schema": "auth", "record": null}', "no record"),
        (b'{"type": "DELETE", "table": "users", "schema": "auth", "record": {}}', "no old_record"),
        (b'{"type": "UPDATE", "table": "users", "schema": "auth", "record": []}', "no record"),
    ],
)
def test_bodies_that_are_not_supabase_webhooks_are_refused(body, reason):
    assert reason in refusal(body)


def test_a_type_too_long_to_store_is_refused():
    webhook = {**fixture_json("public.profiles.INSERT.json"), "table": "t" * 250}
    assert "longer than 255 characters" in refusal(body_of(webhook))


@pytest.mark.parametrize("user_id", [None, "", 42, "\u0000", "x" * 256])
def test_a_user_row_without_a_valid_id_is_refused(user_id):
    assert "no valid id" in refusal(body_of(insert(id=user_id)))


@pytest.mark.parametrize(
    ("value", "email"),
    [(" Ada@Example.com\n", "Ada@Example.com"), ("", None), ("  ", None), (None, None)],
)
def test_email_is_trimmed_and_empty_is_none(value, email):
    event = provider.parse(body_of(insert(email=value)), {})
    assert (event.email, event.user_id) == (email, USER_ID)  # a phone-only user: by userId


@pytest.mark.parametrize("email", ["ada@example.com\u0000", "a" * 310 + "@example.com"])
def test_an_email_that_is_not_an_address_is_refused(email):
    assert "not an email address" in refusal(body_of(insert(email=email)))


def test_repeated_keys_are_refused_wherever_they_are():
    body = fixture_bytes("INSERT.json")
    for old, new in [
        (b'"type": "INSERT"', b'"type": "DELETE", "type": "INSERT"'),
        (b'"type": "INSERT"', b'"type": "DELETE", "\\u0074ype": "INSERT"'),  # spelled otherwise
        (b'"email": "ada', b'"email": "eve@example.com", "email": "ada'),
        (b'{"last_name"', b'{"first_name": "Eve", "last_name"'),
    ]:
        repeated = body.replace(old, new, 1)
        assert repeated != body
        assert "same key twice" in refusal(repeated)


@pytest.mark.parametrize("depth", [100, 999, 1001, 1025, 100_000])
def test_deep_nesting_is_refused_with_a_reason_or_parsed(depth):
    body = fixture_bytes("INSERT.json").replace(
        b'"phone": null', b'"phone": ' + b"[" * depth + b"]" * depth, 1
    )
    if depth <= 100:
        assert provider.parse(body, {}).type == "INSERT"
    else:
        assert "nested more than" in refusal(body)


# --- only Rejected escapes verify and parse, whatever the request ---

header_names = st.sampled_from(["loops-secret", "Loops-Secret", "content-type", "x"]) | st.text()
header_dicts = st.dictionaries(header_names, st.text(), max_size=4)
ENVELOPE = ("type", "table", "schema", "record", "old_record")
ROW = ("id", "email", "updated_at", "created_at", "email_confirmed_at", "last_sign_in_at")
META = ("raw_user_meta_data", "raw_app_meta_data")
NAMES = ("first_name", "last_name", "full_name", "name")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def only_rejected(body: bytes, headers: Any) -> None:
    try:
        provider.verify(body, headers, [SECRET])
    except providers.Rejected as error:
        assert SECRET not in str(error)
    try:
        provider.parse(body, headers)
    except providers.Rejected:
        return
    assert_loops_properties(provider.details(body).properties)


@FUZZ
@given(body=st.binary(max_size=400), headers=header_dicts)
def test_any_bytes_and_headers(body, headers):
    only_rejected(body, headers)


# Where in a real webhook a generated value goes: the path of an object, and a key in it.
FIELDS = (
    [((), key) for key in ENVELOPE]
    + [((row,), key) for row in ("record", "old_record") for key in (*ROW, *META)]
    + [((row, META[0]), key) for row in ("record", "old_record") for key in NAMES]
    + [
        ((row, META[1]), key)
        for row in ("record", "old_record")
        for key in ("provider", "providers")
    ]
)


@settings(FUZZ, max_examples=400)
@given(
    name=st.sampled_from(["INSERT.json", "UPDATE.json", "DELETE.json"]),
    field=st.sampled_from(FIELDS),
    value=json_values,
)
def test_any_value_in_any_field_of_a_real_webhook(name, field, value):
    webhook = fixture_json(name)
    path, key = field
    target = webhook
    for step in path:  # as deep as the fixture goes: INSERT has no old_record
        if isinstance(target.get(step), dict):
            target = target[step]
    target[key] = value
    only_rejected(body_of(webhook), {"loops-secret": SECRET})


@FUZZ
@given(headers=header_dicts, secrets=st.lists(st.text(), max_size=3))
def test_any_headers_and_stored_secrets(headers, secrets):
    try:
        provider.verify(b"{}", Headers(headers={k.lower(): v for k, v in headers.items()}), [])
    except (providers.Rejected, UnicodeEncodeError):  # Headers encodes its own values
        pass
    try:
        provider.verify(b"{}", headers, secrets)
    except providers.Rejected:
        pass


# --- secrets, redaction ---


def test_new_secret_is_strong_and_has_the_form_it_asks_for():
    made = {provider.new_secret() for _ in range(5)}
    assert len(made) == 5
    for secret in made:
        assert secret is not None and len(secret) >= 43
        assert provider.secret_problem(secret) is None


@pytest.mark.parametrize(
    "secret",
    ["", "short", "x" * 31, "x" * 31 + " ", " " + "x" * 32, "x" * 32 + "é", "x" * 32 + "\n"],
)
def test_secret_problem_says_what_a_secret_must_be_without_echoing_it(secret):
    problem = provider.secret_problem(secret)
    assert problem is not None
    assert "at least 32" in problem
    assert not secret.strip() or secret.strip() not in problem


def test_secret_problem_accepts_any_long_printable_ascii():
    assert provider.secret_problem(SECRET) is None
    assert provider.secret_problem("!" * 32 + "~") is None


def test_redact_hides_only_its_own_header():
    assert provider.redact("Loops-Secret", SECRET) == "[redacted]"
    assert provider.redact("loops-secret", "") == "[redacted]"
    assert provider.redact("content-type", "application/json") is None
    assert provider.redact("stripe-signature", "t=1,v1=abc") is None


# --- sample ---


@pytest.mark.parametrize("event_type", provider.event_types)
def test_sample_round_trip(event_type):
    body, headers = provider.sample(event_type, "ada.lovelace@example.com", SECRET)
    assert headers == {"Content-Type": "application/json", "Loops-Secret": SECRET}
    provider.verify(body, Headers(headers=headers), [SECRET])
    event = read(body)
    assert (event.type, event.email) == (event_type, "ada.lovelace@example.com")
    assert event.deletion is (event_type == "DELETE")
    assert str(uuid.UUID(event.user_id)) == event.user_id
    assert abs(event.occurred_at - time.time()) < 60
    assert (event.first_name, event.last_name) == (None, None)  # it never renames a contact
    assert event.properties["userId"] == event.user_id
    assert event.properties["provider"] == "email"
    assert ("emailConfirmedAt" in event.properties) is (event_type != "INSERT")


def test_sample_is_shaped_like_the_real_webhook():
    for event_type, fixture in (("INSERT", "INSERT.json"), ("DELETE", "DELETE.json")):
        body, _ = provider.sample(event_type, "ada@example.com", SECRET)
        real = fixture_json(fixture)
        sample = json.loads(body)
        assert list(sample) == list(real)  # jsonb's key order: type, table, record, ...
        row = "old_record" if event_type == "DELETE" else "record"
        assert list(sample[row]) == list(real[row])
        assert sample["old_record" if row == "record" else "record"] is None
    body, _ = provider.sample("UPDATE", "ada@example.com", SECRET)
    update = json.loads(body)
    assert update["old_record"]["email_confirmed_at"] is None
    assert update["record"]["email_confirmed_at"] is not None
    assert update["record"]["id"] == update["old_record"]["id"]


def test_sample_keeps_an_address_that_is_not_ascii_as_utf8():
    body, _ = provider.sample("INSERT", "zoë@example.com", SECRET)
    assert "zoë@example.com".encode() in body
    assert provider.parse(body, {}).email == "zoë@example.com"


def test_samples_are_fresh_users():
    first, _ = provider.sample("INSERT", "a@example.com", SECRET)
    second, _ = provider.sample("INSERT", "a@example.com", SECRET)
    assert provider.parse(first, {}).id != provider.parse(second, {}).id
    assert provider.parse(first, {}).user_id != provider.parse(second, {}).user_id


def test_a_sample_is_about_the_user_it_is_given():
    """The admin gives the userId Loops has for the contact: the test leaves it as it is."""
    user_id = "5b0e7d1c-4f3a-4e2b-9c8d-1a2b3c4d5e6f"
    for event_type in provider.event_types:
        body, _ = provider.sample(event_type, "a@example.com", SECRET, user_id=user_id)
        assert provider.parse(body, {}).user_id == user_id


def test_sample_of_unknown_type_is_an_error():
    with pytest.raises(ValueError, match="no sample"):
        provider.sample("public.profiles.INSERT", "a@example.com", SECRET)
