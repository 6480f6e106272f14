"""``POST /loops-webhooks/{token}``: Loops' own webhooks, what happened to each email.

Loops posts an event to one URL per Loops account (Settings → Webhooks) when an email is
sent, delivered, bounces, is opened... (https://loops.so/docs/webhooks). The bridge gives
each account such a URL, ``/loops-webhooks/lw_<128 random bits>``
(:func:`bridge.registry.loops_webhook_url`), checks Loops' signature, and stores the event
as a :class:`bridge.models.LoopsEvent` row before it answers. Nothing else happens on this
path: Loops is never called from it, and what the event means for a delivery is decided by
:func:`bridge.outcomes.link` in the same transaction.

Verification is Standard Webhooks' (https://www.standardwebhooks.com/), as Loops signs:
``Webhook-Id``, ``Webhook-Timestamp`` (unix seconds) and ``Webhook-Signature`` (one or more
space-separated ``v1,<base64>``), HMAC-SHA256 over ``f"{id}.{timestamp}.{body}"`` keyed
with the base64-decoded part of the ``whsec_...`` secret. :mod:`providers.standard_webhooks`
checks it as it does Clerk's (constant time), once per secret of the account (several while
one is rolled), and refuses a timestamp more than 300 s off either way. Loops' own sample
code applies no window; the bridge does, as for every other platform.

Answers, as JSON ``{"status": ..., "id" / "reason": ...}``, the same limits and refusals
as the Stripe route (:mod:`bridge.webhooks`)::

    200  stored (a new event, any eventName, testing.testEvent too) or duplicate (the
         account already has this Webhook-Id)
    400  rejected: a signature header missing or malformed, a timestamp out of the window,
         no signing secret, a signature no secret makes, a body that is not a JSON object
         with eventName and eventTime, a Content-Length not the body's
    404  rejected: no such URL. An unknown token and a malformed one get the same bytes
    405  rejected: a method other than POST, whatever the token, with Allow: POST
    408, 413, 415, 431  as on the Stripe route: slow body, too large, compressed, headers
    503  unavailable: storage unavailable, Loops retries later

A refusal for a known account is logged (at most :data:`webhooks.REFUSALS_RECORDED_PER_SECOND`
a second per account) with the reason and the redacted headers, and the latest is kept on
the account (``accounts.loops_webhook_refused_at`` / ``loops_webhook_refused``) for its page
and ``accounts loops-webhook NAME``: a user whose test from Loops never shows sees why.

The app puts a :class:`Receiver` in ``app.state.loops_webhooks``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.background import BackgroundTask
from starlette.endpoints import HTTPEndpoint
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import db, logs, metrics, outcomes, webhooks
from bridge.inbox import redact
from bridge.lookups import Lookups
from bridge.models import Account, Contact, LoopsEvent, LoopsWebhookSecret
from providers import Rejected
from providers.fields import MAX_ID_CHARS, BodyReasons, is_name, load_object
from providers.standard_webhooks import Scheme, is_secret

__all__ = ["ROUTE", "TOKEN", "Receiver", "secret_problem"]

log = logging.getLogger("bridge.loops_webhooks")

# What bridge.registry makes: "lw_" and 128 random bits in base64url. Nothing else is looked up.
TOKEN = re.compile(r"lw_[A-Za-z0-9_-]{22}")
EVENT_TIMES = range(0, 2**31)  # eventTime is an SQL INTEGER: PostgreSQL's holds no more
MAX_EMAIL_CHARS = 320
MAX_TEXT_CHARS = 1000  # a subject or a loop's name is cut here
SOURCE_TYPES = ("campaign", "loop", "transactional")

_LOOPS_WEBHOOKS = "Loops, Settings → Webhooks"
_NOT_FOUND = (
    404,
    {"status": "rejected", "reason": "unknown Loops webhook URL: copy it again from the bridge"},
)
_USE_POST = {"status": "rejected", "reason": "send webhooks with POST"}
_UNAVAILABLE = {"status": "unavailable", "reason": "storage unavailable; retry later"}

# --- Why a request is refused. Shown to the sender and logged; never holds a secret. ---

_LOOPS = Scheme(
    "Loops",
    ("Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"),
    no_secret=(
        "This Loops account has no signing secret in the bridge yet: copy the signing secret "
        f"(whsec_...) from {_LOOPS_WEBHOOKS}, and add it to the account in the bridge."
    ),
    unusable_secrets=(
        "None of this account's signing secrets is a Loops signing secret (whsec_ followed by "
        f"base64), so no signature can be checked: copy it again from {_LOOPS_WEBHOOKS}."
    ),
    no_match=(
        "The signature does not match any of this account's Loops signing secrets: copy the "
        f"signing secret (whsec_...) from {_LOOPS_WEBHOOKS}, and add it to the account in the "
        "bridge. Each Loops account has its own. A proxy that rewrites the body (even its "
        "whitespace) also breaks the signature."
    ),
)
_BODY = BodyReasons(
    not_json="The body is not JSON, so it is not a Loops event.",
    not_object="The body is JSON but not an object, so it is not a Loops event.",
    too_deep="The body is JSON nested more than 254 levels deep, so it is not a Loops event.",
    repeated_keys="The body has an object with the same key twice.",  # not checked
)
_NO_FIELDS = (
    "The body is a JSON object without a valid {}, so it is not a Loops event: Loops sends "
    "eventName (e.g. email.delivered) and eventTime (unix seconds) in every webhook."
)


def secret_problem(secret: str) -> str | None:
    """What is wrong with a Loops signing secret a person pasted, or None."""
    if is_secret(secret):
        return None
    return (
        "That does not look like a Loops signing secret: it is whsec_ followed by base64 "
        f"(letters, digits, + and /). Copy it from {_LOOPS_WEBHOOKS} → the signing secret."
    )


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """The Webhook-Id of a request signed by one of ``secrets`` within the window; Rejected
    with the reason otherwise."""
    return _LOOPS.verify(body, headers, secrets)


# --- The body: Loops' payload into the columns of a LoopsEvent. ---


def _text(value: Any, limit: int = MAX_ID_CHARS) -> str | None:
    """A string field as stored: trimmed, cut to ``limit``, without NUL (PostgreSQL refuses
    it in text); None for an empty one or anything else."""
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()[:limit]
    return value or None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse(body: bytes) -> dict[str, Any]:
    """The LoopsEvent columns of a Loops webhook body (not its ids or times of receipt);
    Rejected if it is not a JSON object with eventName and eventTime.

    Every Loops event but testing.testEvent names its contact (``contactIdentity``); the
    email events name the email (``email``) and where it came from: ``sourceType`` and its
    ``campaignId`` / ``loopId`` / ``transactionalId``. ``*.email.sent`` carry no sourceType:
    it is the event's first word. Names (``loopName``...) are in the Go SDK's types, not in
    Loops' docs: kept when present."""
    event = load_object(body, _BODY)
    name, at = event.get("eventName"), event.get("eventTime")
    if not is_name(name):
        raise Rejected(_NO_FIELDS.format("eventName"))
    if isinstance(at, float) and math.isfinite(at):
        at = math.floor(at)
    if isinstance(at, bool) or not isinstance(at, int) or at not in EVENT_TIMES:
        raise Rejected(_NO_FIELDS.format("eventTime"))
    contact, email = _object(event.get("contactIdentity")), _object(event.get("email"))
    source_type = event.get("sourceType")
    if source_type not in SOURCE_TYPES:
        first = name.split(".", 1)[0]
        source_type = first if first in SOURCE_TYPES and name.endswith(".email.sent") else None
    address = _text(contact.get("email"), MAX_EMAIL_CHARS)
    return {
        "event_name": name,
        "event_time": at,
        "contact_id": _text(contact.get("id")),
        "email": address.lower() if address else None,
        "user_id": _text(contact.get("userId")),
        "source_type": source_type,
        "source_id": _text(event.get(f"{source_type}Id")) if source_type else None,
        "source_name": _text(event.get(f"{source_type}Name"), MAX_TEXT_CHARS)
        if source_type
        else None,
        "email_id": _text(email.get("id")),
        "email_message_id": _text(email.get("emailMessageId")),
        "subject": _text(email.get("subject"), MAX_TEXT_CHARS),
    }


CONTACT_DELETED = "contact.deleted"


def _forget_contact(
    conn: sa.Connection, account_id: int, user_id: str | None, email: str | None
) -> None:
    """Someone deleted the contact in Loops: the bridge no longer counts it as there, so the
    next event about it creates it whole (source, user group, mailing lists), as a new
    contact, rather than through an event's upsert without them. A deletion the bridge made
    stays kept (``deleted_at``): it still keeps older events out."""
    identities = [i for i in (user_id, email) if i]  # how queue.py keys contacts
    if identities:
        conn.execute(
            sa.delete(Contact).where(
                Contact.account_id == account_id,  # type: ignore[arg-type]
                Contact.identity.in_(identities),  # type: ignore[attr-defined]
                Contact.deleted_at.is_(None),  # type: ignore[union-attr]
            )
        )


# --- The route. ---


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    name: str
    secrets: tuple[str, ...]


class Receiver:
    """What the route keeps between requests: the database, the body limit, accounts by
    token (cached for ``ttl`` seconds, so a burst reads the database once), and the count
    of refusals logged per account."""

    def __init__(self, engine: Engine, max_body_bytes: int, ttl: float = 2.0) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self._accounts = Lookups(self._load, ttl)
        self.refusals = logs.Share(webhooks.REFUSALS_RECORDED_PER_SECOND)
        self.failures = logs.Share(1)  # lines a second saying an account could not be read
        table = LoopsEvent.__table__  # type: ignore[attr-defined]
        self._insert = (
            db.insert(engine, table)
            .on_conflict_do_nothing(index_elements=["account_id", "webhook_id"])
            .returning(table.c.id)
        )
        self._existing = sa.select(table.c.id).where(
            table.c.account_id == sa.bindparam("account_id"),
            table.c.webhook_id == sa.bindparam("webhook_id"),
        )

    async def account(self, token: str) -> _Account | None:
        return await self._accounts.get(token)

    def _load(self, token: str) -> _Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(Account.id, Account.name).where(Account.loops_webhook_token == token)
            ).first()
            if row is None:
                return None
            values = conn.execute(
                sa.select(LoopsWebhookSecret.value)
                .where(LoopsWebhookSecret.account_id == row.id)
                .order_by(LoopsWebhookSecret.id)  # type: ignore[arg-type]
            ).scalars()
            return _Account(row.id, row.name, tuple(values))

    def store(
        self, account_id: int, webhook_id: str, columns: dict, body: bytes
    ) -> tuple[int, bool]:
        """In a thread: store the event, committed; (its id, whether it is new)."""
        row = {
            **columns,
            "account_id": account_id,
            "webhook_id": webhook_id,
            "received_at": time.time(),
            "payload": body,
        }
        with self.engine.begin() as conn:
            new_id = conn.execute(self._insert, row).scalar()
            if new_id is None:  # Loops sent it again
                return conn.execute(self._existing, row).scalar_one(), False
            _link(conn, new_id)
            if columns["event_name"] == CONTACT_DELETED:
                _forget_contact(conn, account_id, columns["user_id"], columns["email"])
        return new_id, True

    def record_refusal(self, account_id: int, status: int, reason: str) -> None:
        """In a thread: keep the refusal as the account's latest, for its page (the log has
        each one). A failure here is only logged: the answer has gone already."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(Account)
                    .where(Account.id == account_id)  # type: ignore[arg-type]
                    .values(
                        loops_webhook_refused_at=time.time(),
                        loops_webhook_refused=f"{status}: {reason}",
                    )
                )
        except Exception as exc:
            log.warning("could not keep a refused Loops webhook for the account's page: %s", exc)


def _link(conn: sa.Connection, event_id: int) -> None:
    """Link the event to the delivery behind it (:func:`bridge.outcomes.link`), in a
    savepoint of the transaction that stores it: a failure there is logged and loses
    nothing, the event is stored without its link."""
    try:
        with conn.begin_nested():
            outcomes.link(conn, event_id)
    except Exception:
        log.exception("Loops event %s stored, but could not be linked to a delivery", event_id)


async def receive(request: Request) -> Response:
    """``POST /loops-webhooks/{token}``."""
    receiver: Receiver = request.app.state.loops_webhooks
    token: str = request.path_params["token"]
    try:
        account = await receiver.account(token) if TOKEN.fullmatch(token) else None
    except Exception as exc:
        if (unlogged := receiver.failures.to_log("")) is not None:  # one share for the route
            log.error(
                "Loops webhook: could not read the account of a token, so it was answered 503 "
                "and Loops retries it: %s%s",
                db.problem(exc),
                logs.unlogged(unlogged),
            )
        return webhooks.JSONAnswer(_UNAVAILABLE, 503)
    if account is None:
        return webhooks.JSONAnswer(_NOT_FOUND[1], _NOT_FOUND[0])
    try:
        status, answer = await _receive(receiver, account, request)
    except ClientDisconnect:
        return Response(status_code=400)
    if (
        answer["status"] == "rejected"
        and (unlogged := receiver.refusals.to_log(account.id)) is not None
    ):
        also = f" ({unlogged} more refused before this one, not logged)" if unlogged else ""
        log.info(
            "Loops account %s: a Loops webhook was refused (%s): %s%s; headers %s",
            account.name,
            status,
            answer["reason"],
            also,
            redact(request.headers, _LOOPS),  # type: ignore[arg-type]
            extra={"account": account.name, "status": "rejected"},
        )
        keep = BackgroundTask(
            anyio.to_thread.run_sync, receiver.record_refusal, account.id, status, answer["reason"]
        )
        return webhooks.JSONAnswer(answer, status, background=keep)
    return webhooks.JSONAnswer(answer, status)


async def _receive(
    receiver: Receiver, account: _Account, request: Request
) -> tuple[int, dict[str, Any]]:
    try:
        body = await webhooks.read_body(request, receiver.max_body_bytes)
        webhook_id = verify(body, request.headers, account.secrets)
        columns = parse(body)
        event_id, new = await anyio.to_thread.run_sync(
            receiver.store, account.id, webhook_id, columns, body
        )
    except webhooks.Refused as refused:
        return refused.status, refused.answer
    except Rejected as exc:
        return 400, {"status": "rejected", "reason": str(exc)}
    except ClientDisconnect:
        raise
    except Exception:  # never a 500: make Loops retry instead
        log.exception("Loops account %s: could not store a Loops webhook", account.name)
        return 503, _UNAVAILABLE
    if not new:
        reason = "this Loops account already received this event (same Webhook-Id)"
        return 200, {"status": "duplicate", "id": event_id, "reason": reason}
    metrics.loops_webhook_received(columns["event_name"])
    return 200, {"status": "stored", "id": event_id}


class _LoopsWebhooks(HTTPEndpoint):
    post = staticmethod(receive)

    async def method_not_allowed(self, request: Request) -> Response:
        return webhooks.JSONAnswer(_USE_POST, 405, headers={"allow": "POST"})


ROUTE = Route("/loops-webhooks/{token:path}", _LoopsWebhooks)
