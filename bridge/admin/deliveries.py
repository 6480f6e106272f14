"""Admin pages: the delivery log, and one delivery with every Loops call made for it.

    GET  /deliveries                    newest first; ?endpoint= &status= &event_type= &search=
    GET  /deliveries/{id}               the event, what the bridge decided, what Loops did
                                        with it after (bridge.outcomes: "successfulPayment
                                        sent 10:42 -> loop email ... sent 10:43 -> delivered"),
                                        its Loops calls (the first and the latest:
                                        bridge.admin.calls)
    POST /deliveries/{id}/retry         a failed or dead delivery: queue it again, now
    POST /deliveries/{id}/send-again    a delivered one: again, with a new idempotency key

A delivered or ignored event's payload is deleted after BRIDGE_RETENTION_DAYS; its page then
says so, and it can no longer be sent again. Retrying or sending one again keeps what it came
to before (``earlier_outcomes``, written by ``bridge.registry``); its page lists those
outcomes beside the current one.

The search box takes an email address (any case), an event id (Stripe's ``evt_...``), a
platform's user id (Clerk's ``user_...``), or part
of an address: the start of one, a name, a domain. An address or an event id that some
delivery has is looked up in an index; other text is matched against the addresses of the
rows a page reads (see below), as ``LIKE '%text%'``, which no index can answer.

The log pages with keysets, not offsets (https://use-the-index-luke.com/no-offset):
``?before=<id>`` shows the next older page, ``?after=<id>`` the next newer one. A page is a
range scan down one index that ends in ``id`` (see the indexes on
:class:`~bridge.models.Delivery`), reading at most ``PAGE_SIZE + 1`` rows, or at most
``SCAN_LIMIT`` index entries when filters are combined or the search is part of an address
(see :class:`_Walk`), plus one such walk of a single row towards the other direction. Nothing
counts the table or skips rows, so a page costs the same with a million deliveries as with a
hundred.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.engine import Connection as Db
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import providers
from bridge import outcomes, registry
from bridge.admin.accounts import STATES, AccountView, read_accounts
from bridge.admin.calls import Calls, read_calls
from bridge.admin.formats import ID_RANGE, ago, hours, int_or_none, pretty, row_id, when
from bridge.admin.state import Admin
from bridge.models import (
    DEAD,
    DELIVERED,
    IGNORED,
    QUEUED,
    STATUSES,
    Account,
    Delivery,
    Endpoint,
    LoopsCall,
)
from bridge.queue import loops_event_for

__all__ = ["PAGE_SIZE", "Filters", "Page", "list_deliveries"]

PAGE_SIZE = 50
SCAN_LIMIT = 5_000  # index entries a page reads at most through a window (see _Walk)


# --- reading ------------------------------------------------------------------------------


SOURCES = ("webhooks", "imports")


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filters, as read from the query string; empty means "any"."""

    endpoint: str = ""
    status: str = ""
    event_type: str = ""
    search: str = ""  # an email address, part of one, or an event id
    source: str = ""  # "webhooks" or "imports" (an import's, of existing customers)
    # What the URL asked that names nothing there is (a typo, an older version's link): the
    # page says so, and filters on the rest.
    ignored: tuple[str, ...] = ()

    @classmethod
    def read(cls, params: Mapping[str, str]) -> Filters:
        chosen, ignored = {}, []
        for name, names, known in (
            ("status", "statuses", STATUSES),
            ("source", "sources", SOURCES),
        ):
            value = params.get(name, "").strip()
            chosen[name] = value if value in known else ""
            if value and value not in known:
                ignored.append(f"{name} “{value[:40]}” ({names}: {', '.join(known)})")
        return cls(
            endpoint=params.get("endpoint", "").strip(),
            event_type=params.get("event_type", "").strip(),
            # ?email= is what the search was called before it took more than an address.
            search=(params.get("search") or params.get("email", "")).strip(),
            ignored=tuple(ignored),
            **chosen,
        )

    @property
    def active(self) -> bool:
        return any((self.endpoint, self.status, self.event_type, self.search, self.source))

    def conditions(
        self, db: Db
    ) -> tuple[list[ColumnElement[bool]], list[ColumnElement[bool]], str]:
        """The conditions an index answers, one per filter given, the usually rarest first;
        those that can only be checked on rows read; and what the search matched: ``address``,
        ``event``, ``user``, ``part`` (of an address) or ``""`` (no search)."""
        indexed: list[ColumnElement[bool]] = []
        checked: list[ColumnElement[bool]] = []
        matched = ""
        if self.search:
            matched, condition = _search(db, self.search)
            (checked if matched == "part" else indexed).append(condition)
        if self.event_type:
            indexed.append(col(Delivery.event_type) == self.event_type)
        if self.endpoint:
            indexed.append(col(Delivery.endpoint_id) == self.endpoint)
        if self.status:
            indexed.append(col(Delivery.status) == self.status)
        if self.source:  # no index of its own: checked on the rows a page reads
            checked.append(col(Delivery.backfill).is_(self.source == "imports"))
        return indexed, checked, matched

    def url(self, **page: int) -> str:
        """The list's URL with these filters (and ``before=`` or ``after=``)."""
        params: dict[str, Any] = {
            key: value
            for key, value in (
                ("endpoint", self.endpoint),
                ("status", self.status),
                ("event_type", self.event_type),
                ("search", self.search),
                ("source", self.source),
            )
            if value
        }
        query = urlencode(params | page)
        return "/admin/deliveries" + (f"?{query}" if query else "")


def _search(db: Db, text: str) -> tuple[str, ColumnElement[bool]]:
    """What the search ``text`` matches, and the condition: the address, in any case, when a
    delivery has it; else the event id, when one has it; else the platform's user id, when
    one has it; else part of an address."""
    email = func.lower(col(Delivery.email))
    address = email == func.lower(text)  # lower() on both sides, by the database: see the index
    if db.execute(select(_ID).where(address).limit(1)).first():
        return "address", address
    # The event id leads no index of its own: the (endpoint_id, event_id) one answers it for
    # each endpoint, and there are few endpoints.
    event = col(Delivery.endpoint_id).in_(select(col(Endpoint.id))) & (
        col(Delivery.event_id) == text
    )
    if db.execute(select(_ID).where(event).limit(1)).first():
        return "event", event
    user = col(Delivery.user_id) == text  # Clerk's or Supabase's: a deletion has no email
    if db.execute(select(_ID).where(user).limit(1)).first():
        return "user", user
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return "part", email.like(func.lower(f"%{escaped}%"), escape="/")


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    received_at: float
    status: str
    event_type: str
    email: str | None
    endpoint_id: str
    reason: str | None
    user_id: str | None  # shown where there is no email (a Clerk or Supabase deletion)
    backfill: bool  # made by an import of existing customers, not by a webhook


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    newer: int | None  # ?after= of the "Newer" link; None: nothing newer
    older: int | None  # ?before= of the "Older" link; None: nothing older
    partial: bool = False  # the search stopped at SCAN_LIMIT entries before the page filled
    matched: str = ""  # what the search matched: see Filters.conditions


_ID = col(Delivery.id)
_ROW = (
    _ID,
    col(Delivery.received_at),
    col(Delivery.status),
    col(Delivery.event_type),
    col(Delivery.email),
    col(Delivery.endpoint_id),
    col(Delivery.reason),
    col(Delivery.user_id),
    col(Delivery.backfill),
)


def list_deliveries(
    engine: Engine,
    filters: Filters,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
    scan_limit: int = SCAN_LIMIT,
) -> Page:
    """One page of the log, newest first: the ``size`` deliveries just older than ``before``,
    or just newer than ``after``, or the newest ones; ``scan_limit``: see :class:`_Walk`."""
    backwards = after is not None  # towards newer deliveries: walk up, show reversed
    bound: ColumnElement[bool] | None = None
    if after is not None:
        bound = _ID > after
    elif before is not None:
        bound = _ID < before
    with engine.connect() as conn:
        indexed, checked, matched = filters.conditions(conn)
        walk = _Walk(conn, indexed, scan_limit, checked)
        found, stopped = walk(bound, backwards, size + 1)
        rows = found[:size]
        further = rows[-1].id if len(found) > size else stopped
        partial = stopped is not None
        if backwards:
            rows.reverse()
        # Whether there is anything the other way: one more bounded walk from this page's edge.
        if after is not None:
            edge = rows[-1].id if rows else after + 1
            back, back_stopped = walk(_ID < edge, False, 1)
            older = edge if back or back_stopped else None
            return Page(rows, further, older, partial, matched)
        if before is None:
            return Page(rows, None, further, partial, matched)
        edge = rows[0].id if rows else before - 1
        ahead, ahead_stopped = walk(_ID > edge, True, 1)
        newer = edge if ahead or ahead_stopped else None
        return Page(rows, newer, further, partial, matched)


class _Walk:
    """Reads matching deliveries in id order from one index, never more than ``limit``
    (``SCAN_LIMIT``) entries of it per call.

    With one filter (or none) its index, which ends in ``id``, answers alone: the walk stops
    after ``size`` rows. With several, a single-column index cannot: walking the status index
    for "failed" rows of one rare endpoint could read a million entries to find none. So the
    walk follows the index of the rarest filter (the fewest rows, counted up to
    ``SCAN_LIMIT``) through a window of at most ``SCAN_LIMIT`` entries and checks the other
    filters on those rows; a page that the window could not fill says where it stopped, and
    the next page goes on from there. Pages may then hold fewer rows, never cost more.
    Conditions no index answers (``checked``: part of an address) are only ever checked that
    way, in a window of the rarest indexed filter or, without one, of the newest deliveries.
    """

    def __init__(
        self,
        conn: Db,
        conditions: list[ColumnElement[bool]],
        limit: int = SCAN_LIMIT,
        checked: list[ColumnElement[bool]] | None = None,
    ) -> None:
        self._conn = conn
        self._limit = limit
        self._driving = conditions
        self._others = list(checked or ())
        if len(conditions) > 1:
            rarest = min(conditions, key=self._count_up_to_limit)  # first one wins a tie
            self._driving = [rarest]
            self._others += [c for c in conditions if c is not rarest]

    def _count_up_to_limit(self, condition: ColumnElement[bool]) -> int:
        window = select(_ID).where(condition).limit(self._limit).subquery()
        counted: int = self._conn.execute(select(func.count()).select_from(window)).scalar_one()
        return counted

    def __call__(
        self, bound: ColumnElement[bool] | None, upwards: bool, size: int
    ) -> tuple[list[Row], int | None]:
        """Up to ``size`` rows within ``bound``, nearest first; and the id the walk stopped
        at, when its window ran out before ``size`` rows matched."""
        order = _ID.asc() if upwards else _ID.desc()
        within = [*self._driving, *([bound] if bound is not None else [])]
        if not self._others:
            query = select(*_ROW).where(*within).order_by(order).limit(size)
            return [Row(**row._asdict()) for row in self._conn.execute(query)], None
        window = select(_ID).where(*within).order_by(order).limit(self._limit).subquery()
        query = (
            select(*_ROW)
            .join(window, window.c.id == _ID)
            .where(*self._others)
            .order_by(order)
            .limit(size)
        )
        rows = [Row(**row._asdict()) for row in self._conn.execute(query)]
        if len(rows) == size:
            return rows, None
        last = func.max(window.c.id) if upwards else func.min(window.c.id)
        read, stopped = self._conn.execute(select(func.count(), last)).one()
        return rows, stopped if read == self._limit else None


def _endpoint_names(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(col(Endpoint.id), col(Endpoint.name)).order_by(Endpoint.name))
        return {row.id: row.name for row in rows}


@dataclass(frozen=True, slots=True)
class Detail:
    delivery: Delivery
    provider: str  # its label: "Stripe"
    endpoint_name: str | None
    endpoint_paused: bool
    account_name: str | None
    account_id: int | None
    account: AccountView | None  # its Loops account's state, for a delivery still queued
    calls: Calls
    details: providers.Details | None  # names and Loops properties read from the payload
    outcome: Outcome
    loops_event: str | None  # what its endpoint sends to Loops for it (none for a deletion)
    on_delete: str  # what its endpoint does with a deletion: delete, unsubscribe or ignore


def _detail(engine: Engine, delivery_id: int) -> Detail | None:
    with Session(engine) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            return None
        endpoint = session.get(Endpoint, delivery.endpoint_id)
        account = session.get(Account, endpoint.account_id) if endpoint else None
        return Detail(
            delivery=delivery,
            provider=providers.get(endpoint.provider).label if endpoint else "provider",
            endpoint_name=endpoint.name if endpoint else None,
            endpoint_paused=bool(endpoint and endpoint.paused),
            account_name=account.name if account else None,
            account_id=account.id if account else None,
            account=(
                next(iter(read_accounts(engine, account.id, queues=False)), None)  # type: ignore[arg-type]
                if account and delivery.status == QUEUED
                else None
            ),
            calls=read_calls(session, delivery_id),
            details=_read_details(endpoint, delivery.payload),
            outcome=_outcome(session.connection(), delivery_id),
            loops_event=(
                loops_event_for(delivery.event_type, endpoint.loops_events, endpoint.loops_event)
                if endpoint and not delivery.deletion and not delivery.backfill
                else None
            ),
            on_delete=endpoint.on_delete if endpoint else "ignore",
        )


# --- after Loops --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One link of a delivery's chain after Loops: "loop email “Receipt” sent 10:43"."""

    label: str
    at: float
    tone: str = ""  # "bad": bounced or reported as spam; "warn": soft bounced


@dataclass(frozen=True, slots=True)
class Outcome:
    steps: list[Step]  # the Loops event sent, then what Loops reported, oldest first
    reported: list[outcomes.Reported]
    alerts: list[str]  # what stands out: "hard bounced: the contact is now unsubscribed"

    @property
    def emailed(self) -> bool:
        return any(r.event == outcomes.LOOP_EMAIL_SENT for r in self.reported)


REPORT_LABELS = {
    "email.delivered": ("delivered", ""),
    "email.softBounced": ("soft bounced", "warn"),
    "email.hardBounced": ("hard bounced", "bad"),
    "email.opened": ("opened", ""),
    "email.clicked": ("clicked", ""),
    "email.unsubscribed": ("unsubscribed", "warn"),
    "email.resubscribed": ("resubscribed", ""),
    "email.spamReported": ("reported as spam", "bad"),
}
REPORT_ALERTS = {
    "email.hardBounced": "hard bounced: the address does not take email, and the contact is "
    "now unsubscribed in Loops",
    "email.spamReported": "reported as spam by the contact: Loops stops sending to them",
    "email.softBounced": "soft bounced: the address refused it for now (a full mailbox, a "
    "server down)",
    "email.unsubscribed": "the contact unsubscribed from this email",
}


def said(event: str, title: str | None = None) -> tuple[str, str]:
    """What a Loops event says, and how it stands out ("bad", "warn" or ""): "loop email
    “Receipt” sent" (``title``: the email's subject or its loop's name), "hard bounced"."""
    if event in outcomes.SENT_EVENTS:
        kind = event.split(".")[0]
        return (f"{kind} email “{title}” sent" if title else f"{kind} email sent"), ""
    return REPORT_LABELS.get(event, (event, ""))


def _outcome(conn: Db, delivery_id: int) -> Outcome:
    """The Loops event the delivery sent and what Loops reported of the email it started."""
    sent = conn.execute(
        select(col(LoopsCall.started_at), col(LoopsCall.request_body))
        .where(
            col(LoopsCall.delivery_id) == delivery_id,
            col(LoopsCall.path) == outcomes.EVENTS_SEND,
            col(LoopsCall.status_code).between(200, 299),
        )
        .order_by(col(LoopsCall.started_at))
    ).all()
    reported = outcomes.reported(conn, delivery_id)
    steps: list[Step] = []
    if sent:
        # The send the loop email followed (a delivery sent again has several).
        email_at = next((r.at for r in reported if r.event == outcomes.LOOP_EMAIL_SENT), None)
        latest = email_at + outcomes.CLOCK_SLACK if email_at is not None else None
        before = [c for c in sent if latest is None or c.started_at <= latest]
        at, body = (before or sent)[-1]
        steps.append(Step(f"{outcomes.event_name_sent(body) or 'event'} sent", at))
    for report in reported:
        label, tone = said(report.event, report.subject or report.source_name)
        steps.append(Step(label, report.at, tone))
    alerts = [REPORT_ALERTS[r.event] for r in reported if r.event in REPORT_ALERTS]
    return Outcome(steps, reported, list(dict.fromkeys(alerts)))


def clock(epoch: float, since: float | None = None) -> str:
    """A chain's time: ``10:42`` (UTC), with the date when it is not the day of ``since``."""
    day = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    hour = time.strftime("%H:%M", time.gmtime(epoch))
    if since is not None and time.strftime("%Y-%m-%d", time.gmtime(since)) == day:
        return hour
    return f"{day}\u00a0{hour}"


def _read_details(endpoint: Endpoint | None, payload: bytes | None) -> providers.Details | None:
    if endpoint is None or not payload:
        return None
    try:
        return providers.get(endpoint.provider).details(payload)
    except providers.Rejected:
        return None


def _exists(engine: Engine, delivery_id: int) -> bool:
    with engine.connect() as conn:
        query = select(_ID).where(_ID == delivery_id)
        return conn.execute(query).first() is not None


# --- the pages ----------------------------------------------------------------------------


_KNOWN_TYPES = sorted({t for name in providers.names() for t in providers.get(name).event_types})


def _not_found(request: Request) -> Response:
    message = f"There is no delivery {request.path_params['delivery_id']}."
    return Admin.of(request).error(request, 404, "Not found", message)


async def index(request: Request) -> Response:
    admin = Admin.of(request)
    filters = Filters.read(request.query_params)
    before = int_or_none(request.query_params.get("before"))
    after = int_or_none(request.query_params.get("after"))
    if any(bound is not None and bound not in ID_RANGE for bound in (before, after)):
        return admin.error(
            request,
            400,
            "No such page of the log",
            f"?before= and ?after= take a delivery id, and ids go from 1 to {ID_RANGE[-1]:,}. "
            "Follow the Newer and Older links, or open Deliveries for the newest ones.",
        )
    page = await admin.run(
        lambda: list_deliveries(admin.engine, filters, before=before, after=after)
    )
    names = await admin.run(_endpoint_names, admin.engine)
    return admin.render(
        request,
        "deliveries/list.html",
        title="Deliveries",
        page=page,
        filters=filters,
        paged=before is not None or after is not None,
        scan_limit=SCAN_LIMIT,
        endpoints=names,
        statuses=STATUSES,
        event_types=_KNOWN_TYPES,
        when=when,
    )


async def show(request: Request) -> Response:
    admin = Admin.of(request)
    delivery_id = row_id(request.path_params["delivery_id"])
    detail = await admin.run(_detail, admin.engine, delivery_id) if delivery_id else None
    if detail is None:
        return _not_found(request)
    delivery = detail.delivery
    settings, now = admin.settings, time.time()
    tried = (
        delivery.finished_at - delivery.queued_at
        if delivery.finished_at and delivery.queued_at
        else settings.max_age_hours * 3600
    )
    return admin.render(
        request,
        "deliveries/show.html",
        title=f"Delivery {delivery.id}",
        d=delivery,
        detail=detail,
        queued=delivery.status == QUEUED,
        dead=delivery.status == DEAD,
        tried=hours(tried),
        max_age=hours(settings.max_age_hours * 3600),
        gives_up=(delivery.queued_at or now) + settings.max_age_hours * 3600,
        pruned=delivery.payload is None and delivery.status in (DELIVERED, IGNORED),
        retention_days=f"{settings.retention_days:g}",
        states=STATES,
        earlier=(delivery.earlier_outcomes or "").splitlines(),  # oldest first
        payload=pretty(delivery.payload),
        properties=json.dumps(detail.details.properties, indent=2) if detail.details else None,
        pretty=pretty,
        when=when,
        ago=ago,
        clock=clock,
        iso=outcomes.iso,
        window=hours(outcomes.WINDOW),
        now=now,
    )


_KEPT = "What it came to before is kept on this page, under “Earlier outcomes”."


async def retry(request: Request) -> Response:
    return await _requeue(
        request,
        registry.retry_delivery,
        "Delivery {} is queued again: the worker sends it within about a second. " + _KEPT,
    )


async def send_again(request: Request) -> Response:
    return await _requeue(
        request,
        registry.send_again,
        "Delivery {} is queued to be sent again, with a new idempotency key: Loops runs its "
        "workflow again. " + _KEPT,
    )


async def _requeue(request: Request, change: Callable[[Engine, int], None], done: str) -> Response:
    """Queue the delivery again through ``change``; back to its page, saying ``done`` (with
    the delivery's id for ``{}``) or why not."""
    admin = Admin.of(request)
    delivery_id = row_id(request.path_params["delivery_id"])
    if not delivery_id or not await admin.run(_exists, admin.engine, delivery_id):
        return _not_found(request)
    try:
        await admin.run(change, admin.engine, delivery_id)
    except registry.Invalid as exc:
        done = str(exc)
    else:
        done = done.format(delivery_id)
    return admin.redirect(f"/admin/deliveries/{delivery_id}", done)


routes = [
    Route("/deliveries", index, methods=["GET"]),
    Route("/deliveries/{delivery_id}", show, methods=["GET"]),
    Route("/deliveries/{delivery_id}/retry", retry, methods=["POST"]),
    Route("/deliveries/{delivery_id}/send-again", send_again, methods=["POST"]),
]
