"""Admin pages: the overview at ``/admin/``. Is the bridge keeping up, is any Loops account
near its rate limit or in trouble, and are webhooks being refused?

    GET  /    counts per status of the last 24 hours, the queue, dead deliveries of the last
              7 days, Loops accounts with a problem, each Loops account's pace, per
              endpoint the requests it refused in the last 24 hours with the latest reason,
              and the week as charts (below)

The week (issue 14), drawn as inline SVG made here and in the template (no script; its
colours are classes of admin.css, as the Content-Security-Policy allows no inline style):
per endpoint, the funnel of the provider events received in the last 7 days: received ->
delivered to Loops -> loop emails sent -> delivered, bounced (hard and soft), complained
(reported as spam), bounces and complaints in red (:func:`bridge.outcomes.read_week`); and
deliveries received and Loops calls made per hour over the week. Each chart has a
``<title>`` and its numbers in text beside it.

Every number is one bounded, indexed query. A count stops at ``COUNT_CAP`` (shown as
"100,000+"), so the page costs the same however busy the day was. Refused requests are few by
construction (an endpoint keeps its last ``REJECTIONS_KEPT``): they are counted as kept, "50+"
when an endpoint's whole log is of the last 24 hours. The pace of an account is read from
the Loops calls of the last minute: their number over 60 s, and the most calls in any
one-second window, against the rate limit in use for it (its own, or
``BRIDGE_LOOPS_RATE_LIMIT``, or the lower limit Loops reported; Loops allows 10 per second:
https://loops.so/docs/api-reference/intro#rate-limiting).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.engine import Connection as Db
from sqlalchemy.engine import Engine
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import providers
from bridge import outcomes
from bridge.admin.accounts import STATES, AccountView, read_accounts
from bridge.admin.formats import COUNT_CAP, ago, count, when
from bridge.admin.state import Admin
from bridge.inbox import REJECTIONS_KEPT
from bridge.models import DEAD, QUEUED, STATUSES, Delivery, Endpoint, LoopsCall, Rejection

__all__ = ["COUNT_CAP", "Overview", "read_overview"]

DAY = 24 * 3600.0
DEAD_DAYS = 7  # dead deliveries are counted by the week: they are 3 days old when they die
MINUTE = 60.0
_CALLS_READ = 60 * 100  # a minute of calls at ten times Loops' limit; more is not a pace


@dataclass(frozen=True, slots=True)
class Pace:
    """One Loops account's calls in the last minute."""

    name: str
    calls: int
    busiest: int  # most calls in any one-second window of that minute
    limit: int  # the rate limit in use for the account

    @property
    def per_second(self) -> float:
        return self.calls / MINUTE


@dataclass(frozen=True, slots=True)
class Rejected:
    """One endpoint's refused requests of the last 24 hours."""

    endpoint_id: str
    endpoint_name: str
    count: int  # at most REJECTIONS_KEPT: an endpoint keeps no more
    latest_at: float
    latest_reason: str


@dataclass(frozen=True, slots=True)
class Overview:
    counts: dict[str, int]  # status -> received in the last 24 h, at most COUNT_CAP + 1
    queued: int  # queued now, at most COUNT_CAP + 1
    oldest_queued: tuple[int, float] | None  # (delivery id, received_at)
    dead: int  # dead, received in the last DEAD_DAYS days, at most COUNT_CAP + 1
    troubled: list[AccountView]  # Loops accounts that are not healthy
    paces: list[Pace]
    rejected: list[Rejected]  # endpoints that refused requests in the last 24 h, latest first
    endpoints: int
    accounts: int
    week: outcomes.Week


# --- the week's charts: geometry in viewBox units -------------------------------------------

CHART_WIDTH = 360


@dataclass(frozen=True, slots=True)
class FunnelBar:
    label: str
    value: int
    width: float  # of the bar, at most FUNNEL_BAR
    y: float
    tone: str  # a class: "bar", or "bar-bad" for bounces and complaints


@dataclass(frozen=True, slots=True)
class FunnelChart:
    funnel: outcomes.Funnel
    bars: list[FunnelBar]
    height: float
    alarming: bool  # bounces or complaints: the endpoint's chart stands out


FUNNEL_LABEL = 128  # the labels' column
FUNNEL_BAR = 170  # the widest bar: the events received
FUNNEL_ROW = 24


def funnel_chart(funnel: outcomes.Funnel) -> FunnelChart:
    steps = [
        ("Received", funnel.received, "bar"),
        ("Delivered to Loops", funnel.delivered, "bar"),
        ("Emails sent", funnel.sent, "bar"),
        ("Delivered", funnel.email_delivered, "bar"),
        ("Bounced", funnel.bounced, "bar-bad" if funnel.bounced else "bar"),
        ("Complained", funnel.complained, "bar-bad" if funnel.complained else "bar"),
    ]
    top = max(value for _, value, _ in steps) or 1
    bars = [
        FunnelBar(label, value, FUNNEL_BAR * value / top, i * FUNNEL_ROW, tone)
        for i, (label, value, tone) in enumerate(steps)
    ]
    return FunnelChart(
        funnel, bars, len(bars) * FUNNEL_ROW, bool(funnel.bounced or funnel.complained)
    )


@dataclass(frozen=True, slots=True)
class HourBar:
    x: float
    deliveries: float  # bar height
    at: float  # the hour's start
    delivered: int
    calls: int


@dataclass(frozen=True, slots=True)
class HoursChart:
    bars: list[HourBar]
    calls_line: str  # the Loops calls, an SVG polyline's points
    top: int  # the y axis' top value
    days: list[tuple[float, float]] = field(default_factory=list)  # (x, start of the day)
    total_deliveries: int = 0
    total_calls: int = 0
    busiest: HourBar | None = None  # the hour with the most deliveries

    @property
    def step(self) -> float:
        return HOURS_PLOT / len(self.bars) if self.bars else 0


HOURS_LEFT = 34  # the y axis' labels
HOURS_PLOT = CHART_WIDTH - HOURS_LEFT - 4
HOURS_HEIGHT = 110  # of the plot; the day labels go below


def hours_chart(week: outcomes.Week) -> HoursChart:
    count = len(week.deliveries)
    top = max([*week.deliveries, *week.calls, 1])
    step = HOURS_PLOT / count

    def y(value: int) -> float:
        return HOURS_HEIGHT - HOURS_HEIGHT * value / top

    bars = [
        HourBar(
            HOURS_LEFT + i * step,
            HOURS_HEIGHT * delivered / top,
            week.since + i * outcomes.HOUR,
            delivered,
            calls,
        )
        for i, (delivered, calls) in enumerate(zip(week.deliveries, week.calls, strict=True))
    ]
    line = " ".join(
        f"{HOURS_LEFT + (i + 0.5) * step:.1f},{y(calls):.1f}" for i, calls in enumerate(week.calls)
    )
    days = [(bar.x, bar.at) for bar in bars if time.gmtime(bar.at).tm_hour == 0]
    busiest = max(bars, key=lambda b: b.delivered) if any(week.deliveries) else None
    return HoursChart(bars, line, top, days, sum(week.deliveries), sum(week.calls), busiest)


def _capped_count(db: Db, condition: ColumnElement[bool]) -> int:
    """How many deliveries match ``condition``, reading at most ``COUNT_CAP + 1`` of them."""
    capped = select(col(Delivery.id)).where(condition).limit(COUNT_CAP + 1).subquery()
    counted: int = db.execute(select(func.count()).select_from(capped)).scalar_one()
    return counted


def busiest_second(times: list[float]) -> int:
    """Most of the (sorted) ``times`` inside any window of one second."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def read_overview(engine: Engine, default_limit: int, now: float | None = None) -> Overview:
    """What the overview shows; ``default_limit`` is BRIDGE_LOOPS_RATE_LIMIT."""
    now = time.time() if now is None else now
    accounts = read_accounts(engine, queues=False)
    status, received_at = col(Delivery.status), col(Delivery.received_at)
    with engine.connect() as db:
        counts = {
            name: _capped_count(db, and_(status == name, received_at >= now - DAY))
            for name in STATUSES
        }
        queued = _capped_count(db, status == QUEUED)
        dead = _capped_count(db, and_(status == DEAD, received_at >= now - DEAD_DAYS * DAY))
        oldest = db.execute(
            select(col(Delivery.id), received_at)
            .where(status == QUEUED)
            .order_by(received_at)
            .limit(1)
        ).first()
        times: dict[int, list[float]] = {account.id: [] for account in accounts}
        started_at = col(LoopsCall.started_at)
        calls = db.execute(
            select(col(Endpoint.account_id), started_at)
            .join(Delivery, col(Delivery.id) == col(LoopsCall.delivery_id))
            .join(Endpoint, col(Endpoint.id) == col(Delivery.endpoint_id))
            .where(started_at >= now - MINUTE)
            .order_by(started_at)
            .limit(_CALLS_READ)
        )
        for account_id, at in calls:
            if account_id in times:  # not an account added since the names were read
                times[account_id].append(at)
        endpoints: int = db.execute(select(func.count()).select_from(Endpoint)).scalar_one()
        rejected = [Rejected(*row) for row in db.execute(_rejected_since(now - DAY))]
    return Overview(
        counts=counts,
        queued=queued,
        oldest_queued=(oldest.id, oldest.received_at) if oldest else None,
        dead=dead,
        troubled=[a for a in accounts if a.state(now) != "healthy"],
        paces=[
            Pace(
                a.name,
                len(times[a.id]),
                busiest_second(times[a.id]),
                a.rate_in_use(default_limit),
            )
            for a in accounts
        ],
        rejected=rejected,
        endpoints=endpoints,
        accounts=len(accounts),
        week=outcomes.read_week(engine, now),
    )


def _rejected_since(since: float) -> Select:
    """Per endpoint: its name, how many requests it refused since ``since``, and when and
    why the latest was refused; the endpoint refused latest first."""
    recent = (
        select(
            col(Rejection.endpoint_id),
            func.count().label("refused"),
            func.max(col(Rejection.id)).label("latest"),
        )
        .where(col(Rejection.at) >= since)
        .group_by(col(Rejection.endpoint_id))
        .subquery()
    )
    return (
        select(
            recent.c.endpoint_id,
            col(Endpoint.name),
            recent.c.refused,
            col(Rejection.at),
            col(Rejection.reason),
        )
        .join(Rejection, col(Rejection.id) == recent.c.latest)
        .join(Endpoint, col(Endpoint.id) == recent.c.endpoint_id)
        .order_by(col(Rejection.at).desc())
    )


async def overview(request: Request) -> Response:
    admin = Admin.of(request)
    now = time.time()
    seen = await admin.run(read_overview, admin.engine, admin.settings.loops_rate_limit, now)
    return admin.render(
        request,
        "overview.html",
        title="Overview",
        o=seen,
        funnels=[funnel_chart(f) for f in seen.week.funnels],
        hours=hours_chart(seen.week),
        chart_width=CHART_WIDTH,
        funnel_label=FUNNEL_LABEL,
        funnel_row=FUNNEL_ROW,
        hours_left=HOURS_LEFT,
        hours_height=HOURS_HEIGHT,
        day_label=lambda epoch: time.strftime("%a %d", time.gmtime(epoch)),
        provider_labels=[providers.get(name).label for name in providers.names()],
        statuses=STATUSES,
        dead_days=DEAD_DAYS,
        rejections_kept=REJECTIONS_KEPT,
        max_age=admin.settings.max_age_hours,
        states=STATES,
        now=now,
        count=count,
        when=when,
        ago=lambda epoch: ago(epoch, now),
    )


routes = [Route("/", overview, methods=["GET"])]
