"""A local stand-in for the Loops API, served by ``loops-bridge sandbox``.

Point the bridge's Loops base URL at ``http://127.0.0.1:8025/api/v1`` and it talks to this
app instead of https://app.loops.so/api/v1. The contract it follows is
``../shared/reference/loops-api.md`` (Loops' docs, OpenAPI 1.8.0 and official SDKs)::

    /api/v1/...            the Loops API: auth -> fault -> rate limit -> method -> endpoint
      GET  api-key             200 {success, teamName}
      POST contacts/create     200 {success, id} | 409 contact exists
      PUT  contacts/update     200 {success, id}   (upsert, never 409)
      GET  contacts/find       200 [contact] | []
      POST contacts/delete     200 {success, message} | 404
      POST events/send         200 {success} | 409 Idempotency-Key reused within 24 h
    /_sandbox/...          made up: inspect what arrived, inject faults, reset
    /                      made up: a JSON summary for a person opening it in a browser

**Faithful to Loops (documented):** Bearer auth and the 401 body (with the deprecated
``error`` key); each API key is its own team with its own contacts, events, idempotency keys
and rate limit; the success bodies above; contact defaults (``source`` "API", ``subscribed``
true, ``userGroup`` ""); update as an upsert matching ``email`` or ``userId`` that changes
only the fields sent, and changes a contact's email when found by ``userId``; ``null``
resetting a property; events/send upserting the contact from top-level properties;
``Idempotency-Key`` at most 100 characters, reuse within 24 h -> 409; body values at most 500
characters *quotes counted* (a string of 499 characters is refused) with the message "Some
body key or value is longer than allowable"; find and delete taking exactly one of
``email``/``userId``; 405 for a wrong method; ``x-ratelimit-limit`` and
``x-ratelimit-remaining`` on every response, 429 over 10 requests per second per team.

**Made up (not documented publicly, loops-api.md §12):** every error ``message`` text except
"Invalid API key" and the 500-character one. The create 409 text ("Email or userId already
exists") and the idempotency 409 text ("Idempotency key has been used") are the OpenAPI
*descriptions*, not known bodies; the 429 body copies the JS SDK's own error text. Also
made up: the rate limit's exact shape (a sliding 1.0 s window over accepted requests; a 429
does not use quota; no ``Retry-After``), the order of checks above, the email regex, 400
for an update or event naming an unknown ``userId`` without an ``email`` or naming two
different contacts, case-insensitive email matching, ignoring reserved property names
(``id``, ``notes``, ...), contact ids, and the ``teamName`` ("Sandbox team …abcd").
Not emulated: transactional email, mailing-list existence, custom properties having to be
created first, double opt-in, and the other endpoints of the OpenAPI spec (they answer 404).

**Faults (made up, for tests):** ``POST /_sandbox/faults`` with ``{"status": 503, "count":
2, "delay": 0.5, "key": "…abcd"}`` makes the next requests wait ``delay`` seconds and/or get
``status`` instead of their answer; ``count`` left out: until cleared. With ``key`` (an API
key, or its hint "…abcd", "...abcd" or "abcd") only that team's requests are affected, so
one Loops account can get 429s or 401s while another is fine. At most one fault per key plus
one global one; a request gets its key's fault if there is one, else the global one. A 401
and a 429 look exactly like the sandbox's real ones (the invalid-key and rate-limit answers);
other statuses say "(fault injected by the sandbox)". ``GET`` shows the global fault as
``fault`` and, when there are any, the keys' own as ``byKey``; ``DELETE`` clears them all, or
one key's with ``?key=``. Keys are told apart by their hints, so two keys ending in the same
four characters share their faults.

**Loops' own webhooks (Loops -> the bridge).** The sandbox can play Loops' outbound webhooks
(loops-api.md §11, https://loops.so/docs/webhooks), so the whole loop runs on one machine.
Configured, made up, with ``loops-bridge sandbox --loops-webhook-url URL
--loops-webhook-secret whsec_... --loop successfulPayment="Payment received" [--contact-events]``
(for every team) or ``POST /_sandbox/loops-webhook {"url", "secret", "loops": {eventName: loop
name}, "contactEvents": false, "key": "…abcd"}`` (``key`` left out: every team without its own,
as Loops has one endpoint per account). A "loop" stands for a Loops loop triggered by that event
name, with one email whose subject is the loop's name. What a team's accepted API calls make
Loops post, in this order::

    contacts/create, update or events/send creating a contact   contact.created  (contactEvents)
    contacts/delete                   contact.unsubscribed, contact.deleted     (contactEvents)
    events/send for a configured loop, the contact subscribed:
      any address                     loop.email.sent, email.delivered
      bounce@... or bounce+...@...    loop.email.sent, email.hardBounced, contact.unsubscribed
                                      (and the contact is unsubscribed, as Loops does)
      softbounce@... / softbounce+    loop.email.sent, email.softBounced
      complaint@... / complaint+      loop.email.sent, email.delivered, email.spamReported
    POST /_sandbox/loops-webhook/test testing.testEvent (the settings page's test button)

``contactEvents`` is off by default to keep the stream to the emails; the hard bounce's
``contact.unsubscribed`` is part of the email's story and always sent. Payloads follow the
docs' examples (``eventName``, ``eventTime``, ``webhookSchemaVersion`` "1.0.0",
``contactIdentity``, ``email`` {id, emailMessageId, subject}, ``sourceType`` "loop" and
``loopId`` on ``email.*``; ``loop.email.sent`` has ``loopId`` and, as in the Go SDK's newer
types, ``loopName``). Each is signed as Standard Webhooks signs (``Webhook-Id`` "msg_...", the
same on every retry; ``Webhook-Timestamp`` at each attempt; ``Webhook-Signature`` "v1,...")
with the ``standardwebhooks`` library. ``eventTime`` and ``Webhook-Timestamp`` are the sandbox
clock as unix time (the clock's reading at start taken as now), so an injected clock moves
them. The posts leave after the API call is answered, from one task per team that posts in
order, at most 10 per second (Loops' documented rate; every attempt counts), and retries a post
that fails (no answer, or not 2xx) after 1, 5 and 25 seconds: Loops' retry policy is not
documented (§12), so this one is made up. ``GET /_sandbox/loops-webhooks[?key=]`` lists every
post, its payload and each attempt's answer. Made up too: the ids, loop emails skipped for an
unsubscribed contact, and which addresses bounce.

Secrets are never shown in full: anything the sandbox shows or logs names a key by its hint,
"…" plus its last four characters (nothing at all for keys shorter than 12 characters), a
signing secret as "whsec_…" and its last four, and a webhook URL with its last path segment
(the bridge's token) as a hint. State lives in plain dicts: the app runs on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LoopsWebhook", "create_app", "serve"]

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 1.0
IDEMPOTENCY_WINDOW_SECONDS = 24 * 60 * 60.0
MAX_VALUE_CHARS = 500  # quotes counted: https://loops.so/docs/api-reference/intro
MAX_IDEMPOTENCY_KEY_CHARS = 100
WEBHOOKS_PER_SECOND = 10  # https://loops.so/docs/webhooks#rate-limiting
WEBHOOK_RETRY_DELAYS = (1.0, 5.0, 25.0)  # made up: Loops' retry policy is undocumented (§12)
WEBHOOK_TIMEOUT_SECONDS = 10.0
_WEBHOOK_SPACING = 1.01 / WEBHOOKS_PER_SECOND  # a hair wide: no second ever holds 11

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Loops' reserved property names, "notes" (not settable through the API) and fields the
# sandbox computes itself: never stored from a request body.
_IGNORED_PROPERTIES = frozenset(
    {"id", "listId", "softDeleteAt", "teamId", "updatedAt", "notes", "optInStatus"}
)
_RESET_VALUES: dict[str, Any] = {
    "firstName": None,
    "lastName": None,
    "source": "API",
    "userGroup": "",
}
_EVENT_FIELDS = ("email", "userId", "eventName", "eventProperties")


class _Rejected(Exception):
    """Loops refuses the request: answered with :func:`_error`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, *, legacy: bool = False) -> tuple[int, dict[str, Any]]:
    """Loops' error body; ``legacy`` adds the deprecated ``error`` key where the docs show it."""
    body: dict[str, Any] = {"success": False, "message": message}
    if legacy:
        body["error"] = message
    return status, body


def _key_hint(key: str | None) -> str | None:
    """How the sandbox names an API key: "…" and its last 4 characters, never the whole key."""
    if key is None:
        return None
    return "…" + key[-4:] if len(key) >= 12 else "…"


@dataclass
class Team:
    """One Loops team: everything one API key sees."""

    hint: str
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lowercased email
    events: list[dict[str, Any]] = field(default_factory=list)
    idempotency_keys: dict[str, float] = field(default_factory=dict)  # key -> when used
    accepted: deque[float] = field(default_factory=deque)  # request times in the window
    # What the current call did that Loops' webhooks tell: ("contact.created", contact),
    # ("contact.deleted", contact) or ("event", event record); the sandbox takes it after.
    news: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def find(
        self, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any] | None:
        if email is not None:
            return self.contacts.get(email.lower())
        return next((c for c in self.contacts.values() if c["userId"] == user_id), None)

    def add(self, email: str) -> dict[str, Any]:
        contact: dict[str, Any] = {
            "id": "sbx" + uuid.uuid4().hex[:22],
            "email": email,
            "firstName": None,
            "lastName": None,
            "source": "API",
            "subscribed": True,
            "userGroup": "",
            "userId": None,
            "mailingLists": {},
            "optInStatus": None,
        }
        self.contacts[email.lower()] = contact
        self.news.append(("contact.created", contact))
        return contact

    def change_email(self, contact: dict[str, Any], email: str) -> None:
        del self.contacts[contact["email"].lower()]
        contact["email"] = email
        self.contacts[email.lower()] = contact

    def remove(self, contact: dict[str, Any]) -> None:
        del self.contacts[contact["email"].lower()]
        self.news.append(("contact.deleted", contact))

    def remaining(self, now: float, limit: int) -> int:
        while self.accepted and self.accepted[0] <= now - RATE_WINDOW_SECONDS:
            self.accepted.popleft()
        return max(limit - len(self.accepted), 0)

    def admit(self, now: float, limit: int) -> int | None:
        """Count a request in the sliding window: the quota left, or None if it is over."""
        if self.remaining(now, limit) == 0:
            return None
        self.accepted.append(now)
        return limit - len(self.accepted)


@dataclass
class Fault:
    """What the next Loops API requests get instead of an answer (made up, for tests)."""

    status: int | None  # None: answer normally, after the delay
    count: int | None  # None: until cleared
    delay: float = 0.0
    key: str | None = None  # the hint of the one API key it applies to; None: every key

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"status": self.status, "count": self.count, "delay": self.delay}
        if self.key is not None:
            shown["key"] = self.key
        return shown


@dataclass(frozen=True)
class _Call:
    """One Loops API request, as the endpoint functions see it."""

    at: float
    query: Mapping[str, str]
    body: Any  # parsed JSON; None when absent or not JSON
    body_is_json: bool
    idempotency_key: str | None

    def json_object(self) -> dict[str, Any]:
        if not self.body_is_json:
            raise _Rejected(400, "The request body is not valid JSON.")
        if not isinstance(self.body, dict):
            raise _Rejected(400, "The request body must be a JSON object.")
        _check_lengths(self.body)
        return self.body


# --- validation -------------------------------------------------------------------------


def _too_long(value: Any) -> bool:
    return len(json.dumps(value, ensure_ascii=False)) > MAX_VALUE_CHARS


def _check_lengths(value: Any) -> None:
    """Every key and scalar value in the body, at any depth, within 500 characters."""
    if isinstance(value, dict):
        for name, item in value.items():
            if _too_long(name):
                raise _Rejected(400, "Some body key or value is longer than allowable")
            _check_lengths(item)
    elif isinstance(value, list):
        for item in value:
            _check_lengths(item)
    elif _too_long(value):
        raise _Rejected(400, "Some body key or value is longer than allowable")


def _is_scalar(value: Any) -> bool:
    """A property value Loops stores: string, number, boolean (dates travel as either)."""
    return isinstance(value, str | int | float)  # bool is an int


def _check_email(email: Any) -> str:
    if not isinstance(email, str) or not _EMAIL.fullmatch(email):
        raise _Rejected(400, f"Invalid email address: {email!r}.")
    return email


def _identity(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The ``email`` and ``userId`` a request names; at least one is required."""
    email, user_id = body.get("email"), body.get("userId")
    if email is not None:
        _check_email(email)
    if user_id is not None and (not isinstance(user_id, str) or not user_id):
        raise _Rejected(400, "userId must be a non-empty string.")
    if email is None and user_id is None:
        raise _Rejected(400, "An email or userId is required.")
    return email, user_id


def _contact_properties(body: dict[str, Any], skip: Iterable[str]) -> dict[str, Any]:
    """The contact properties among the body's top-level keys, checked."""
    properties = {}
    for name, value in body.items():
        if name in skip or name in _IGNORED_PROPERTIES:
            continue
        if name == "subscribed" and not isinstance(value, bool):
            raise _Rejected(400, "subscribed must be a boolean.")
        if name == "mailingLists":
            if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
                raise _Rejected(400, "mailingLists must be an object of list IDs to booleans.")
        elif value is not None and not _is_scalar(value):
            raise _Rejected(
                400, f"Contact property {name!r} must be a string, number, boolean or null."
            )
        properties[name] = value
    return properties


def _event_properties(body: dict[str, Any]) -> dict[str, Any]:
    properties = body.get("eventProperties", {})
    if not isinstance(properties, dict):
        raise _Rejected(400, "eventProperties must be an object.")
    for name, value in properties.items():
        if not _is_scalar(value):
            raise _Rejected(
                400, f"Event property {name!r} must be a string, number, boolean or date."
            )
    return properties


# --- contacts ---------------------------------------------------------------------------


def _apply(contact: dict[str, Any], properties: dict[str, Any]) -> None:
    """Write the properties sent, and only those; ``null`` resets one."""
    for name, value in properties.items():
        if name == "mailingLists":
            for list_id, subscribed in value.items():
                if subscribed:
                    contact["mailingLists"][list_id] = True
                else:
                    contact["mailingLists"].pop(list_id, None)
        elif value is None:
            if name in _RESET_VALUES:
                contact[name] = _RESET_VALUES[name]
            else:
                contact.pop(name, None)
        else:
            contact[name] = value


def _upsert(
    team: Team, email: str | None, user_id: str | None, properties: dict[str, Any]
) -> dict[str, Any]:
    """Update the contact matching ``email`` or ``userId``, or create one (loops-api.md §3.2)."""
    by_email = team.find(email=email) if email is not None else None
    by_user_id = team.find(user_id=user_id) if user_id is not None else None
    if by_email is not None and by_user_id is not None and by_email is not by_user_id:
        raise _Rejected(400, "The email and the userId belong to different contacts.")
    contact = by_email or by_user_id
    if contact is None:
        if email is None:
            raise _Rejected(400, "No contact has this userId; send an email to create one.")
        contact = team.add(email)
    elif email is not None and contact["email"].lower() != email.lower():
        team.change_email(contact, email)  # found by userId: Loops' way to change an email
    if user_id is not None:
        contact["userId"] = user_id
    _apply(contact, properties)
    return contact


# --- the Loops API endpoints --------------------------------------------------------------


def _api_key(team: Team, call: _Call) -> tuple[int, Any]:
    return 200, {"success": True, "teamName": f"Sandbox team {team.hint}"}


def _create_contact(team: Team, call: _Call) -> tuple[int, Any]:
    body = call.json_object()
    email, user_id = _identity(body)
    if email is None:
        raise _Rejected(400, "An email is required.")
    properties = _contact_properties(body, skip=("email", "userId"))
    taken_user_id = user_id is not None and team.find(user_id=user_id) is not None
    if team.find(email=email) is not None or taken_user_id:
        raise _Rejected(409, "Email or userId already exists")
    contact = team.add(email)
    contact["userId"] = user_id
    _apply(contact, properties)
    return 200, {"success": True, "id": contact["id"]}


def _update_contact(team: Team, call: _Call) -> tuple[int, Any]:
    body = call.json_object()
    email, user_id = _identity(body)
    properties = _contact_properties(body, skip=("email", "userId"))
    contact = _upsert(team, email, user_id, properties)
    return 200, {"success": True, "id": contact["id"]}


def _find_contact(team: Team, call: _Call) -> tuple[int, Any]:
    email, user_id = call.query.get("email"), call.query.get("userId")
    if email is not None and user_id is not None:
        raise _Rejected(400, "Only one parameter is permitted.")
    if email is None and user_id is None:
        raise _Rejected(400, "An email or userId parameter is required.")
    if email is not None:
        contact = team.find(email=_check_email(email))
    else:
        contact = team.find(user_id=user_id)
    return 200, [copy.deepcopy(contact)] if contact is not None else []


def _delete_contact(team: Team, call: _Call) -> tuple[int, Any]:
    email, user_id = _identity(call.json_object())
    if email is not None and user_id is not None:
        raise _Rejected(400, "Only one parameter is permitted.")
    contact = team.find(email=email, user_id=user_id)
    if contact is None:
        raise _Rejected(404, "Contact not found.")
    team.remove(contact)
    return 200, {"success": True, "message": "Contact deleted."}


def _send_event(team: Team, call: _Call) -> tuple[int, Any]:
    key = call.idempotency_key
    if key is not None:
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise _Rejected(400, "The Idempotency-Key header is longer than 100 characters.")
        used_at = team.idempotency_keys.get(key)
        if used_at is not None and call.at - used_at < IDEMPOTENCY_WINDOW_SECONDS:
            raise _Rejected(409, "Idempotency key has been used")
    body = call.json_object()
    event_name = body.get("eventName")
    if not isinstance(event_name, str) or not event_name.strip():
        raise _Rejected(400, "eventName is required.")
    event_properties = _event_properties(body)
    email, user_id = _identity(body)
    properties = _contact_properties(body, skip=_EVENT_FIELDS)
    contact = _upsert(team, email, user_id, properties)
    if key is not None:
        team.idempotency_keys[key] = call.at
    event = {
        "at": call.at,
        "key": team.hint,
        "email": contact["email"],
        "userId": contact["userId"],
        "eventName": event_name,
        "eventProperties": event_properties,
        "contactProperties": {k: v for k, v in properties.items() if k != "mailingLists"},
        "mailingLists": properties.get("mailingLists", {}),
        "idempotencyKey": key,
    }
    team.events.append(event)
    team.news.append(("event", event))
    return 200, {"success": True}


_Endpoint = Callable[[Team, _Call], tuple[int, Any]]

# Path under /api/v1 -> (method, endpoint).
_ENDPOINTS: dict[str, tuple[str, _Endpoint]] = {
    "api-key": ("GET", _api_key),
    "contacts/create": ("POST", _create_contact),
    "contacts/update": ("PUT", _update_contact),
    "contacts/find": ("GET", _find_contact),
    "contacts/delete": ("POST", _delete_contact),
    "events/send": ("POST", _send_event),
}


# --- Loops' webhooks (Loops -> the bridge) ----------------------------------------------


def _secret_hint(secret: str) -> str:
    return "whsec_…" + secret[-4:]


def _url_hint(url: str) -> str:
    """A webhook URL as the sandbox shows it: its last path segment (the bridge's per-account
    token) by its hint."""
    head, _, last = url.rstrip("/").rpartition("/")
    return f"{head}/{_key_hint(last)}" if len(last) >= 12 and "//" in head else url


@dataclass(frozen=True)
class LoopsWebhook:
    """Where and how the sandbox posts a team's Loops webhooks (made up: in Loops, the
    settings page's Webhooks section). ``loops``: event name -> the name of the loop it
    triggers (the subject of the loop's one email). ``key``: the hint of the one API key it is
    for; None: every team without its own."""

    url: str
    secret: str = field(repr=False)
    loops: Mapping[str, str] = field(default_factory=dict)
    contact_events: bool = False
    key: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> LoopsWebhook:
        """From ``{"url", "secret", "loops", "contactEvents", "key"}``; ValueError says what
        is wrong with it, never showing the secret."""
        if not isinstance(data, dict):
            raise ValueError("Send a JSON object.")
        url, secret, key = data.get("url"), data.get("secret"), data.get("key")
        loops, contact_events = data.get("loops", {}), data.get("contactEvents", False)
        problems = []
        try:
            parsed = httpx.URL(url) if isinstance(url, str) else None
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            problems.append("url must be the bridge's Loops webhook URL, http(s)://...")
        if not _signing_secret_ok(secret):
            problems.append(
                "secret must be a signing secret as Loops makes them: whsec_ then base64"
            )
        if not isinstance(loops, dict) or not all(
            isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip()
            for k, v in loops.items()
        ):
            problems.append('loops must map event names to loop names: {"eventName": "Loop"}')
        if not isinstance(contact_events, bool):
            problems.append("contactEvents must be true or false")
        hint = _hint_of(key) if isinstance(key, str) else None
        if key is not None and hint is None:
            problems.append(
                "key must be an API key (12 characters or more) or its hint, such as …abcd"
            )
        if problems:
            raise ValueError("; ".join(problems) + ".")
        return cls(str(url), str(secret), dict(loops), contact_events, hint)

    @classmethod
    def from_options(
        cls, url: str, secret: str, loops: Iterable[str], contact_events: bool = False
    ) -> LoopsWebhook:
        """From ``loops-bridge sandbox``'s options; ``loops``: ``EVENT=Loop name`` each."""
        named = {}
        for given in loops:
            event_name, equals, loop_name = given.partition("=")
            if not equals or not event_name.strip() or not loop_name.strip():
                raise ValueError(f'--loop takes EVENTNAME="Loop name", not {given!r}.')
            named[event_name.strip()] = loop_name.strip()
        return cls.from_json(
            {"url": url, "secret": secret, "loops": named, "contactEvents": contact_events}
        )

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "url": _url_hint(self.url),
            "secret": _secret_hint(self.secret),
            "loops": dict(self.loops),
            "contactEvents": self.contact_events,
        }
        if self.key is not None:
            shown["key"] = self.key
        return shown


def _signing_secret_ok(secret: Any) -> bool:
    if not isinstance(secret, str) or not secret.startswith("whsec_") or len(secret) < 14:
        return False
    try:
        Webhook(secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError: not base64, or empty
        return False
    return True


def _loops_id(*parts: str) -> str:
    """A stable made-up Loops id (25 characters, as Loops' cuid-like ids) for a loop or its
    email version."""
    return "sbx" + uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)).hex[:22]


def _identity_of(contact: dict[str, Any]) -> dict[str, Any]:
    return {"id": contact["id"], "email": contact["email"], "userId": contact["userId"]}


def _outcome(address: str) -> list[str]:
    """What happens to a loop email sent to ``address``, after ``loop.email.sent``."""
    local = address.split("@", 1)[0].lower()
    kind = local.split("+", 1)[0]
    if kind == "bounce":
        return ["email.hardBounced", "contact.unsubscribed"]
    if kind == "softbounce":
        return ["email.softBounced"]
    if kind == "complaint":
        return ["email.delivered", "email.spamReported"]
    return ["email.delivered"]


def _loop_email(contact: dict[str, Any], event_name: str, loop_name: str) -> list[dict[str, Any]]:
    """The payloads (without eventTime and webhookSchemaVersion) of one loop email's story."""
    loop_id = _loops_id("loop", event_name, loop_name)
    identity = _identity_of(contact)
    email = {
        "id": "sbx" + uuid.uuid4().hex[:22],
        "emailMessageId": _loops_id("email", event_name, loop_name),
        "subject": loop_name,
    }
    story: list[dict[str, Any]] = [
        {
            "eventName": "loop.email.sent",
            "contactIdentity": identity,
            "loopId": loop_id,
            "loopName": loop_name,
            "email": email,
        }
    ]
    for name in _outcome(contact["email"]):
        if name == "contact.unsubscribed":
            story.append({"eventName": name, "contactIdentity": identity})
        else:
            story.append(
                {
                    "eventName": name,
                    "sourceType": "loop",
                    "loopId": loop_id,
                    "email": email,
                    "contactIdentity": identity,
                }
            )
    return story


@dataclass
class _Post:
    """One Loops webhook: its record (shown by the inspection API) and where it goes."""

    record: dict[str, Any]
    webhook: LoopsWebhook
    body: str  # the JSON sent, and signed, on every attempt


@dataclass
class _Outbox:
    """One team's Loops webhooks waiting, oldest first, and the task posting them."""

    waiting: deque[_Post] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    next_slot: float = float("-inf")  # the sandbox clock's time the next attempt may start


# --- the app ------------------------------------------------------------------------------


def _bearer_key(headers: Headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or " " in key:
        return None
    return key


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    def refuse(constant: str) -> None:
        raise ValueError(constant)  # NaN and Infinity are not JSON

    try:
        return json.loads(raw, parse_constant=refuse), True
    except ValueError:
        return None, False


def _hint_of(given: str) -> str | None:
    """The hint a fault's ``key`` names: a full key (12 characters or more) by its last 4,
    a hint as "…abcd", "...abcd" or "abcd" as it is; None if it is neither."""
    if given.startswith(("…", "...")) or len(given) == 4:
        tail = given.lstrip("….")
        return "…" + tail if len(tail) == 4 else None
    return _key_hint(given) if len(given) >= 12 else None


def _key_filter(request: Request) -> Callable[[str | None], bool]:
    """``?key=…abcd`` (or ``...abcd`` or ``abcd``) keeps one team's records."""
    wanted = request.query_params.get("key")
    if not wanted:
        return lambda hint: True
    tail = wanted.lstrip("….")
    return lambda hint: hint is not None and hint.lstrip("….") == tail


class _Sandbox:
    """The sandbox's state and its routes."""

    def __init__(
        self,
        api_keys: frozenset[str] | None,
        rate_limit: int,
        clock: Callable[[], float],
        *,
        loops_webhook: LoopsWebhook | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api_keys = api_keys
        self.rate_limit = rate_limit
        self.clock = clock
        self.teams: dict[str, Team] = {}  # by full API key, never shown
        self.requests: list[dict[str, Any]] = []
        self.faults: dict[str | None, Fault] = {}  # by key hint; None: the global one
        # Loops' webhooks: configurations and outboxes by key hint (None: every other team).
        self.webhooks: dict[str | None, LoopsWebhook] = {}
        if loops_webhook is not None:
            self.webhooks[loops_webhook.key] = loops_webhook
        self.outboxes: dict[str | None, _Outbox] = {}
        self.loops_webhooks: list[dict[str, Any]] = []  # every post, in the order queued
        self.webhook_transport = webhook_transport
        self.sleep = sleep
        self._unix_offset = time.time() - clock()  # the clock's reading now is now

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        return {"x-ratelimit-limit": str(self.rate_limit), "x-ratelimit-remaining": str(remaining)}

    def _invalid_key(self) -> tuple[int, Any, dict[str, str]]:
        return *_error(401, "Invalid API key", legacy=True), self._limit_headers(self.rate_limit)

    def _over_limit(self) -> tuple[int, Any, dict[str, str]]:
        message = f"Rate limit of {self.rate_limit} requests per second exceeded."
        return *_error(429, message), self._limit_headers(0)

    def _take_fault(self, hint: str) -> Fault | None:
        """The fault for a request of the key with this hint: its own, else the global one."""
        which = hint if hint in self.faults else None
        fault = self.faults.get(which)
        if fault is not None and fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                del self.faults[which]
        return fault

    def _faults_json(self) -> dict[str, Any]:
        """``{"fault": the global one or null}``, plus ``byKey`` when a key has its own."""
        shown: dict[str, Any] = {"fault": None}
        for which, fault in self.faults.items():
            if which is None:
                shown["fault"] = fault.as_json()
            else:
                shown.setdefault("byKey", {})[which] = fault.as_json()
        return shown

    async def loops_api(self, request: Request) -> JSONResponse:
        """Every request under /api/v1: answered, recorded in arrival order."""
        key = _bearer_key(request.headers)
        body, body_is_json = _parse_json(await request.body())
        call = _Call(
            at=self.clock(),
            query=request.query_params,
            body=body,
            body_is_json=body_is_json,
            idempotency_key=request.headers.get("idempotency-key") or None,
        )
        record: dict[str, Any] = {
            "at": call.at,
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "key": _key_hint(key),
            "idempotencyKey": call.idempotency_key,
            "body": body,
            "status": None,
            "response": None,
        }
        self.requests.append(record)
        status, payload, headers = await self._answer(
            request.method, request.path_params["endpoint"], key, call
        )
        record["status"], record["response"] = status, copy.deepcopy(payload)
        return JSONResponse(payload, status, headers)

    async def _answer(
        self, method: str, endpoint: str, key: str | None, call: _Call
    ) -> tuple[int, Any, dict[str, str]]:
        if key is None or (self.api_keys is not None and key not in self.api_keys):
            return self._invalid_key()
        team = self.teams.get(key)
        if team is None:
            team = self.teams[key] = Team(hint=_key_hint(key) or "…")

        fault = self._take_fault(team.hint)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status == 401:
                return self._invalid_key()
            if fault.status == 429:
                return self._over_limit()
            if fault.status is not None:
                try:
                    reason = HTTPStatus(fault.status).phrase
                except ValueError:
                    reason = "Error"
                headers = self._limit_headers(team.remaining(call.at, self.rate_limit))
                return *_error(fault.status, f"{reason} (fault injected by the sandbox)"), headers

        remaining = team.admit(call.at, self.rate_limit)
        if remaining is None:
            return self._over_limit()
        headers = self._limit_headers(remaining)

        route = _ENDPOINTS.get(endpoint)
        if route is None:
            message = f"Not found: {method} /api/v1/{endpoint} (not emulated by the sandbox)."
            return *_error(404, message), headers
        allowed_method, answer = route
        if method != allowed_method:
            return *_error(405, "Method not allowed."), {**headers, "allow": allowed_method}
        try:
            status, payload = answer(team, call)
        except _Rejected as rejected:
            status, payload = _error(rejected.status, rejected.message)
        news, team.news = team.news, []
        if status == 200:
            self._tell_the_bridge(team, news)
        return status, payload, headers

    # --- Loops' webhooks --------------------------------------------------------------------

    def _unix_time(self) -> int:
        return int(self.clock() + self._unix_offset)

    def _tell_the_bridge(self, team: Team, news: list[tuple[str, dict[str, Any]]]) -> None:
        """Queue the Loops webhooks that what a call did makes Loops post (module docstring)."""
        hint = team.hint
        webhook = self.webhooks.get(hint) or self.webhooks.get(None)
        if webhook is None:
            return
        for what, item in news:
            if what == "contact.created" and webhook.contact_events:
                created = {"eventName": what, "contactIdentity": _identity_of(item)}
                self._queue(hint, webhook, [{**created, "contact": copy.deepcopy(item)}])
            elif what == "contact.deleted" and webhook.contact_events:
                identity = _identity_of(item)
                self._queue(
                    hint,
                    webhook,
                    [
                        {"eventName": "contact.unsubscribed", "contactIdentity": identity},
                        {"eventName": "contact.deleted", "contactIdentity": identity},
                    ],
                )
            elif what == "event" and item["eventName"] in webhook.loops:
                contact = team.find(email=item["email"])
                if contact is None or not contact["subscribed"]:
                    log.info("Loops webhooks: no loop email to an unsubscribed contact")
                    continue
                story = _loop_email(contact, item["eventName"], webhook.loops[item["eventName"]])
                if any(p["eventName"] == "contact.unsubscribed" for p in story):
                    contact["subscribed"] = False  # Loops unsubscribes a hard-bounced address
                self._queue(hint, webhook, story)

    def _queue(
        self, hint: str | None, webhook: LoopsWebhook, payloads: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Queue the payloads for ``webhook``, in order; their records. The team's outbox task
        posts them once the API call is answered."""
        outbox = self.outboxes.setdefault(hint, _Outbox())
        records = []
        for given in payloads:
            payload = {
                "eventName": given["eventName"],
                "eventTime": self._unix_time(),
                "webhookSchemaVersion": "1.0.0",
                **{k: v for k, v in given.items() if k != "eventName"},
            }
            record = {
                "webhookId": "msg_" + uuid.uuid4().hex,
                "key": hint,
                "url": _url_hint(webhook.url),
                "eventName": payload["eventName"],
                "queuedAt": self.clock(),
                "status": "queued",
                "payload": payload,
                "attempts": [],
            }
            self.loops_webhooks.append(record)
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            outbox.waiting.append(_Post(record, webhook, body))
            records.append(record)
        if outbox.task is None or outbox.task.done():
            outbox.task = asyncio.get_running_loop().create_task(self._post_all(outbox))
        return records

    async def _post_all(self, outbox: _Outbox) -> None:
        """Post the outbox's webhooks, oldest first, until it is empty."""
        async with httpx.AsyncClient(
            transport=self.webhook_transport, timeout=WEBHOOK_TIMEOUT_SECONDS
        ) as client:
            while outbox.waiting:
                await self._deliver(client, outbox, outbox.waiting[0])
                outbox.waiting.popleft()

    async def _deliver(self, client: httpx.AsyncClient, outbox: _Outbox, post: _Post) -> None:
        """Post one webhook, retrying after each of WEBHOOK_RETRY_DELAYS while it fails."""
        record = post.record
        for attempt, delay in enumerate((0.0, *WEBHOOK_RETRY_DELAYS), start=1):
            if delay:
                await self.sleep(delay)
            await self._take_slot(outbox)
            answer = await self._attempt(client, post)
            record["attempts"].append(answer)
            log.info(
                "Loops webhook %s %s -> %s: %s (attempt %d)",
                record["eventName"],
                record["webhookId"],
                record["url"],
                answer["status"] or answer["error"],
                attempt,
            )
            if answer["status"] is not None and 200 <= answer["status"] < 300:
                record["status"] = "delivered"
                return
        record["status"] = "failed"
        log.warning(
            "Loops webhook %s %s -> %s: gave up after %d attempts; see /_sandbox/loops-webhooks",
            record["eventName"],
            record["webhookId"],
            record["url"],
            len(record["attempts"]),
        )

    async def _take_slot(self, outbox: _Outbox) -> None:
        """Wait for the outbox's next slot: attempts start at least 1/10 s apart."""
        now = self.clock()
        if outbox.next_slot > now:
            await self.sleep(outbox.next_slot - now)
            now = self.clock()
        outbox.next_slot = max(now, outbox.next_slot) + _WEBHOOK_SPACING

    async def _attempt(self, client: httpx.AsyncClient, post: _Post) -> dict[str, Any]:
        """One signed POST of the webhook; what came back."""
        webhook_id = post.record["webhookId"]
        timestamp = self._unix_time()
        when = datetime.fromtimestamp(timestamp, UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "loops-bridge-sandbox",
            "Webhook-Id": webhook_id,
            "Webhook-Timestamp": str(timestamp),
            "Webhook-Signature": Webhook(post.webhook.secret).sign(webhook_id, when, post.body),
        }
        answer: dict[str, Any] = {"at": self.clock(), "timestamp": timestamp}
        try:
            response = await client.post(
                post.webhook.url, content=post.body.encode(), headers=headers
            )
        except Exception as exc:  # no answer (in-process: the receiver's crash): try again
            return {**answer, "status": None, "error": f"{type(exc).__name__}: {exc}"}
        return {**answer, "status": response.status_code, "response": response.text[:1000]}

    async def _stop_posting(self) -> None:
        """Cancel the outboxes' tasks (the app stops, or is reset); unsent posts are dropped."""
        tasks = [o.task for o in self.outboxes.values() if o.task and not o.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.outboxes.clear()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        unsent = sum(len(o.waiting) for o in self.outboxes.values())
        if unsent:
            log.warning("Loops webhooks: %d not posted yet, dropped as the sandbox stops", unsent)
        await self._stop_posting()

    # --- made-up routes: inspection and fault injection -----------------------------------

    async def summary(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": "loops-bridge sandbox: a local stand-in for the Loops API",
                "baseUrl": f"{request.base_url}api/v1",
                "rateLimit": self.rate_limit,
                "apiKeys": "any" if self.api_keys is None else len(self.api_keys),
                **self._faults_json(),
                **self._webhooks_json(),
                "counts": {
                    "requests": len(self.requests),
                    "teams": len(self.teams),
                    "contacts": sum(len(t.contacts) for t in self.teams.values()),
                    "events": sum(len(t.events) for t in self.teams.values()),
                },
                "teams": [
                    {"key": t.hint, "contacts": len(t.contacts), "events": len(t.events)}
                    for t in self.teams.values()
                ],
                "inspect": [
                    "/_sandbox/requests",
                    "/_sandbox/contacts",
                    "/_sandbox/events",
                    "/_sandbox/faults",
                    "/_sandbox/loops-webhook",
                    "/_sandbox/loops-webhooks",
                ],
                "injectFaults": 'POST /_sandbox/faults {"status": 429, "count": 2, "delay": 0.5,'
                ' "key": "…abcd"}: each field optional (status or delay required); "key" limits'
                " it to one API key. DELETE /_sandbox/faults[?key=…abcd] clears.",
            }
        )

    async def list_requests(self, request: Request) -> JSONResponse:
        keep = _key_filter(request)
        return JSONResponse([r for r in self.requests if keep(r["key"])])

    async def list_contacts(self, request: Request) -> JSONResponse:
        keep = _key_filter(request)
        return JSONResponse(
            [
                {"key": team.hint, **contact}
                for team in self.teams.values()
                if keep(team.hint)
                for contact in team.contacts.values()
            ]
        )

    async def list_events(self, request: Request) -> JSONResponse:
        keep = _key_filter(request)
        return JSONResponse(
            [event for team in self.teams.values() if keep(team.hint) for event in team.events]
        )

    async def show_fault(self, request: Request) -> JSONResponse:
        return JSONResponse(self._faults_json())

    async def set_fault(self, request: Request) -> JSONResponse:
        """``{"status": 503, "count": 2, "delay": 0.5, "key": "…abcd"}``; each field optional,
        ``status`` or ``delay`` required. It replaces the fault of the same key (or the global
        one)."""
        data, _ = _parse_json(await request.body())
        if not isinstance(data, dict):
            return JSONResponse(_error(400, "Send a JSON object.")[1], 400)
        status, count, delay = data.get("status"), data.get("count"), data.get("delay", 0)
        key = data.get("key")
        hint = _hint_of(key) if isinstance(key, str) else None
        problems = []
        if key is not None and hint is None:
            problems.append(
                "key must be an API key (12 characters or more) or its hint, such as …abcd"
            )
        if status is not None and (type(status) is not int or not 100 <= status <= 599):
            problems.append("status must be an HTTP status code")
        if count is not None and (type(count) is not int or count < 1):
            problems.append("count must be a positive integer")
        if type(delay) not in (int, float) or delay < 0:
            problems.append("delay must be a number of seconds >= 0")
        elif status is None and not delay:
            problems.append("send a status, a delay or both")
        if problems:
            return JSONResponse(_error(400, "; ".join(problems) + ".")[1], 400)
        fault = self.faults[hint] = Fault(status, count, float(delay), hint)
        return JSONResponse({"fault": fault.as_json()})

    async def clear_fault(self, request: Request) -> JSONResponse:
        """Every fault, or with ``?key=`` that key's own; answers what is left."""
        key = request.query_params.get("key")
        if key is None:
            self.faults.clear()
        else:
            hint = _hint_of(key)
            if hint is None:
                message = "key must be an API key (12 characters or more) or its hint."
                return JSONResponse(_error(400, message)[1], 400)
            self.faults.pop(hint, None)
        return JSONResponse(self._faults_json())

    def _webhooks_json(self) -> dict[str, Any]:
        """``{"webhook": every team's or null}``, plus ``byKey`` when a key has its own."""
        shown: dict[str, Any] = {"webhook": None}
        for which, webhook in self.webhooks.items():
            if which is None:
                shown["webhook"] = webhook.as_json()
            else:
                shown.setdefault("byKey", {})[which] = webhook.as_json()
        return shown

    async def show_loops_webhook(self, request: Request) -> JSONResponse:
        return JSONResponse(self._webhooks_json())

    async def set_loops_webhook(self, request: Request) -> JSONResponse:
        """``{"url", "secret", "loops", "contactEvents", "key"}``: it replaces the
        configuration of the same key (or every team's)."""
        data, _ = _parse_json(await request.body())
        try:
            webhook = LoopsWebhook.from_json(data)
        except ValueError as exc:
            return JSONResponse(_error(400, str(exc))[1], 400)
        self.webhooks[webhook.key] = webhook
        return JSONResponse({"webhook": webhook.as_json()})

    async def clear_loops_webhook(self, request: Request) -> JSONResponse:
        """Every configuration, or with ``?key=`` that key's own; answers what is left."""
        key = request.query_params.get("key")
        if key is None:
            self.webhooks.clear()
        else:
            hint = _hint_of(key)
            if hint is None:
                message = "key must be an API key (12 characters or more) or its hint."
                return JSONResponse(_error(400, message)[1], 400)
            self.webhooks.pop(hint, None)
        return JSONResponse(self._webhooks_json())

    async def test_loops_webhook(self, request: Request) -> JSONResponse:
        """Post ``testing.testEvent``, as Loops' settings page's test button does; ``?key=``
        picks the configuration of that key."""
        key = request.query_params.get("key")
        hint = _hint_of(key) if key else None
        if key and hint is None:
            message = "key must be an API key (12 characters or more) or its hint."
            return JSONResponse(_error(400, message)[1], 400)
        webhook = self.webhooks.get(hint) or self.webhooks.get(None)
        if webhook is None:
            message = "No Loops webhook is configured: POST /_sandbox/loops-webhook first."
            return JSONResponse(_error(400, message)[1], 400)
        (record,) = self._queue(
            hint, webhook, [{"eventName": "testing.testEvent", "message": "test"}]
        )
        return JSONResponse({"success": True, "webhookId": record["webhookId"]})

    async def list_loops_webhooks(self, request: Request) -> JSONResponse:
        keep = _key_filter(request)
        return JSONResponse([r for r in self.loops_webhooks if keep(r["key"])])

    async def reset(self, request: Request) -> JSONResponse:
        """Forget every team, request, fault and Loops webhook (unsent ones too); the Loops
        webhook configuration stays, like the API keys and the rate limit."""
        self.teams.clear()
        self.requests.clear()
        self.faults.clear()
        await self._stop_posting()
        self.loops_webhooks.clear()
        return JSONResponse({"success": True})


class _AccessLog:
    """One info line per request: method, path, status and the key's hint."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            hint = _key_hint(_bearer_key(Headers(scope=scope))) or "-"
            log.info("%s %s %d key=%s", scope["method"], scope["path"], status, hint)


def create_app(
    api_keys: Iterable[str] | None = None,
    rate_limit: int = 10,
    clock: Callable[[], float] = time.monotonic,
    *,
    loops_webhook: LoopsWebhook | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Starlette:
    """The sandbox app. ``api_keys`` None: any non-empty Bearer key is valid, each its own
    team. ``rate_limit``: requests per second per key. ``clock``: seconds, for the rate limit,
    the idempotency window, the ``at`` of records, the Loops webhooks' pace and (as unix time)
    their ``eventTime``. ``loops_webhook``: where Loops' webhooks go, from the start.
    ``webhook_transport``: how they are posted (an ``httpx.ASGITransport`` delivers them to an
    app in-process); None: over the network. It may be set later, as
    ``app.state.sandbox.webhook_transport``, for a receiving app made after the sandbox.
    ``sleep``: how the webhooks' pacing and retries wait (a test's fake one moves its fake
    ``clock``)."""
    if rate_limit < 1:
        raise ValueError("rate_limit must be at least 1")
    sandbox = _Sandbox(
        None if api_keys is None else frozenset(api_keys),
        rate_limit,
        clock,
        loops_webhook=loops_webhook,
        webhook_transport=webhook_transport,
        sleep=sleep,
    )
    routes = [
        Route("/", sandbox.summary, methods=["GET"]),
        Route("/api/v1/{endpoint:path}", sandbox.loops_api, methods=_ALL_METHODS),
        Route("/_sandbox/requests", sandbox.list_requests, methods=["GET"]),
        Route("/_sandbox/contacts", sandbox.list_contacts, methods=["GET"]),
        Route("/_sandbox/events", sandbox.list_events, methods=["GET"]),
        Route("/_sandbox/faults", sandbox.show_fault, methods=["GET"]),
        Route("/_sandbox/faults", sandbox.set_fault, methods=["POST"]),
        Route("/_sandbox/faults", sandbox.clear_fault, methods=["DELETE"]),
        Route("/_sandbox/loops-webhook", sandbox.show_loops_webhook, methods=["GET"]),
        Route("/_sandbox/loops-webhook", sandbox.set_loops_webhook, methods=["POST"]),
        Route("/_sandbox/loops-webhook", sandbox.clear_loops_webhook, methods=["DELETE"]),
        Route("/_sandbox/loops-webhook/test", sandbox.test_loops_webhook, methods=["POST"]),
        Route("/_sandbox/loops-webhooks", sandbox.list_loops_webhooks, methods=["GET"]),
        Route("/_sandbox/reset", sandbox.reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_AccessLog)], lifespan=sandbox.lifespan)
    app.state.sandbox = sandbox  # its webhook_transport may be set later (tests/harness.py)
    return app


def serve(
    host: str,
    port: int,
    api_keys: Iterable[str] | None = None,
    rate_limit: int = 10,
    *,
    loops_webhook: LoopsWebhook | None = None,
) -> None:
    """Run the sandbox with uvicorn until interrupted (``loops-bridge sandbox``)."""
    import uvicorn

    if not log.handlers and not logging.getLogger().handlers:  # else the caller's config
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s sandbox %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    app = create_app(api_keys, rate_limit, loops_webhook=loops_webhook)
    log.info("Loops API stand-in at http://%s:%d/api/v1 (inspect: /_sandbox/requests)", host, port)
    if loops_webhook is not None:
        loops = ", ".join(f"{e} -> {n!r}" for e, n in loops_webhook.loops.items()) or "none"
        log.info(
            "Loops webhooks to %s signed with %s; loops: %s (sent: /_sandbox/loops-webhooks)",
            _url_hint(loops_webhook.url),
            _secret_hint(loops_webhook.secret),
            loops,
        )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
