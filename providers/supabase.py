"""Supabase: Database Webhooks on ``auth.users``, authenticated by a ``Loops-Secret`` header.

A Supabase Database Webhook (https://supabase.com/docs/guides/database/webhooks) is a
trigger that posts each changed row with pg_net, as
``{"type", "table", "schema", "record", "old_record"}``: ``record`` is the row after the
change (null on DELETE), ``old_record`` the row before it (null on INSERT). It is not signed:
the request carries headers set in the Dashboard, and Loops' own Supabase integration
(https://loops.so/docs/integrations/supabase) has users add ``Loops-Secret: <secret>``. The
bridge takes the same header, so a project moves from Loops' hosted webhook by changing only
the URL and the header's value. The value is compared in constant time
(:func:`hmac.compare_digest` on bytes) with each of the endpoint's secrets.

No signature and no timestamp means no replay window: anyone who has seen one request can
send it again, or send any body, for as long as the secret is valid. So the secret is kept
like a password: only ever sent over HTTPS, never pasted where others can read it, replaced
(a new value in the bridge and in Supabase) when it may have leaked. What limits a replay is
the dedupe key: a webhook has no event id, so the key is the SHA-256 of the raw body, and an
identical resend is answered ``duplicate``. Two changes that leave the row exactly as it was
are one event: the second carries nothing new for Loops.

Event types
===========

================== ==================================================================
Event type         What it is, and what the bridge reads from it
================== ==================================================================
``INSERT``         a new user in ``auth.users`` (a sign-up, an invite): email and
                   userId from ``record``
``UPDATE``         a change to a user (an email change taking effect, a confirmation,
                   a sign-in, new metadata): email and userId from ``record``, so a
                   changed email reaches the contact matched by userId
``DELETE``         a user deleted: email and userId from ``old_record``; a deletion,
                   so the endpoint's on-delete applies
``S.T.TYPE``       a row of any other table ``S.T``, e.g. ``public.profiles.INSERT``:
                   parsed, but never a type an endpoint accepts, so it is answered
                   ``ignored`` with its table in the reason. No email or userId is read
                   from it: another table's ``id`` need not be a user's
================== ==================================================================

The unprefixed names are kept for ``auth.users`` (they are Supabase's own ``type`` values,
as Loops names them) and every other table's events are prefixed with ``schema.table.``, so
no other table can be enabled on an endpoint by accident. Any other ``type`` on
``auth.users`` is kept as it is, and ignored the same way.

Contact fields: email is ``email``, trimmed (empty, as for a phone-only user, is none);
userId is the row's ``id`` (a UUID). Names come from ``raw_user_meta_data``, where sign-up's
``options.data`` lands (https://supabase.com/docs/guides/auth/managing-user-data):
``first_name`` and ``last_name``; when both are missing or empty, ``full_name``, else
``name`` (what OAuth providers such as Google fill in), split on the first space into first
and last name. A missing name is None, so it never clears one in Loops.

Event time: the row's ``updated_at`` (DELETE: ``old_record``'s), else its ``created_at``,
read as ISO 8601 (an offset-less time is UTC) and floored to unix seconds. The bridge applies
names last-writer-wins by this time, so it must order the changes of one user as Supabase
made them: ``updated_at`` changes with every write of the row, ``created_at`` never does.
The time the bridge receives it is no substitute: a retried old change would win over a
newer one, and the same body would read differently each time. A DELETE does not change the
row, so it reads the time of the user's last change, never earlier. A row with neither time
reads as 0, the oldest time there is: it loses to every event that has one, so it never
overwrites a newer one. Another table's events read as 0 too: nothing is done with them.

Loops event properties, flat and camelCase; a property whose field is missing, null or empty
is left out; strings are cut to Loops' 500-character limit (quotes counted); times are ISO
8601 UTC strings (``"2025-03-14T09:26:53Z"``):

========================= ==========================================================
Property                  Field (of ``record``; of ``old_record`` on DELETE)
========================= ==========================================================
supabaseEventType         ``type`` (``INSERT``, ``UPDATE``, ``DELETE``)
userId                    ``id``
createdAt                 ``created_at``
emailConfirmedAt          ``email_confirmed_at`` (absent: not confirmed yet)
lastSignInAt              ``last_sign_in_at``
provider                  ``raw_app_meta_data.provider`` (``email``, ``google``, ...)
providers                 ``raw_app_meta_data.providers``, joined with ``", "``
previousEmail             UPDATE only: ``old_record.email``, when it differs from
                          ``record.email`` (an email change)
========================= ==========================================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as _secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from providers import LOOPS_STRING_LIMIT, Details, Event, Rejected, loops_properties
from providers.fields import MAX_ID_CHARS, BodyReasons, load_object, refuse_repeated_keys
from providers.fields import dig as _dig
from providers.fields import is_name as _is_name
from providers.fields import split_name as _split_name
from providers.fields import text as _text

__all__ = ["provider"]

HEADER = "Loops-Secret"  # the header Loops' own Supabase integration reads
MIN_SECRET_CHARS = 32
# Longest event type and user id kept: they are stored and indexed, and Supabase's are short
# (an identifier is at most 63 bytes in PostgreSQL, a user id is a UUID).
MAX_EMAIL_CHARS = 320

USERS = ("auth", "users")  # (schema, table) of Supabase Auth's users
OPERATIONS = ("INSERT", "UPDATE", "DELETE")


# --- Why a request is refused. Shown to the sender and the admin; never holds a secret. ---

_WHERE = "in Supabase, Database → Webhooks → this webhook → HTTP Headers"
_NO_SECRET = (
    "This endpoint has no secret yet: add one in the bridge (loops-bridge endpoints add-secret "
    f"ID SECRET, or the endpoint's page), then {_WHERE}, add {HEADER} with it."
)
_NO_HEADER = (
    f"The request has no {HEADER} header: {_WHERE}, add {HEADER} with the endpoint's secret. "
    "If it is there, check that no proxy drops the header."
)
_NO_MATCH = (
    f"The {HEADER} header does not match this endpoint's secret: {_WHERE}, set {HEADER} to "
    "the secret the bridge showed when the endpoint was created (or the one it was given), "
    "exactly, without spaces around it."
)
_NOT_JSON = "The body is not JSON (UTF-8), so it is not a Supabase Database Webhook."
_NOT_OBJECT = "The body is JSON but not an object, so it is not a Supabase Database Webhook."
_TOO_DEEP = (
    "The body is JSON nested more than 1000 levels deep; a Supabase Database Webhook is a few "
    "levels deep, so it is not one."
)
_DUPLICATE_KEYS = (
    "The body has an object with the same key twice, so JSON readers may disagree on what it "
    "says. Supabase never sends that: send the webhook exactly as Supabase serialized it."
)
_BODY = BodyReasons(_NOT_JSON, _NOT_OBJECT, _TOO_DEEP, _DUPLICATE_KEYS)
_BAD_EMAIL = (
    "The auth.users row's email is not an email address: it is longer than 320 characters or "
    "holds control characters."
)


# --- Reading the body. ---


def _time(value: Any) -> datetime | None:
    """A timestamptz as jsonb renders it (``"2025-03-14T09:26:53.571236+00:00"``), or None
    for anything else (null, ``"infinity"``, before 1970, from 2038 on: event times are
    stored in a 32-bit column)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment if 0 <= moment.timestamp() < 2**31 else None
    except (OverflowError, ValueError):
        return None


def _iso(value: Any) -> str | None:
    moment = _time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _event_time(row: dict[str, Any]) -> int:
    moment = _time(row.get("updated_at")) or _time(row.get("created_at"))
    return int(moment.timestamp()) if moment else 0


def _names(row: dict[str, Any]) -> tuple[str | None, str | None]:
    meta = row.get("raw_user_meta_data")
    first, last = _text(_dig(meta, "first_name")), _text(_dig(meta, "last_name"))
    if first is None and last is None:
        first, last = _split_name(_text(_dig(meta, "full_name")) or _dig(meta, "name"))
    return (
        first[:LOOPS_STRING_LIMIT] if first else None,
        last[:LOOPS_STRING_LIMIT] if last else None,
    )


class _Webhook:
    """What one body says: its type as the bridge names it, and the row it is about."""

    def __init__(self, body: bytes) -> None:
        webhook = load_object(body, _BODY)
        operation, schema, table = (webhook.get(k) for k in ("type", "schema", "table"))
        missing = [
            name
            for name, value in (("type", operation), ("schema", schema), ("table", table))
            if not _is_name(value)
        ]
        if missing:
            raise Rejected(
                f"The body has no valid {', '.join(missing)}, so it is not a Supabase Database "
                "Webhook. Send only Database Webhooks on auth.users to this URL."
            )
        self.operation: str = operation
        self.about_users = (schema, table) == USERS and operation in OPERATIONS
        self.type = operation if (schema, table) == USERS else f"{schema}.{table}.{operation}"
        if not _is_name(self.type):
            raise Rejected(
                f"The body's schema, table and type are longer than {MAX_ID_CHARS} characters "
                "together, so it is not a Supabase Database Webhook."
            )
        self.row: dict[str, Any] = {}
        self.old_row: dict[str, Any] = {}
        if self.about_users:
            side = "old_record" if operation == "DELETE" else "record"
            row = webhook.get(side)
            if not isinstance(row, dict):
                raise Rejected(
                    f"The Supabase {operation} on auth.users has no {side}, so it says nothing "
                    "about a user. Send the webhook as Supabase's trigger function builds it."
                )
            self.row = row
            old_row = webhook.get("old_record")
            self.old_row = old_row if isinstance(old_row, dict) else {}


# --- Samples: a compact auth.users row in the shape of tests/fixtures/supabase. ---


def _timestamptz(moment: float) -> str:
    """As jsonb renders a timestamptz in UTC: ``"2025-03-14T09:26:53.571236+00:00"``."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")


def _sample_row(user_id: str, email: str, now: float, confirmed: bool) -> dict[str, Any]:
    signed_up = now - 300 if confirmed else now
    confirmed_at = _timestamptz(signed_up + 240) if confirmed else None
    return {
        "instance_id": "00000000-0000-0000-0000-000000000000",
        "id": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "encrypted_password": "$2a$10$" + "SAMPLEnotArealBcryptHash".ljust(53, "0"),
        "email_confirmed_at": confirmed_at,
        "invited_at": None,
        "confirmation_token": "" if confirmed else _secrets.token_hex(28),
        "confirmation_sent_at": _timestamptz(signed_up + 0.02),
        "recovery_token": "",
        "recovery_sent_at": None,
        "email_change_token_new": "",
        "email_change": "",
        "email_change_sent_at": None,
        "last_sign_in_at": confirmed_at,
        "raw_app_meta_data": {"provider": "email", "providers": ["email"]},
        "raw_user_meta_data": {},  # no names: a test event never renames a contact
        "is_super_admin": None,
        "created_at": _timestamptz(signed_up),
        "updated_at": _timestamptz(now),
        "phone": None,
        "phone_confirmed_at": None,
        "phone_change": "",
        "phone_change_token": "",
        "phone_change_sent_at": None,
        "confirmed_at": confirmed_at,
        "email_change_token_current": "",
        "email_change_confirm_status": 0,
        "banned_until": None,
        "reauthentication_token": "",
        "reauthentication_sent_at": None,
        "is_sso_user": False,
        "deleted_at": None,
        "is_anonymous": False,
    }


def _jsonb_order(value: Any) -> Any:
    """Keys as jsonb orders them: shortest first, then bytewise."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
        return {key: _jsonb_order(value[key]) for key in keys}
    if isinstance(value, list):
        return [_jsonb_order(item) for item in value]
    return value


class SupabaseProvider:
    name = "supabase"
    label = "Supabase"
    contact_source = "Supabase webhook"
    event_types = OPERATIONS

    def secret_problem(self, secret: str) -> str | None:
        printable = all("!" <= char <= "~" for char in secret)
        if len(secret) >= MIN_SECRET_CHARS and printable:
            return None
        return (
            f"A Supabase endpoint's secret is at least {MIN_SECRET_CHARS} printable ASCII "
            "characters with no spaces. Leave the secret out and the bridge makes a strong one "
            f"(shown once) to put in the webhook's {HEADER} header in Supabase."
        )

    def new_secret(self) -> str | None:
        return _secrets.token_urlsafe(32)  # 256 bits, 43 characters

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
        usable = [secret.encode("utf-8", "surrogatepass") for secret in secrets if secret.strip()]
        if not usable:
            raise Rejected(_NO_SECRET)
        value = _header(headers, HEADER.lower())
        if not value:
            raise Rejected(_NO_HEADER)
        # Bytes: compare_digest raises TypeError on a str that is not ASCII.
        sent = value.encode("utf-8", "surrogatepass")
        if not any(hmac.compare_digest(sent, secret) for secret in usable):
            raise Rejected(_NO_MATCH)

    def redact(self, name: str, value: str) -> str | None:
        return "[redacted]" if name.lower() == HEADER.lower() else None

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Event:
        webhook = _Webhook(body)
        refuse_repeated_keys(body, _BODY)
        event_id = hashlib.sha256(body).hexdigest()
        if not webhook.about_users:
            return Event(id=event_id, type=webhook.type, occurred_at=0, email=None)
        row = webhook.row
        user_id = row.get("id")
        if not _is_name(user_id):
            raise Rejected(
                f"The Supabase {webhook.operation} on auth.users has no valid id, so it names "
                "no user."
            )
        email = _text(row.get("email"))
        if email and (len(email) > MAX_EMAIL_CHARS or not email.isprintable()):
            raise Rejected(_BAD_EMAIL)
        return Event(
            id=event_id,
            type=webhook.type,
            occurred_at=_event_time(row),
            email=email,
            user_id=user_id,
            deletion=webhook.operation == "DELETE",
        )

    def details(self, body: bytes) -> Details:
        webhook = _Webhook(body)
        row = webhook.row
        first_name, last_name = _names(row)
        providers = _dig(row, "raw_app_meta_data", "providers")
        email, previous = _text(row.get("email")), _text(webhook.old_row.get("email"))
        values: dict[str, Any] = {
            "supabaseEventType": webhook.type,
            "userId": row.get("id"),
            "createdAt": _iso(row.get("created_at")),
            "emailConfirmedAt": _iso(row.get("email_confirmed_at")),
            "lastSignInAt": _iso(row.get("last_sign_in_at")),
            "provider": _text(_dig(row, "raw_app_meta_data", "provider")),
            "providers": ", ".join(p for p in providers if isinstance(p, str) and p.strip())
            if isinstance(providers, list)
            else None,
        }
        if webhook.operation == "UPDATE" and previous != email:
            values["previousEmail"] = previous
        return Details(
            first_name=first_name, last_name=last_name, properties=loops_properties(values)
        )

    def sample(
        self, event_type: str, email: str, secret: str, user_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        if event_type not in self.event_types:
            raise ValueError(
                f"Supabase has no sample for {event_type!r}; known: {', '.join(self.event_types)}"
            )
        now = time.time()
        user_id = user_id or str(uuid.uuid4())
        # INSERT: a sign-up awaiting confirmation; UPDATE: its confirmation; DELETE: the
        # confirmed user deleted.
        row = _sample_row(user_id, email, now, confirmed=event_type != "INSERT")
        record: dict[str, Any] | None = row
        old_record: dict[str, Any] | None = None
        if event_type == "UPDATE":
            old_record = row | {
                "email_confirmed_at": None,
                "confirmed_at": None,
                "last_sign_in_at": None,
                "confirmation_token": _secrets.token_hex(28),
                "updated_at": row["created_at"],
            }
        elif event_type == "DELETE":
            record, old_record = None, row
        webhook = {
            "type": event_type,
            "table": "users",
            "schema": "auth",
            "record": record,
            "old_record": old_record,
        }
        body = json.dumps(_jsonb_order(webhook), ensure_ascii=False).encode("utf-8")
        return body, {"Content-Type": "application/json", HEADER: secret}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``name`` (lower-case) in any case: a Starlette Headers finds it at once, a dict in any
    case is searched."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value if isinstance(value, str) else None


provider = SupabaseProvider()
