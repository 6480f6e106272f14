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

Secrets are never shown in full: anything the sandbox shows or logs names a key by its hint,
"…" plus its last four characters (nothing at all for keys shorter than 12 characters).
State lives in plain dicts: the app runs on one event loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 1.0
IDEMPOTENCY_WINDOW_SECONDS = 24 * 60 * 60.0
MAX_VALUE_CHARS = 500  # quotes counted: https://loops.so/docs/api-reference/intro
MAX_IDEMPOTENCY_KEY_CHARS = 100

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
        return contact

    def change_email(self, contact: dict[str, Any], email: str) -> None:
        del self.contacts[contact["email"].lower()]
        contact["email"] = email
        self.contacts[email.lower()] = contact

    def remove(self, contact: dict[str, Any]) -> None:
        del self.contacts[contact["email"].lower()]

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
    team.events.append(
        {
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
    )
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
        self, api_keys: frozenset[str] | None, rate_limit: int, clock: Callable[[], float]
    ) -> None:
        self.api_keys = api_keys
        self.rate_limit = rate_limit
        self.clock = clock
        self.teams: dict[str, Team] = {}  # by full API key, never shown
        self.requests: list[dict[str, Any]] = []
        self.faults: dict[str | None, Fault] = {}  # by key hint; None: the global one

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
        return status, payload, headers

    # --- made-up routes: inspection and fault injection -----------------------------------

    async def summary(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": "loops-bridge sandbox: a local stand-in for the Loops API",
                "baseUrl": f"{request.base_url}api/v1",
                "rateLimit": self.rate_limit,
                "apiKeys": "any" if self.api_keys is None else len(self.api_keys),
                **self._faults_json(),
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

    async def reset(self, request: Request) -> JSONResponse:
        self.teams.clear()
        self.requests.clear()
        self.faults.clear()
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
) -> Starlette:
    """The sandbox app. ``api_keys`` None: any non-empty Bearer key is valid, each its own
    team. ``rate_limit``: requests per second per key. ``clock``: seconds, for the rate limit,
    the idempotency window and the ``at`` of records."""
    if rate_limit < 1:
        raise ValueError("rate_limit must be at least 1")
    sandbox = _Sandbox(None if api_keys is None else frozenset(api_keys), rate_limit, clock)
    routes = [
        Route("/", sandbox.summary, methods=["GET"]),
        Route("/api/v1/{endpoint:path}", sandbox.loops_api, methods=_ALL_METHODS),
        Route("/_sandbox/requests", sandbox.list_requests, methods=["GET"]),
        Route("/_sandbox/contacts", sandbox.list_contacts, methods=["GET"]),
        Route("/_sandbox/events", sandbox.list_events, methods=["GET"]),
        Route("/_sandbox/faults", sandbox.show_fault, methods=["GET"]),
        Route("/_sandbox/faults", sandbox.set_fault, methods=["POST"]),
        Route("/_sandbox/faults", sandbox.clear_fault, methods=["DELETE"]),
        Route("/_sandbox/reset", sandbox.reset, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_AccessLog)])


def serve(
    host: str, port: int, api_keys: Iterable[str] | None = None, rate_limit: int = 10
) -> None:
    """Run the sandbox with uvicorn until interrupted (``loops-bridge sandbox``)."""
    import uvicorn

    if not log.handlers and not logging.getLogger().handlers:  # else the caller's config
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s sandbox %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    app = create_app(api_keys, rate_limit)
    log.info("Loops API stand-in at http://%s:%d/api/v1 (inspect: /_sandbox/requests)", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
