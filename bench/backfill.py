"""Backfill benchmark: how much of a Loops account's limit an import of Stripe customers uses.

An import is the largest drain the bridge sees, so it is where the pace is proven. This
imports --customers Stripe customers (10,000 by default, from the Stripe API stand-in of the
tests, served on loopback) into one Loops account of ``loops-bridge sandbox`` at its
--rate-limit (10 requests/s, as Loops), through ``loops-bridge serve`` as a user runs it:

    loops-bridge accounts add / endpoints create / endpoints set-stripe-key
    loops-bridge backfill ID --json        pages Stripe, queues one delivery per customer
    loops-bridge serve                     its worker drains the account's queue

and prints, from the sandbox's record of every call:

    share of the limit used    calls ÷ (limit × seconds from the first call to the last)
    429s                       in all, and in steady state (after the first 10 s)
    Loops calls per customer   new to Loops: exactly 1 is the floor
    time against the ideal     customers ÷ limit

The floor (issue 13): at least 0.93 of the limit, no 429 in steady state, exactly one call
per customer. Exit status: 0 pass, 1 below the floor, 2 setup problem.

    .venv/bin/python bench/backfill.py [--customers 10000] [--rate-limit 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import stripe_standin  # noqa: E402  (the stand-in lives with the tests)
from tests.servers import free_port, wait_until  # noqa: E402

BIN = Path(sys.executable).parent / "loops-bridge"
STRIPE_KEY = "rk_test_51BenchBackfillReadOnlyKey0000ab12"
LOOPS_KEY = "loops_bench_backfill_key_0123456789abcdef"
FLOOR_SHARE = 0.93
STEADY_AFTER = 10.0  # seconds: the first calls learn the account's limit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rate-limit", type=int, default=10, help="the sandbox's, per second")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    stripe = stripe_standin.StripeStandin()
    stripe.add_key(STRIPE_KEY)
    stripe.add(stripe_standin.customers(args.customers))
    with tempfile.TemporaryDirectory() as tmp, stripe.serve() as stripe_url:
        work = Path(tmp)
        loops_port, bridge_port = free_port(), free_port()
        env = {
            **os.environ,
            "BRIDGE_DATABASE_URL": f"sqlite:///{work}/bridge.db",
            "BRIDGE_SECRET_KEY": "",
            "BRIDGE_LOOPS_API_URL": f"http://127.0.0.1:{loops_port}/api/v1",
            "BRIDGE_STRIPE_API_URL": stripe_url,
            "BRIDGE_PORT": str(bridge_port),
            "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{bridge_port}",
            "BRIDGE_ADMIN": "off",
            "BRIDGE_LOG_FORMAT": "json",
        }
        env["HOME"] = str(work)  # the key file and anything else land in the work folder
        logs = (work / "sandbox.log").open("wb"), (work / "serve.log").open("wb")
        sandbox = subprocess.Popen(
            [str(BIN), "sandbox", "--port", str(loops_port), "--rate-limit", str(args.rate_limit)],
            env=env,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        )
        serve = None
        try:
            loops = f"http://127.0.0.1:{loops_port}"
            wait_until(lambda: _answers(loops + "/_sandbox/requests"), what="the sandbox")

            def cli(*argv: str, stdin: str | None = None) -> dict:
                done = subprocess.run(
                    [str(BIN), *argv, "--json"],
                    env=env,
                    input=stdin,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    print(f"loops-bridge {argv[0]} {argv[1]} failed:\n{done.stderr}")
                    raise SystemExit(2)
                return json.loads(done.stdout)

            cli(
                "accounts",
                "add",
                "--name",
                "bench",
                "--api-key",
                "-",
                "--no-check",
                stdin=LOOPS_KEY,
            )
            endpoint = cli(
                "endpoints",
                "create",
                "--name",
                "Stripe",
                "--account",
                "bench",
                "--events",
                "customer.created",
                "--loops-event",
                "newStripeCustomer",
                "--signing-secret",
                "whsec_bench_backfill_secret_0123456789",
            )["id"]
            cli("endpoints", "set-stripe-key", endpoint, "-", stdin=STRIPE_KEY)
            started = time.monotonic()
            imported = cli("backfill", endpoint)
            paged = time.monotonic() - started
            print(
                f"backfill: {imported['customers']:,} customers read from Stripe and "
                f"{imported['imported']:,} queued in {paged:.1f} s"
            )
            serve = subprocess.Popen(
                [str(BIN), "serve"], env=env, stdout=logs[1], stderr=subprocess.STDOUT
            )
            ideal = args.customers / args.rate_limit
            print(f"draining at {args.rate_limit} requests/s: about {ideal:,.0f} s (ideal)")
            wait_until(
                lambda: _drained(work / "bridge.db"),
                timeout=ideal * 1.5 + 60,
                what="the account's queue to drain",
            )
            calls = httpx.get(loops + "/_sandbox/requests", timeout=60).json()
        finally:
            for proc in (serve, sandbox):
                if proc is not None:
                    proc.terminate()
                    proc.wait(20)
            for log in logs:
                log.close()
    return report(calls, args)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _drained(database: Path) -> bool:
    """No delivery queued: read from the bridge's database, not from the sandbox, whose
    event loop must not be kept busy by the benchmark while it times the calls."""
    time.sleep(5)  # a benchmark's poll, not a test's wait: the drain takes many minutes
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        (queued,) = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'queued'"
        ).fetchone()
    return queued == 0


def report(calls: list[dict], args: argparse.Namespace) -> int:
    calls.sort(key=lambda call: call["at"])
    first, last = calls[0]["at"], calls[-1]["at"]
    seconds = last - first
    accepted = [c for c in calls if c["status"] != 429]
    share = (len(accepted) - 1) / (seconds * args.rate_limit) if seconds else 0.0
    refused = [c for c in calls if c["status"] == 429]
    steady = [c for c in refused if c["at"] - first > STEADY_AFTER]
    per_customer = len(accepted) / args.customers
    ideal = args.customers / args.rate_limit
    print(f"Loops calls:              {len(calls):,} ({len(refused)} answered 429)")
    print(
        f"first call to last:       {seconds:,.1f} s (ideal {ideal:,.0f} s: {seconds / ideal:.3f}×)"
    )
    print(f"share of the limit used:  {share:.3f} (floor {FLOOR_SHARE})")
    print(f"429s in steady state:     {len(steady)}")
    print(f"Loops calls per customer: {per_customer:.3f} (floor: exactly 1)")
    if os.environ.get("BENCH_SAVE"):
        Path(os.environ["BENCH_SAVE"]).write_text(json.dumps(calls))
    ok = share >= FLOOR_SHARE and not steady and len(accepted) == args.customers
    print("backfill pace:", "PASS" if ok else "BELOW THE FLOOR")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
