"""Prometheus metrics: ``GET /metrics`` on the web app, its own port on ``loops-bridge worker``.

Two kinds, told apart by where they live::

    counted in this process, as it happens
      loops_bridge_webhooks_total{outcome}        every answer to POST /webhooks/...
      loops_bridge_loops_calls_total{status}      every Loops call; status "none": no answer
      loops_bridge_delivery_seconds               received -> delivered (histogram)
      loops_bridge_inbox_write_seconds            each batch of webhooks written (histogram)
      loops_bridge_loops_webhooks_total{event}    Loops' own webhooks stored, by eventName
    read from the database at scrape time, shared by every process
      loops_bridge_deliveries{status}             deliveries in each state
      loops_bridge_queue_depth{account}           queued deliveries per Loops account
      loops_bridge_oldest_queued_seconds{account} age of the oldest of them (0: none queued)
      loops_bridge_account_problem{account,kind}  1 while an account has a problem
      loops_bridge_loops_bounces_total{account,kind}  bounces Loops reported (hard, soft)
      loops_bridge_loops_complaints_total{account}    spam complaints Loops reported
      loops_bridge_database_up                    0: the database did not answer the scrape

Counters are per process (Prometheus sums them across processes); the database gauges are
the same from every process, so aggregate them with ``max``, not ``sum``. The database is
read at most once per :data:`DATABASE_CACHE_SECONDS` however often it is scraped, with
queries that start from the ``status`` indexes of ``deliveries``.

The registry is this module's own, not prometheus_client's global one, so a library that
registers metrics there never shows up here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import func, select
from sqlalchemy.engine import Connection as DBConnection
from sqlalchemy.engine import Engine

from bridge.models import (
    QUEUED,
    STATUSES,
    Account,
    AccountState,
    Delivery,
    Endpoint,
    LoopsEvent,
)
from bridge.outcomes import EMAIL_EVENTS, SENT_EVENTS

__all__ = [
    "CONTENT_TYPE",
    "DATABASE_CACHE_SECONDS",
    "LOOPS_EVENTS",
    "WEBHOOK_OUTCOMES",
    "Exposition",
    "delivery_finished",
    "inbox_batch_written",
    "loops_call",
    "loops_webhook_received",
    "serve_http",
    "webhook_answered",
]

log = logging.getLogger("bridge.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
DATABASE_CACHE_SECONDS = 5.0
WEBHOOK_OUTCOMES = (
    "queued",
    "duplicate",
    "ignored",
    "rejected",
    "not_found",
    "too_large",
    "unavailable",
)
# Loops' webhook event types (https://loops.so/docs/webhooks); any other eventName is
# counted as "other", so that a sender cannot make series without end.
LOOPS_EVENTS = (
    "contact.created",
    "contact.unsubscribed",
    "contact.deleted",
    "contact.mailingList.subscribed",
    "contact.mailingList.unsubscribed",
    *SENT_EVENTS,
    *EMAIL_EVENTS,
    "testing.testEvent",
)
# Loops events counted per account from the database: eventName -> (family, labels after
# the account's name).
_REPORTED = {
    "email.hardBounced": ("bounces", ("hard",)),
    "email.softBounced": ("bounces", ("soft",)),
    "email.spamReported": ("complaints", ()),
}
# Received -> delivered: well under a second when Loops answers at once, up to the 3 days a
# delivery is retried for.
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 259200)
# One batch of the inbox's group commit: a few ms on a local disk; a webhook's 200 waits for
# the batch being written, then for its own.
INBOX_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

# A `_created` series beside every counter and histogram doubles the output for a timestamp
# nobody graphs. The switch is process-wide; this process has no other metrics.
prometheus_client.disable_created_metrics()

_PROCESS = CollectorRegistry()
_webhooks = Counter(
    "loops_bridge_webhooks_total",
    "Answers to POST /webhooks/..., by outcome.",
    ["outcome"],
    registry=_PROCESS,
)
_loops_calls = Counter(
    "loops_bridge_loops_calls_total",
    'Calls to the Loops API, by HTTP status; "none" when Loops did not answer.',
    ["status"],
    registry=_PROCESS,
)
_delivery_seconds = Histogram(
    "loops_bridge_delivery_seconds",
    "Seconds from a delivery being received to it being delivered to Loops.",
    buckets=DELIVERY_BUCKETS,
    registry=_PROCESS,
)
_inbox_write_seconds = Histogram(
    "loops_bridge_inbox_write_seconds",
    "Seconds each batch of webhooks took to be written and committed to the database "
    "(group commit); every webhook answered 200 waited for one. The count is of batches.",
    buckets=INBOX_BUCKETS,
    registry=_PROCESS,
)
_loops_webhooks = Counter(
    "loops_bridge_loops_webhooks_total",
    "Loops' own webhooks received and stored (not duplicates), by eventName; other: a "
    "name Loops does not document.",
    ["event"],
    registry=_PROCESS,
)
# Bound once: the webhook path pays a dict lookup and an increment, no label handling.
_WEBHOOK_COUNTS = {outcome: _webhooks.labels(outcome) for outcome in WEBHOOK_OUTCOMES}
_loops_call_counts: dict[int | None, Counter] = {}
_LOOPS_WEBHOOK_COUNTS = {event: _loops_webhooks.labels(event) for event in LOOPS_EVENTS}
_LOOPS_WEBHOOK_OTHER = _loops_webhooks.labels("other")


def webhook_answered(outcome: str) -> None:
    """Count one answer to a webhook request; ``outcome`` is one of :data:`WEBHOOK_OUTCOMES`."""
    _WEBHOOK_COUNTS[outcome].inc()


def loops_call(status_code: int | None) -> None:
    """Count one Loops API call by its HTTP status; None: no answer (timeout, refused...)."""
    child = _loops_call_counts.get(status_code)
    if child is None:
        label = "none" if status_code is None else str(status_code)
        child = _loops_call_counts[status_code] = _loops_calls.labels(label)
    child.inc()


def loops_webhook_received(event_name: str) -> None:
    """Count one Loops webhook stored, by its eventName."""
    _LOOPS_WEBHOOK_COUNTS.get(event_name, _LOOPS_WEBHOOK_OTHER).inc()


def delivery_finished(seconds: float) -> None:
    """Record one delivery reaching ``delivered``, ``seconds`` after it was received."""
    _delivery_seconds.observe(seconds)


def inbox_batch_written(seconds: float) -> None:
    """Record one batch of the inbox written and committed (or failed) in ``seconds``."""
    _inbox_write_seconds.observe(seconds)


class _Database:
    """The gauges read from the database, cached for :data:`DATABASE_CACHE_SECONDS`."""

    def __init__(self, engine: Engine, cache_seconds: float = DATABASE_CACHE_SECONDS) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()  # one query at a time; concurrent scrapes share it
        self._families: Sequence[Metric] = ()
        self._read_at = float("-inf")

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                self._families = self._read()
                self._read_at = time.monotonic()
            return self._families

    def _read(self) -> Sequence[Metric]:
        up = GaugeMetricFamily(
            "loops_bridge_database_up", "1 if the database answered the last scrape, else 0."
        )
        try:
            with self._engine.connect() as conn:
                families = _gauges(conn, time.time())
        except Exception as exc:
            log.warning("metrics: database unreachable, showing process metrics only: %s", exc)
            up.add_metric([], 0)
            return (up,)
        up.add_metric([], 1)
        return (up, *families)


def _gauges(conn: DBConnection, now: float) -> list[Metric]:
    deliveries = Delivery.__table__  # type: ignore[attr-defined]
    endpoints = Endpoint.__table__  # type: ignore[attr-defined]
    accounts = Account.__table__  # type: ignore[attr-defined]
    states = AccountState.__table__  # type: ignore[attr-defined]

    by_status = dict.fromkeys(STATUSES, 0)
    count_by_status = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
    by_status.update(conn.execute(count_by_status).all())
    # Queued rows only, found through the (status, ...) index, then named by account in
    # Python: joining first would have the database walk every delivery of each endpoint.
    queued = conn.execute(
        select(deliveries.c.endpoint_id, func.count(), func.min(deliveries.c.queued_at))
        .where(deliveries.c.status == QUEUED)
        .group_by(deliveries.c.endpoint_id)
    ).all()
    account_endpoints = conn.execute(
        select(accounts.c.name, endpoints.c.id).select_from(
            accounts.outerjoin(endpoints, endpoints.c.account_id == accounts.c.id)
        )
    ).all()
    problems = conn.execute(
        select(accounts.c.name, states.c.problem_kind)
        .join(states, states.c.account_id == accounts.c.id)
        .where(states.c.problem_kind.is_not(None))
    ).all()

    account_of: dict[str, str] = {}
    depth: dict[str, int] = {}
    oldest: dict[str, float] = {}
    for account, endpoint_id in account_endpoints:
        depth.setdefault(account, 0)  # an account with nothing queued shows 0, not nothing
        if endpoint_id is not None:
            account_of[endpoint_id] = account
    for endpoint_id, count, queued_at in queued:
        account = account_of.get(endpoint_id)
        if account is None:  # its endpoint was deleted since the first query
            continue
        depth[account] += count
        if queued_at is not None:
            oldest[account] = min(oldest.get(account, queued_at), queued_at)

    status_family = GaugeMetricFamily(
        "loops_bridge_deliveries", "Deliveries in each state.", labels=["status"]
    )
    for status, count in sorted(by_status.items()):
        status_family.add_metric([status], count)
    depth_family = GaugeMetricFamily(
        "loops_bridge_queue_depth", "Queued deliveries per Loops account.", labels=["account"]
    )
    age_family = GaugeMetricFamily(
        "loops_bridge_oldest_queued_seconds",
        "Seconds since the oldest queued delivery of a Loops account was queued (0: none).",
        labels=["account"],
    )
    for account, count in sorted(depth.items()):
        depth_family.add_metric([account], count)
        age = max(now - oldest[account], 0.0) if account in oldest else 0.0
        age_family.add_metric([account], age)
    problem_family = GaugeMetricFamily(
        "loops_bridge_account_problem",
        "1 while a Loops account has a problem (kind: outage, key); absent when it has none.",
        labels=["account", "kind"],
    )
    for account, kind in sorted(problems):
        problem_family.add_metric([account, kind], 1)
    return [status_family, depth_family, age_family, problem_family, *_reported(conn)]


def _reported(conn: DBConnection) -> list[Metric]:
    """Bounces and spam complaints Loops reported for each account: counted from the stored
    events (their rows stay after retention), through the (event_name, ...) index."""
    events = LoopsEvent.__table__  # type: ignore[attr-defined]
    accounts = Account.__table__  # type: ignore[attr-defined]
    counts = dict.fromkeys(
        ((name, event) for (name,) in conn.execute(select(accounts.c.name)) for event in _REPORTED),
        0,
    )
    found = conn.execute(
        select(accounts.c.name, events.c.event_name, func.count())
        .select_from(events.join(accounts, accounts.c.id == events.c.account_id))
        .where(events.c.event_name.in_(_REPORTED))
        .group_by(accounts.c.name, events.c.event_name)
    ).all()
    counts.update(((name, event), count) for name, event, count in found)
    bounces = CounterMetricFamily(
        "loops_bridge_loops_bounces",
        "Bounces Loops reported by webhook for emails of a Loops account (kind: hard, soft).",
        labels=["account", "kind"],
    )
    complaints = CounterMetricFamily(
        "loops_bridge_loops_complaints",
        "Spam complaints Loops reported by webhook for emails of a Loops account.",
        labels=["account"],
    )
    families = {"bounces": bounces, "complaints": complaints}
    for (name, event), count in sorted(counts.items()):
        family, labels = _REPORTED[event]
        families[family].add_metric([name, *labels], count)
    return [bounces, complaints]


class Exposition:
    """What one scrape shows: this process's counters and the database's gauges."""

    def __init__(self, engine: Engine, cache_seconds: float = DATABASE_CACHE_SECONDS) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_PROCESS)
        self.registry.register(_Database(engine, cache_seconds))

    def render(self) -> bytes:
        """The text format (version 0.0.4). Blocks on the database: call it off the loop."""
        return generate_latest(self.registry)


def serve_http(port: int, engine: Engine, host: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (``loops-bridge worker``,
    which has no web app). The server it returns stops with ``.shutdown()``."""
    server, _thread = prometheus_client.start_http_server(
        port, addr=host, registry=Exposition(engine).registry
    )
    log.info("metrics at http://%s:%d/metrics", host, port)
    return server
