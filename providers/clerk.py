"""Clerk: verify Svix's signature headers, read a Clerk event into a plain :class:`Event`.

Clerk sends its webhooks through Svix (https://clerk.com/docs/webhooks/overview). The body
has no event id, so the dedupe key is the ``svix-id`` header: Svix keeps it across retries
of one message. Clerk's ``timestamp`` is in milliseconds in its docs' example and in seconds
in its OpenAPI examples; a value of 10^11 or more is read as milliseconds (10^11 seconds is
the year 5138, 10^11 ms is 1973).

What each event type becomes (the contact is matched on ``userId`` where there is one):

===================== ========================================================================
Event type            Event
===================== ========================================================================
user.created          email: the address in ``data.email_addresses`` whose ``id`` is
user.updated          ``data.primary_email_address_id`` (not the first one: a user who changed
                      their primary address keeps the old one first); user_id: ``data.id``
user.deleted          deletion, by user_id ``data.id`` only: the body carries nothing else
waitlistEntry.created email: ``data.email_address``; no user_id (``wle_...`` is the entry's
waitlistEntry.updated id, not a user's)
anything else         parses with its type (e.g. session.created), no email, no user_id: the
                      inbox answers it ``ignored``. A session's ``data.user`` is not read.
===================== ========================================================================

Names (user.* only): ``data.first_name`` and ``data.last_name``, trimmed, empty or null ->
none. Loops event properties: flat, camelCase, left out when Clerk's field is missing, null
or empty, strings cut to Loops' 500-character limit (quotes counted); times are ISO 8601 UTC
strings (``"2022-05-31T15:56:31Z"``).

========================= ======================= ============================================
Property                  Event types             Clerk field
========================= ======================= ============================================
clerkEventType            all                     ``type``
userId                    user.*                  ``data.id`` (user_...)
externalId                user.*                  ``data.external_id`` (your app's own id)
username                  user.*                  ``data.username``
imageUrl                  user.*                  ``data.image_url``
createdAt                 user.*, waitlistEntry.* ``data.created_at``
waitlistEntryId           waitlistEntry.*         ``data.id`` (wle_...)
waitlistStatus            waitlistEntry.*         ``data.status`` (pending, invited, ...)
========================= ======================= ============================================

Verification is Standard Webhooks' (https://www.standardwebhooks.com/), which Svix's is
(https://docs.svix.com/receiving/verifying-payloads/how-manual), under Svix's header names:
:mod:`providers.standard_webhooks` checks it (constant-time, a ``svix-timestamp`` within
300 s of this server's clock either way).
"""

from __future__ import annotations

import hashlib
import json
import string
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from secrets import choice
from typing import Any

from providers import Details, Event, Rejected, loops_properties
from providers.fields import MAX_ID_CHARS, BodyReasons, load_object, refuse_repeated_keys
from providers.fields import is_int as _is_int
from providers.fields import is_name as _is_name
from providers.fields import object_kind as _object_kind
from providers.fields import text as _text
from providers.standard_webhooks import Scheme, is_secret, webhook

__all__ = ["provider"]

MILLISECONDS_FROM = 10**11  # a Clerk time at least this large is in milliseconds


_ID_HEADER, _TIMESTAMP_HEADER, _SIGNATURE_HEADER = "svix-id", "svix-timestamp", "svix-signature"
_SECRET_PLACE = "Clerk's dashboard: Webhooks → your endpoint → Signing Secret"

# --- Why a request is refused. Shown to the sender and the admin; never holds a secret. ---

_SVIX = Scheme(
    "Clerk",
    (_ID_HEADER, _TIMESTAMP_HEADER, _SIGNATURE_HEADER),
    no_secret=(
        "This endpoint has no signing secret yet: paste the endpoint's Signing Secret "
        f"(whsec_...) from {_SECRET_PLACE}, into the bridge."
    ),
    unusable_secrets=(
        "None of this endpoint's signing secrets is a Clerk signing secret (whsec_ followed by "
        "base64), so no signature can be checked: paste the endpoint's Signing Secret "
        f"(whsec_...) from {_SECRET_PLACE}."
    ),
    no_match=(
        "The signature does not match any of the endpoint's signing secrets: paste the "
        f"endpoint's Signing Secret (whsec_...) from {_SECRET_PLACE}. Each Clerk instance "
        "(development, production) and each endpoint has its own. A proxy that rewrites the "
        "body (even its whitespace) also breaks the signature."
    ),
)

_NOT_JSON = "The body is not JSON, so it is not a Clerk event."
_NOT_OBJECT = "The body is JSON but not an object, so it is not a Clerk event."
_TOO_DEEP = (
    "The body is JSON nested more than 254 levels deep; a Clerk event is a few levels deep, "
    "so it is not a Clerk event."
)
_DUPLICATE_KEYS = (
    "The body has an object with the same key twice, so JSON readers may disagree on what it "
    "says. Clerk never sends that: send the event exactly as Clerk serialized it."
)
_BODY = BodyReasons(_NOT_JSON, _NOT_OBJECT, _TOO_DEEP, _DUPLICATE_KEYS)
_NOT_EMAIL = (
    "The Clerk event's email is not an email address: it is longer than 320 characters or "
    "holds control characters."
)
_BAD_USER_ID = (
    f"The Clerk event's user id (data.id) is longer than {MAX_ID_CHARS} characters or holds "
    "control characters, so it is not a Clerk user id (user_...)."
)


# --- Reading fields defensively: Clerk adds keys over time, and leaves many null. ---


def _seconds(clerk_time: int) -> int:
    return clerk_time // 1000 if clerk_time >= MILLISECONDS_FROM else clerk_time


def _iso(clerk_time: Any) -> str | None:
    if not _is_int(clerk_time) or clerk_time < 0:
        return None
    try:
        return datetime.fromtimestamp(_seconds(clerk_time), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def _load(body: bytes) -> dict[str, Any]:
    """The event, or Rejected saying why the body is not one.

    Read strictly and refused with a key given twice (providers.fields): Clerk signs the
    bytes it serialized, and never repeats a key. About 40 µs for a 1.5 KB user event, on a
    path that carries sign-ups, not payments."""
    event = load_object(body, _BODY)
    refuse_repeated_keys(body, _BODY)
    kind = event.get("object")
    if kind not in ("event", None):
        # Named only when it reads as a type: a reason is shown and logged, a body never.
        what = f"a Clerk {named} object" if (named := _object_kind(kind)) else "an object"
        raise Rejected(
            f"The body is {what}, not an event (object 'event'). Send Clerk webhook events "
            "to this URL."
        )
    timestamp = event.get("timestamp")
    missing = [
        name
        for name, present in (
            ("type", _is_name(event.get("type"))),
            ("timestamp", _is_int(timestamp) and 0 <= timestamp < 2**53),
            ("data", isinstance(event.get("data"), dict)),
        )
        if not present
    ]
    if missing:
        raise Rejected(f"The Clerk event has no valid {', '.join(missing)}.")
    return event


def _primary_email(user: dict[str, Any]) -> str | None:
    primary = user.get("primary_email_address_id")
    addresses = user.get("email_addresses")
    if not isinstance(primary, str) or not isinstance(addresses, list):
        return None
    for address in addresses:
        if isinstance(address, dict) and address.get("id") == primary:
            return _text(address.get("email_address"))
    return None


# --- Samples: the fixtures' shapes (tests/fixtures/clerk), the given email as the primary. ---

_BASE62 = string.digits + string.ascii_letters
_INSTANCE_ID = "ins_29w83yT7CwllvXylYLxcslj88O9"
_DAY_MS = 86_400_000
_SAMPLE_CLIENT = {
    "http_request": {
        "client_ip": "192.168.1.100",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36",
    }
}


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def _sample_id(prefix: str, email: str) -> str:
    """A Clerk-shaped id (27 characters after the prefix) that is the same for the same
    email: test events for one address act on one Loops contact, matched by userId, and
    one for another address never moves that contact's email."""
    digest = hashlib.sha256(f"{prefix}{email.strip().lower()}".encode()).digest()
    return prefix + _base62(int.from_bytes(digest), 27)


def _sample_user(
    event_type: str, email: str, now_ms: int, user_id: str | None = None
) -> dict[str, Any]:
    user_id = user_id or _sample_id("user_", email)
    if event_type == "user.deleted":  # as Clerk sends it: the id and nothing to read
        return {"deleted": True, "id": user_id, "object": "user"}
    address_id = _sample_id("idn_", email)
    created = now_ms if event_type == "user.created" else now_ms - 30 * _DAY_MS
    return {
        "birthday": "",
        "created_at": created,
        "email_addresses": [
            {
                "email_address": email,
                "id": address_id,
                "linked_to": [],
                "object": "email_address",
                "verification": {"status": "verified", "strategy": "email_code"},
            }
        ],
        "external_accounts": [],
        "external_id": None,
        "first_name": None,  # a test event never renames a contact in Loops
        "gender": "",
        "id": user_id,
        "image_url": "https://img.clerk.com/xxxxxx",
        "last_name": None,
        "last_sign_in_at": created,
        "object": "user",
        "password_enabled": True,
        "phone_numbers": [],
        "primary_email_address_id": address_id,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "public_metadata": {},
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": now_ms,
        "username": None,
        "web3_wallets": [],
    }


def _sample_waitlist_entry(event_type: str, email: str, now_ms: int) -> dict[str, Any]:
    invited = event_type == "waitlistEntry.updated"
    created = now_ms - _DAY_MS if invited else now_ms
    invitation = {
        "object": "invitation",
        "id": _sample_id("inv_", email),
        "email_address": email,
        "status": "pending",
        "created_at": now_ms,
        "updated_at": now_ms,
    }
    return {
        "object": "waitlistEntry",
        "id": _sample_id("wle_", email),
        "email_address": email,
        "status": "invited" if invited else "pending",
        "is_locked": False,
        "created_at": created,
        "updated_at": now_ms,
        "invitation": invitation if invited else None,
    }


class ClerkProvider:
    name = "clerk"
    label = "Clerk"
    contact_source = "Clerk webhook"
    event_types = (
        "user.created",
        "user.updated",
        "user.deleted",
        "waitlistEntry.created",
        "waitlistEntry.updated",
    )

    def secret_problem(self, secret: str) -> str | None:
        if is_secret(secret):
            return None
        return (
            "That does not look like a Clerk signing secret: it is whsec_ followed by base64 "
            f"(some 32 letters, digits, + and /). Copy it from {_SECRET_PLACE}."
        )

    def new_secret(self) -> str | None:
        return None  # Clerk (Svix) makes the signing secret

    def redact(self, name: str, value: str) -> str | None:
        """``svix-id`` and ``svix-timestamp`` as they are; ``svix-signature``: each
        signature shows only its scheme (``v1,…``)."""
        return _SVIX.redact(name, value)

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
        _SVIX.verify(body, headers, secrets)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Event:
        msg_id = _SVIX.message_id(headers)
        event = _load(body)
        event_type, data = event["type"], event["data"]
        email = user_id = None
        if event_type.startswith("user."):
            email = _primary_email(data)
            if isinstance(data.get("id"), str):
                user_id = data["id"]
                if not _is_name(user_id):
                    raise Rejected(_BAD_USER_ID)
        elif event_type.startswith("waitlistEntry."):
            email = _text(data.get("email_address"))
        if email and (len(email) > 320 or not email.isprintable()):
            raise Rejected(_NOT_EMAIL)
        return Event(
            id=msg_id,
            type=event_type,
            occurred_at=_seconds(event["timestamp"]),
            email=email,
            user_id=user_id,
            deletion=event_type == "user.deleted",
        )

    def details(self, body: bytes) -> Details:
        event = _load(body)
        event_type, data = event["type"], event["data"]
        first_name = last_name = None
        properties: dict[str, Any] = {"clerkEventType": event_type}
        if event_type.startswith("user."):
            first_name, last_name = _text(data.get("first_name")), _text(data.get("last_name"))
            properties |= {
                "userId": _text(data.get("id")),
                "externalId": _text(data.get("external_id")),
                "username": _text(data.get("username")),
                "imageUrl": _text(data.get("image_url")),
                "createdAt": _iso(data.get("created_at")),
            }
        elif event_type.startswith("waitlistEntry."):
            properties |= {
                "waitlistEntryId": _text(data.get("id")),
                "waitlistStatus": _text(data.get("status")),
                "createdAt": _iso(data.get("created_at")),
            }
        return Details(
            first_name=first_name, last_name=last_name, properties=loops_properties(properties)
        )

    def sample(
        self, event_type: str, email: str, secret: str, user_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        if event_type not in self.event_types:
            raise ValueError(
                f"Clerk has no sample for {event_type!r}; known: {', '.join(self.event_types)}"
            )
        signer = webhook(secret)
        if signer is None:
            raise ValueError("The signing secret is not a Clerk one (whsec_ followed by base64).")
        now = int(time.time())
        if event_type.startswith("user."):
            data = _sample_user(event_type, email, now * 1000, user_id)
        else:
            data = _sample_waitlist_entry(event_type, email, now * 1000)
        event = {
            "data": data,
            "event_attributes": _SAMPLE_CLIENT,
            "instance_id": _INSTANCE_ID,
            "object": "event",
            "timestamp": now * 1000,  # milliseconds, as in Clerk's docs
            "type": event_type,
        }
        payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False)  # as JS writes
        msg_id = "msg_" + "".join(choice(_BASE62) for _ in range(27))
        signed_at = datetime.fromtimestamp(now, UTC)
        return payload.encode("utf-8"), {
            _ID_HEADER: msg_id,
            _TIMESTAMP_HEADER: str(now),
            _SIGNATURE_HEADER: signer.sign(msg_id, signed_at, payload),
            "content-type": "application/json",
        }


provider = ClerkProvider()
