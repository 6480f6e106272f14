"""What became of a delivery after Loops took it: Loops' own webhooks joined to the bridge's
deliveries (issue 14).

Loops reports each email it sends (``loop.email.sent``...) and what happened to it
(``email.delivered``, bounces, opens, spam reports...), but not which event started the loop
that sent it. So the join is by contact and time. :func:`link` runs in the transaction that
stores each :class:`~bridge.models.LoopsEvent` (bridge/loops_webhooks.py) and sets its
``delivery_id`` where it can be told::

    loop.email.sent    the delivery whose Loops event (POST /events/send, answered 2xx) went
                       to the same contact (same Loops account; same email in any case, or
                       same userId) most recently before the email was sent, at most
                       WINDOW before it (CLOCK_SLACK after it), that has no loop email yet:
                       "the first loop email sent to that contact after the delivery"
    email.*            the delivery of the *.email.sent with the same email id (or, without
                       one, the same emailMessageId to the same contact); one that arrives
                       before its sent event is linked when the sent event arrives
    contact.*, campaign and transactional emails: not linked (the bridge sends neither);
                       they are the contact's timeline (:func:`timeline`)

WINDOW is 25 hours. A loop that starts with an email sends it within seconds to minutes of
the event; one that starts with a timer sends it after the timer, and Loops' timers are set
in minutes, hours or days, "wait 1 day" being the usual first one (a grace period before a
payment reminder). 25 hours covers that day and Loops' queue behind it. Longer is not better:
the link is a guess by contact and time, and an event that starts no loop in Loops would take
the next unrelated email of that contact (a newsletter loop's, days later) as its own. Each
delivery takes one email at most, the most recent delivery first, so two events in a row each
get their own email. An email that comes later than the window stays unlinked: it is still on
the contact's timeline.

Each event costs a few indexed reads: the deliveries of the contact (the email index of
``deliveries``), their Loops calls (by delivery), the loop email already linked to each (by
delivery), or the sent event of an email (``account_id, email_id``). Loops sends at most 10
events a second per account.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from bridge.models import DELIVERED, STATUSES, Account, Delivery, Endpoint, LoopsCall, LoopsEvent

__all__ = [
    "CLOCK_SLACK",
    "EMAIL_EVENTS",
    "EVENTS_SEND",
    "LOOP_EMAIL_SENT",
    "SENT_EVENTS",
    "WINDOW",
    "Entry",
    "Funnel",
    "Reported",
    "for_delivery",
    "link",
    "read_week",
    "reported",
    "timeline",
]

WINDOW = 25 * 3600.0  # a loop email links to a delivery at most this long after its event
# Loops' eventTime is whole seconds, by Loops' clock: an email may seem to be sent up to this
# long before the bridge's call that caused it.
CLOCK_SLACK = 5.0
LOOP_EMAIL_SENT = "loop.email.sent"
SENT_EVENTS = ("campaign.email.sent", LOOP_EMAIL_SENT, "transactional.email.sent")
EMAIL_EVENTS = (
    "email.delivered",
    "email.softBounced",
    "email.hardBounced",
    "email.opened",
    "email.clicked",
    "email.unsubscribed",
    "email.resubscribed",
    "email.spamReported",
)
EVENTS_SEND = "/events/send"
TIMELINE_LIMIT = 500  # of each kind (deliveries, Loops calls, Loops reports) on a timeline

_T = LoopsEvent.__table__  # type: ignore[attr-defined]
_E = _T.c


# --- the join -----------------------------------------------------------------------------


def link(conn: sa.Connection, event_id: int, window: float = WINDOW) -> None:
    """Set ``delivery_id`` of the stored Loops event ``event_id`` where the delivery behind it
    can be told (see the module's docstring); in the caller's transaction."""
    event = conn.execute(sa.select(_T).where(_E.id == event_id)).first()
    if event is None or event.delivery_id is not None:
        return
    if event.event_name == LOOP_EMAIL_SENT:
        delivery_id = _cause(conn, event, window)
        if delivery_id is None:
            return
        # With its email's events that came first (out of order).
        ids = [event_id] + [
            row.id
            for row in _email_events(conn, event)
            if row.event_name in EMAIL_EVENTS and row.delivery_id is None
        ]
        conn.execute(sa.update(_T).where(_E.id.in_(ids)).values(delivery_id=delivery_id))
    elif event.event_name in EMAIL_EVENTS:
        sent = [r for r in _email_events(conn, event) if r.event_name in SENT_EVENTS]
        if sent and sent[-1].delivery_id is not None:
            conn.execute(
                sa.update(_T).where(_E.id == event_id).values(delivery_id=sent[-1].delivery_id)
            )


def _email_events(conn: sa.Connection, event: Any) -> list[Any]:
    """The stored events of the same email as ``event``, oldest first. Only the email is a
    condition: one on event_name or on an empty delivery_id would draw SQLite to the index
    of every such event there is, rather than to this email's few."""
    return list(
        conn.execute(
            sa.select(_E.id, _E.event_name, _E.delivery_id)
            .where(_same_email(event))
            .order_by(_E.event_time, _E.id)
        )
    )


def _same_email(event: Any) -> sa.ColumnElement[bool]:
    """The events of the same email as ``event``: the same email id; without one, the same
    emailMessageId sent to the same contact (a message id alone is shared by every contact a
    campaign goes to)."""
    if event.email_id:
        return sa.and_(_E.account_id == event.account_id, _E.email_id == event.email_id)
    if event.email_message_id and event.email:
        return sa.and_(
            _E.account_id == event.account_id,
            _E.email == event.email,
            _E.email_id.is_(None),
            _E.email_message_id == event.email_message_id,
        )
    return sa.false()


def _cause(conn: sa.Connection, event: Any, window: float) -> int | None:
    """The delivery whose Loops event most likely started the loop that sent ``event``."""
    who: list[sa.ColumnElement[bool]] = []
    if event.email:
        who.append(sa.func.lower(col(Delivery.email)) == event.email.lower())
    if event.user_id:
        who.append(col(Delivery.user_id) == event.user_id)
    sends: list[tuple[float, int]] = []
    for contact in who:  # one query each: an OR would not use the email index
        found = conn.execute(
            sa.select(col(LoopsCall.started_at), col(Delivery.id), col(Delivery.status))
            .join(Delivery, col(Delivery.id) == col(LoopsCall.delivery_id))
            .join(Endpoint, col(Endpoint.id) == col(Delivery.endpoint_id))
            .where(
                contact,
                col(Endpoint.account_id) == event.account_id,
                col(LoopsCall.path) == EVENTS_SEND,
                col(LoopsCall.status_code).between(200, 299),
                col(LoopsCall.started_at).between(
                    event.event_time - window, event.event_time + CLOCK_SLACK
                ),
            )
            .order_by(col(LoopsCall.started_at).desc())
            .limit(_CANDIDATES)
        )
        # The status is checked here: as a condition, it draws SQLite to the index of every
        # delivered delivery rather than the contact's.
        sends += [(at, d) for at, d, status in found if status == DELIVERED]
    candidates = list(dict.fromkeys(d for _, d in sorted(sends, reverse=True)))
    if not candidates:
        return None
    # Read by delivery only: a condition on event_name would draw SQLite to the index of
    # every loop email there is.
    taken = {
        row.delivery_id
        for row in conn.execute(
            sa.select(_E.delivery_id, _E.event_name).where(_E.delivery_id.in_(candidates))
        )
        if row.event_name == LOOP_EMAIL_SENT
    }
    return next((d for d in candidates if d not in taken), None)


_CANDIDATES = 50  # a contact's Loops events in one window, at most, that an email may follow


# --- what Loops reported ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reported:
    """One event Loops reported, as the pages and the CLI show it."""

    id: int
    event: str  # Loops' eventName: "email.delivered"
    at: int  # Loops' eventTime, unix seconds
    email: str | None
    source_type: str | None  # campaign | loop | transactional
    source_name: str | None  # the loop's (campaign's...) name, where Loops gave it
    subject: str | None
    email_id: str | None
    delivery_id: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "time": iso(self.at),
            "subject": self.subject,
            "source_type": self.source_type,
            "source_name": self.source_name,
            "email_id": self.email_id,
        }


_REPORTED = (
    _E.id,
    _E.event_name.label("event"),
    _E.event_time.label("at"),
    _E.email,
    _E.source_type,
    _E.source_name,
    _E.subject,
    _E.email_id,
    _E.delivery_id,
)


def iso(epoch: float) -> str:
    """ISO 8601, UTC, as the CLI writes every time: ``2026-12-03T10:42:07Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reported(conn: sa.Connection, delivery_id: int) -> list[Reported]:
    """What Loops reported about the email a delivery caused, oldest first."""
    rows = conn.execute(
        sa.select(*_REPORTED)
        .where(_E.delivery_id == delivery_id)
        .order_by(_E.event_time, _E.id)
        .limit(TIMELINE_LIMIT)
    )
    return [Reported(**row._asdict()) for row in rows]


def for_delivery(engine: Engine, delivery_id: int) -> list[dict[str, Any]]:
    """``loops_events`` of ``loops-bridge deliveries show ID --json``: what Loops reported
    after the delivery, oldest first; each with ``event`` (eventName) and ``time`` (ISO 8601),
    and the email's ``subject`` and its loop (``source_name``) where Loops gave them."""
    with engine.connect() as conn:
        return [r.as_json() for r in reported(conn, delivery_id)]


# --- a contact's timeline -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a contact's timeline."""

    at: float
    kind: str  # "delivery" (a provider event received), "call" (to Loops), "loops" (reported)
    what: str  # the provider's event type, "POST /events/send", or Loops' eventName
    delivery_id: int | None
    status: str | None = None  # a delivery's status
    code: int | None = None  # a call's HTTP status (None: no answer)
    detail: str | None = None  # the reason, the Loops event name sent, the email's subject
    account_id: int | None = None
    report: Reported | None = None


def timeline(engine: Engine, who: str, account_id: int | None = None) -> list[Entry]:
    """What the bridge sent for the contact ``who``, an email address (any case) or else the
    platform's user id (Clerk's, Supabase's): its deliveries and the Loops calls Loops took
    (answered 2xx), and everything Loops reported about it, oldest first: deliveries, their
    Loops calls, Loops' events. Only in one Loops account when ``account_id`` is given. The
    latest ``TIMELINE_LIMIT`` of each kind."""
    address = who.strip().lower()
    by_email = "@" in address
    delivered_to = (
        sa.func.lower(col(Delivery.email)) == address
        if by_email
        else col(Delivery.user_id) == who.strip()
    )
    reported_of = _E.email == address if by_email else _E.user_id == who.strip()
    entries: list[Entry] = []
    with engine.connect() as conn:
        deliveries = sa.select(
            col(Delivery.id),
            col(Delivery.received_at),
            col(Delivery.event_type),
            col(Delivery.status),
            col(Delivery.reason),
            col(Endpoint.account_id),
        ).join(Endpoint, col(Endpoint.id) == col(Delivery.endpoint_id))
        deliveries = deliveries.where(delivered_to)
        if account_id is not None:
            deliveries = deliveries.where(col(Endpoint.account_id) == account_id)
        rows = conn.execute(deliveries.order_by(col(Delivery.id).desc()).limit(TIMELINE_LIMIT))
        ids = []
        for row in rows:
            ids.append(row.id)
            entries.append(
                Entry(
                    row.received_at,
                    "delivery",
                    row.event_type,
                    row.id,
                    status=row.status,
                    detail=row.reason,
                    account_id=row.account_id,
                )
            )
        if ids:
            calls = conn.execute(
                sa.select(
                    col(LoopsCall.delivery_id),
                    col(LoopsCall.started_at),
                    col(LoopsCall.method),
                    col(LoopsCall.path),
                    col(LoopsCall.status_code),
                    col(LoopsCall.request_body),
                )
                .where(
                    col(LoopsCall.delivery_id).in_(ids),
                    # What Loops took: failed tries (a refused key retries for days) are on
                    # the delivery's page.
                    col(LoopsCall.status_code).between(200, 299),
                )
                .order_by(col(LoopsCall.id).desc())
                .limit(TIMELINE_LIMIT)
            )
            for call in calls:
                entries.append(
                    Entry(
                        call.started_at,
                        "call",
                        f"{call.method} {call.path}",
                        call.delivery_id,
                        code=call.status_code,
                        detail=event_name_sent(call.request_body),
                    )
                )
        # By the contact index; without an account, each account's part of it in turn.
        accounts = [account_id] if account_id is not None else sa.select(col(Account.id))
        found = conn.execute(
            sa.select(*_REPORTED, _E.account_id)
            .where(_E.account_id.in_(accounts), reported_of)
            .order_by(_E.event_time.desc(), _E.id.desc())
            .limit(TIMELINE_LIMIT)
        )
        seen = set()
        for row in found:
            values = row._asdict()
            account = values.pop("account_id")
            report = Reported(**values)
            seen.add(report.id)
            entries.append(_report_entry(report, account))
        if ids:  # an email linked to these deliveries though sent to another address since
            linked = conn.execute(
                sa.select(*_REPORTED, _E.account_id)
                .where(_E.delivery_id.in_(ids))
                .limit(TIMELINE_LIMIT)
            )
            for row in linked:
                values = row._asdict()
                account = values.pop("account_id")
                if values["id"] not in seen:
                    entries.append(_report_entry(Reported(**values), account))
    entries.sort(key=_in_order)
    return entries


# Loops' times are whole seconds, the bridge's are not: within one second, what happened
# happened in this order (a provider event, the bridge's calls, the email sent, what became
# of it, and what that did to the contact), whatever the fractions say.
_KINDS = {"delivery": 0, "call": 1, "loops": 2}
_LOOPS_ORDER = {
    **dict.fromkeys(SENT_EVENTS, 0),
    "email.delivered": 1,
    "email.opened": 2,
    "email.clicked": 3,
    "email.softBounced": 4,
    "email.hardBounced": 4,
    "email.spamReported": 5,
    "email.unsubscribed": 6,
    "email.resubscribed": 7,
}


def _in_order(entry: Entry) -> tuple[int, int, int, float]:
    then = _LOOPS_ORDER.get(entry.what, 8) if entry.kind == "loops" else 0
    return (math.floor(entry.at), _KINDS[entry.kind], then, entry.at)


def _report_entry(report: Reported, account_id: int) -> Entry:
    return Entry(
        report.at,
        "loops",
        report.event,
        report.delivery_id,
        detail=report.subject,
        account_id=account_id,
        report=report,
    )


def event_name_sent(request_body: str) -> str | None:
    """The ``eventName`` of a Loops call's request body, if it has one."""
    try:
        body = json.loads(request_body)
    except ValueError:
        return None
    name = body.get("eventName") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None


# --- the week, per endpoint ---------------------------------------------------------------

HOUR = 3600.0
WEEK_DAYS = 7


@dataclass(frozen=True, slots=True)
class Funnel:
    """One endpoint's last 7 days, each step from the deliveries received in them.

    received: provider events accepted, whatever became of them (an import's deliveries are
    no provider events: not counted); delivered: of those, delivered to Loops; sent: loop
    emails linked to them; then what Loops reported of those emails."""

    endpoint_id: str
    endpoint_name: str
    received: int = 0
    delivered: int = 0
    sent: int = 0
    email_delivered: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complained: int = 0  # email.spamReported

    @property
    def bounced(self) -> int:
        return self.hard_bounced + self.soft_bounced


_FUNNEL_EVENTS = {
    LOOP_EMAIL_SENT: "sent",
    "email.delivered": "email_delivered",
    "email.hardBounced": "hard_bounced",
    "email.softBounced": "soft_bounced",
    "email.spamReported": "complained",
}


@dataclass(frozen=True, slots=True)
class Week:
    since: float  # the start of the first hour shown
    funnels: list[Funnel]  # per endpoint, by name
    deliveries: list[int]  # received per hour, oldest first (7 * 24 hours)
    calls: list[int]  # Loops calls made per hour


def read_week(engine: Engine, now: float) -> Week:
    """The overview's week: each endpoint's :class:`Funnel` and the hourly counts.

    One pass over the week's deliveries (by id from the first of the week: ids grow with
    time received) counts them per endpoint, status and hour; one over the week's Loops calls
    (their time index) per hour; one over the week's loop emails and their events (the
    ``event_name, received_at`` index), joined to their deliveries."""
    hours = WEEK_DAYS * 24
    since = (now // HOUR + 1 - hours) * HOUR  # whole hours, the current one last
    counts: dict[str, dict[str, int]] = {}
    deliveries, calls = [0] * hours, [0] * hours
    received_at = col(Delivery.received_at)
    with engine.connect() as conn:
        names = dict(conn.execute(sa.select(col(Endpoint.id), col(Endpoint.name))).all())
        first = _first_id_since(conn, since)
        if first is not None:
            hour = _hour(conn, received_at, since)
            backfill = col(Delivery.backfill)
            rows = conn.execute(
                sa.select(
                    col(Delivery.endpoint_id), col(Delivery.status), backfill, hour, sa.func.count()
                )
                .where(col(Delivery.id) >= first, received_at >= since)
                .group_by(col(Delivery.endpoint_id), col(Delivery.status), backfill, hour)
            )
            for endpoint_id, status, imported, at, number in rows:
                if 0 <= at < hours:
                    deliveries[at] += number
                if imported:  # an import's deliveries are no provider events: not in a funnel
                    continue
                step = counts.setdefault(endpoint_id, {})
                step["received"] = step.get("received", 0) + number
                if status == DELIVERED:
                    step["delivered"] = step.get("delivered", 0) + number
            emails = conn.execute(
                sa.select(col(Delivery.endpoint_id), _E.event_name, sa.func.count())
                .join(Delivery, col(Delivery.id) == _E.delivery_id)
                .where(
                    _E.event_name.in_(_FUNNEL_EVENTS),
                    _E.received_at >= since,
                    col(Delivery.id) >= first,
                    received_at >= since,
                )
                .group_by(col(Delivery.endpoint_id), _E.event_name)
            )
            for endpoint_id, event_name, number in emails:
                step = counts.setdefault(endpoint_id, {})
                step[_FUNNEL_EVENTS[event_name]] = number
        started_at = col(LoopsCall.started_at)
        hour = _hour(conn, started_at, since)
        for at, number in conn.execute(
            sa.select(hour, sa.func.count()).where(started_at >= since).group_by(hour)
        ):
            if 0 <= at < hours:
                calls[at] += number
    funnels = [
        Funnel(endpoint_id, name, **counts.get(endpoint_id, {}))
        for endpoint_id, name in sorted(names.items(), key=lambda item: (item[1], item[0]))
    ]
    return Week(since, funnels, deliveries, calls)


def _first_id_since(conn: sa.Connection, since: float) -> int | None:
    """The lowest id of the deliveries received since ``since``: one short walk of the
    ``status, received_at`` index per status."""
    firsts = []
    for status in STATUSES:
        row = conn.execute(
            sa.select(col(Delivery.id))
            .where(col(Delivery.status) == status, col(Delivery.received_at) >= since)
            .order_by(col(Delivery.received_at))
            .limit(1)
        ).first()
        if row is not None:
            firsts.append(row.id)
    return min(firsts, default=None)


def _hour(conn: sa.Connection, column: Any, since: float) -> Any:
    """The hour of the week ``column`` falls in, 0 first: floor((column - since) / 3600).
    SQLite's CAST truncates (times since ``since`` are not negative); PostgreSQL's rounds."""
    offset = (column - since) / HOUR
    if conn.dialect.name == "postgresql":
        offset = sa.func.floor(offset)
    return sa.cast(offset, sa.Integer).label("hour")
