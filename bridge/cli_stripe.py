"""The commands that call Stripe's API with an endpoint's key (part of ``loops-bridge``).

loops-bridge endpoints set-stripe-key ID KEY|- [--no-check] | remove-stripe-key ID
loops-bridge backfill ID [--dry-run] [--json]
loops-bridge recover ID --since TIME [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Engine
from tqdm import tqdm

from bridge import backfill, outcomes, recover, registry
from bridge.models import Backfill
from bridge.settings import Settings
from bridge.stripe_api import StripeAPIError

__all__ = ["add_parsers", "run_backfill", "run_recover", "set_key"]

Printer = Callable[[argparse.Namespace, Any, str], None]


def add_parsers(commands: Any, endpoints: Any, json_flag: Callable, no_check: Callable) -> None:
    """The commands' arguments: ``commands`` is the top level, ``endpoints`` its actions."""
    key = endpoints.add_parser(
        "set-stripe-key",
        help="give the endpoint a Stripe API key (backfill, recover, subscription events)",
    )
    key.add_argument("id", help="endpoint id")
    key.add_argument("key", help="a restricted key rk_live_.../rk_test_..., or - to read stdin")
    no_check(key)
    json_flag(key)
    gone = endpoints.add_parser("remove-stripe-key", help="forget the endpoint's Stripe API key")
    gone.add_argument("id", help="endpoint id")
    json_flag(gone)

    fill = commands.add_parser(
        "backfill",
        help="import the customers Stripe already has into the endpoint's Loops account "
        "(no Loops event is sent); run again to continue",
    )
    fill.add_argument("id", help="endpoint id")
    fill.add_argument(
        "--dry-run", action="store_true", help="count what it would import and how long it takes"
    )
    json_flag(fill)
    missed = commands.add_parser(
        "recover", help="queue the Stripe events the endpoint missed since a time (30 days at most)"
    )
    missed.add_argument("id", help="endpoint id")
    missed.add_argument(
        "--since", required=True, help="ISO 8601 time (2026-12-01T09:30:00Z) or a time ago (36h)"
    )
    json_flag(missed)


def set_key(
    args: argparse.Namespace, settings: Settings, engine: Engine, key: str, show: Printer
) -> int:
    if args.action == "remove-stripe-key":
        had = registry.endpoint_view(engine, args.id).stripe_key_hint
        registry.set_stripe_key(engine, args.id, None)  # a non-Stripe endpoint is refused
        text = (
            f"Removed the Stripe API key {had}: the bridge no longer calls Stripe for this "
            "endpoint. Delete the key in Stripe too (Developers → API keys)."
            if had
            else f"Endpoint {args.id} has no Stripe API key: there was nothing to remove."
        )
        show(args, {"id": args.id, "stripe_api_key": None, "removed": bool(had)}, text)
        return 0
    key = key.strip()
    registry.endpoint_view(engine, args.id)  # an unknown id is named before Stripe is asked
    about = ""
    if not args.no_check:
        try:
            check, problems = backfill.check_key(engine, args.id, key, settings.stripe_api_url)
        except StripeAPIError as exc:
            raise registry.Invalid(
                f"{exc} (--no-check saves the key without checking it)"
            ) from None
        if problems:
            raise registry.Invalid(" ".join(problems))
        for warning in check.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        account = check.account_name or check.account_id
        about = f" (Stripe account {account}, {check.mode} mode)" if account else ""
    hint, made_due = registry.set_stripe_key(engine, args.id, key)
    show(
        args,
        {"id": args.id, "stripe_api_key": hint, "deliveries_resumed": made_due},
        f"Saved the Stripe API key {hint}{about}.{registry.lookups_resumed(made_due)}",
    )
    return 0


def run_backfill(
    args: argparse.Namespace, settings: Settings, engine: Engine, show: Printer
) -> int:
    api = backfill.api_for(engine, args.id, settings.stripe_api_url)
    rate = settings.loops_rate_limit
    if args.dry_run:
        try:
            plan = backfill.estimate(engine, args.id, api, rate)
        except StripeAPIError as exc:
            raise registry.Invalid(str(exc)) from None
        show(args, plan, backfill.describe(plan))
        return 0
    before = backfill.status(engine, args.id, rate)
    if before is not None and before.state != backfill.DONE and not args.json:
        print(
            f"Continuing the import started {outcomes.iso(before.started_at)}: "
            f"{before.customers:,} customers read so far, {before.queued:,} imported.",
            file=sys.stderr,
        )
    stop = threading.Event()
    with _progress(args, before, stop) as on_page, _interruptible(stop):
        done = backfill.run(engine, args.id, api, on_page=on_page, stop=stop)
    after = backfill.status(engine, args.id, rate)
    assert after is not None
    result = {**after.as_dict(), "resumed": done.resumed}
    ending = {
        backfill.DONE: "Import done",
        backfill.INTERRUPTED: "Import stopped; run the same command again to continue",
        backfill.CANCELLED: "Import cancelled from the admin; run it again to continue",
    }[done.state]
    text = (
        f"{ending}: {after.customers:,} customers read from Stripe, {after.queued:,} imported, "
        f"{after.skipped:,} skipped (deleted or without an email), "
        f"{after.already_in_loops:,} already in Loops, {after.failed:,} failed."
    )
    if after.pending:
        text += (
            f"\n{after.pending:,} contacts are still to be created in Loops, at the account's "
            f"{after.rate} requests/s: about {backfill.duration(after.eta_seconds)} while "
            "`loops-bridge serve` runs. `loops-bridge deliveries list --endpoint "
            f"{args.id}` shows them."
        )
    if done.problem:
        print(f"error: {done.problem}", file=sys.stderr)
    show(args, result, text)
    return 1 if done.problem else 0


def run_recover(args: argparse.Namespace, settings: Settings, engine: Engine, show: Printer) -> int:
    since = recover.parse_since(args.since, time.time())
    api = backfill.api_for(engine, args.id, settings.stripe_api_url)
    try:
        counts = asyncio.run(recover.recover(engine, args.id, api, since))
    except StripeAPIError as exc:
        raise registry.Invalid(str(exc)) from None
    text = (
        f"Since {outcomes.iso(since)}: {counts['found']:,} events found in Stripe, "
        f"{counts['new']:,} new (queued for Loops), {counts['duplicate']:,} already received, "
        f"{counts['ignored']:,} ignored."
    )
    show(args, counts, text)
    return 0


@contextlib.contextmanager
def _interruptible(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C stops the import after the page being written: nothing is lost or doubled.
    A second Ctrl-C interrupts at once (the page's transaction is then not written)."""

    def first(signum: int, frame: Any) -> None:
        stop.set()
        print("\nStopping after this page (Ctrl-C again to stop at once)…", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _progress(
    args: argparse.Namespace, before: backfill.Status | None, stop: threading.Event
) -> Iterator[Callable[[Backfill], None]]:
    """A progress bar on a terminal (stderr), plain lines when it is not one, nothing with
    --json (one object at the end)."""
    if args.json:
        yield lambda _: None
        return
    start = time.monotonic()
    read_before = before.customers if before and before.state != backfill.DONE else 0
    if sys.stderr.isatty():
        bar = tqdm(unit=" customers", initial=read_before, dynamic_ncols=True, file=sys.stderr)

        def on_page(state: Backfill) -> None:
            bar.update(state.customers - bar.n)
            bar.set_postfix_str(_counts(state), refresh=True)

        try:
            yield on_page
        finally:
            bar.close()
        return
    last = [0.0]

    def on_line(state: Backfill) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:  # at most a line every 2 s: a log, not a flood
            last[0] = now
            rate = (state.customers - read_before) / max(now - start, 1e-3)
            print(f"{state.customers:,} customers read ({rate:,.0f}/s): {_counts(state)}")
            sys.stdout.flush()

    yield on_line


def _counts(state: Backfill) -> str:
    return f"{state.queued:,} imported, {state.skipped:,} skipped, {state.known:,} already in Loops"
