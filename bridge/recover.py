"""Recover: feed the events Stripe sent while the bridge could not take them.

After downtime longer than Stripe's retries (3 days), or after re-enabling an endpoint that
Stripe had disabled, some events never arrived. Stripe keeps 30 days of events: this lists
those of the endpoint's accepted types since a time, oldest first, and hands each to the
same inbox a webhook goes through. An event already received is a duplicate; the rest are
queued exactly as if Stripe had delivered them then (same Loops events, same idempotency
keys), in event-time order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy.engine import Engine

import providers
from bridge.inbox import Inbox
from bridge.registry import Invalid, NotFound
from bridge.stripe_api import StripeAPI

__all__ = ["KEPT_DAYS", "parse_since", "recover"]

KEPT_DAYS = 30  # Stripe's Events API lists the last 30 days
_RELATIVE = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> int:
    """``--since``: an ISO 8601 time (``2026-12-01``, ``2026-12-01T09:30:00Z``, an offset
    or none for UTC) or a time ago (``90m``, ``36h``, ``7d``), within Stripe's 30 days."""
    text = text.strip()
    if match := _RELATIVE.match(text):
        since = now - int(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Invalid(
                f"--since {text[:40]!r} is not a time: give an ISO 8601 time such as "
                "2026-12-01 or 2026-12-01T09:30:00Z, or a time ago such as 36h or 7d."
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        since = parsed.timestamp()
    if since > now:
        raise Invalid(f"--since {text[:40]!r} is in the future: nothing can have been missed.")
    if since < now - KEPT_DAYS * 86400:
        raise Invalid(
            f"--since {text[:40]!r} is more than {KEPT_DAYS} days ago, and Stripe keeps events "
            f"for {KEPT_DAYS} days only: give a later time (at most {KEPT_DAYS}d). For customers "
            "from before, `loops-bridge backfill` imports them."
        )
    return int(since)


async def recover(
    engine: Engine,
    endpoint_id: str,
    api: StripeAPI,
    since: int,
    on_event: Callable[[str], None] = lambda _: None,
) -> dict[str, int]:
    """Feed the endpoint's missed events since ``since`` through the inbox: counts of
    ``found``, ``new``, ``duplicate`` and ``ignored``. ``on_event`` sees each outcome."""
    inbox = Inbox(engine)
    route = await inbox.route(endpoint_id)
    if route is None:
        raise NotFound(f"No endpoint with id {endpoint_id!r}; see loops-bridge endpoints list.")
    if route.provider.name != "stripe":
        raise Invalid(
            f"Endpoint {endpoint_id} receives {route.provider.name} webhooks: only a Stripe "
            "endpoint can recover events (from Stripe's Events API)."
        )
    types = [t for t in route.provider.event_types if t in route.event_types]
    bodies = await anyio.to_thread.run_sync(api.events, types, since)
    counts = Counter({"found": len(bodies), "new": 0, "duplicate": 0, "ignored": 0})
    try:
        for body in bodies:  # one at a time: queued in event-time order
            try:
                event = route.provider.parse(body, {})
            except providers.Rejected:
                outcome = "ignored"
            else:
                receipt = await inbox.accept(route, event, body)
                outcome = {"queued": "new"}.get(receipt.status, receipt.status)
            counts[outcome] += 1
            on_event(outcome)
    finally:
        await inbox.drain()
    return dict(counts)
