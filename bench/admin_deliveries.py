"""Delivery-log benchmark: the admin's list queries against a million deliveries.

Fills a SQLite database (schema and indexes exactly as the bridge creates them) with
``--rows`` deliveries spread over 30 days, eight endpoints (one holding most rows), a
realistic mix of statuses, event types and email addresses, and Loops calls for the newest
ones. Then it times the queries behind ``GET /admin/deliveries`` and ``GET /admin/``, through
the same functions the pages call, and prints each one's median and slowest time in
milliseconds with the plan SQLite chose for it.

    .venv/bin/python bench/admin_deliveries.py [--rows 1000000] [--db PATH] [--repeat 20]

An existing ``--db`` with enough rows is reused, so a second run only measures.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from bridge import db, vault
from bridge.admin.deliveries import Filters, Page, list_deliveries
from bridge.admin.overview import read_overview

BATCH = 100_000
DAYS = 30
STATUS_MIX = [("delivered", 85), ("ignored", 12), ("failed", 2.5), ("queued", 0.5)]
TYPE_MIX = [
    ("invoice.paid", 40),
    ("customer.created", 15),
    ("customer.updated", 15),
    ("checkout.session.completed", 15),
    ("invoice.payment_failed", 5),
    ("invoice.upcoming", 5),
    ("customer.subscription.updated", 4.9),
    ("checkout.session.async_payment_failed", 0.1),
]
EMAILS = 200_000
ENDPOINTS = [f"endpoint{n:02d}_{'x' * 12}" for n in range(8)]
ENDPOINT_MIX = [60, 20, 8, 5, 4, 2, 0.9, 0.1]
PAYLOAD = (b'{"object":"event","data":{"object":{"object":"invoice"}},"pad":"' + b"x" * 900) + b'"}'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=20, help="runs per query")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="run ANALYZE first (the bridge never does: without it, SQLite plans by rules)",
    )
    return parser.parse_args()


def fill(path: Path, rows: int) -> None:
    engine = db.connect(f"sqlite:///{path}")  # the bridge's own schema and indexes
    api_key = vault.of(engine).encrypt("k")  # stored encrypted, as the bridge stores it
    engine.dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    have = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    if have >= rows:
        print(f"reusing {path}: {have:,} deliveries")
        return
    if have:
        sys.exit(f"{path} holds {have:,} deliveries, fewer than --rows; remove it first")
    started = time.perf_counter()
    conn.execute(
        "INSERT INTO accounts (id, name, api_key, created_at) VALUES (1, 'acme', ?, 0)",
        (api_key,),
    )
    conn.executemany(
        "INSERT INTO endpoints (id, name, account_id, provider, event_types, sync_names, "
        "paused, created_at) VALUES (?, ?, 1, 'stripe', 'invoice.paid', 1, 0, 0)",
        [(e, f"Endpoint {n}") for n, e in enumerate(ENDPOINTS)],
    )
    rng = random.Random(7)
    statuses, status_weights = zip(*STATUS_MIX, strict=True)
    types, type_weights = zip(*TYPE_MIX, strict=True)
    now = time.time()
    first = now - DAYS * 86400
    step = DAYS * 86400 / rows
    for start in range(0, rows, BATCH):
        count = min(BATCH, rows - start)
        chosen_status = rng.choices(statuses, status_weights, k=count)
        chosen_type = rng.choices(types, type_weights, k=count)
        chosen_endpoint = rng.choices(ENDPOINTS, ENDPOINT_MIX, k=count)
        batch = []
        for i in range(count):
            n = start + i
            at = first + n * step
            status = chosen_status[i]
            email = f"Customer{rng.randrange(EMAILS)}@Example.com"
            batch.append(
                (
                    n + 1,
                    chosen_endpoint[i],
                    f"evt_{n:024d}",
                    chosen_type[i],
                    int(at),
                    email,
                    PAYLOAD,
                    status,
                    None if status == "delivered" else "some reason for " + status,
                    1,
                    at,
                    at if status == "queued" else None,
                    at + 60 if status == "queued" else None,
                    None if status == "queued" else at + 0.2,
                )
            )
        conn.executemany(
            "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, occurred_at, email,"
            " payload, status, reason, attempts, received_at, queued_at,"
            " next_attempt_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            batch,
        )
        conn.commit()
        print(f"  {start + count:>9,} deliveries", end="\r", flush=True)
    # Loops calls for the newest deliveries: two each, the last minute at about 10/s.
    calls = [
        (n, "POST", "/contacts/create", "{}", 200, "{}", now - (rows - n) * 0.1, 12.0)
        for n in range(max(1, rows - 50_000), rows + 1)
        for _ in range(2)
    ]
    conn.executemany(
        "INSERT INTO loops_calls (delivery_id, method, path, request_body, status_code, "
        "response_body, started_at, duration_ms) VALUES (?,?,?,?,?,?,?,?)",
        calls,
    )
    conn.commit()
    conn.close()
    size = path.stat().st_size / 1e6
    print(f"filled {rows:,} deliveries in {time.perf_counter() - started:.0f} s ({size:,.0f} MB)")


def measure(repeat: int, run: Callable[[], object]) -> tuple[float, float]:
    run()  # warm the cache: the admin reads a hot database
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def plans(engine: Engine, run: Callable[[], object]) -> list[str]:
    """SQLite's plan for each statement ``run`` executes."""
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    found = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            found.append(", ".join(row[-1] for row in rows))
    return found


def main() -> int:
    args = parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="bridge-bench-")) / "bridge.db"
    fill(path, args.rows)
    plain = sqlite3.connect(path)
    plain.execute("ANALYZE" if args.analyze else "DROP TABLE IF EXISTS sqlite_stat1")
    plain.commit()
    plain.close()
    engine = db.connect(f"sqlite:///{path}")
    with engine.connect() as conn:
        rare: str = conn.exec_driver_sql(
            "SELECT email FROM deliveries WHERE id = ?", (args.rows // 3,)
        ).scalar_one()
    middle = args.rows // 2
    cases: list[tuple[str, Filters, int | None, int | None]] = [
        ("first page", Filters(), None, None),
        ("status=failed", Filters(status="failed"), None, None),
        ("status=queued", Filters(status="queued"), None, None),
        (
            "event_type=checkout.session.async_payment_failed (rare)",
            Filters(event_type="checkout.session.async_payment_failed"),
            None,
            None,
        ),
        ("search: an address, upper-cased (~5 rows)", Filters(search=rare.upper()), None, None),
        ("search: an event id", Filters(search=f"evt_{args.rows // 3:024d}"), None, None),
        ("search: part of addresses (common)", Filters(search="example.com"), None, None),
        ("search: part of an address (~5 rows)", Filters(search=rare[1:-4]), None, None),
        ("search: nothing has it", Filters(search="nobody@example.com"), None, None),
        ("endpoint (60 % of rows)", Filters(endpoint=ENDPOINTS[0]), None, None),
        ("endpoint (0.1 % of rows)", Filters(endpoint=ENDPOINTS[7]), None, None),
        ("deep page: before=<middle id>", Filters(), middle, None),
        ("deep page: after=<middle id> (Newer)", Filters(), None, middle),
        ("deep page, status=failed, before=<middle>", Filters(status="failed"), middle, None),
        (
            "endpoint (60 %) + status=failed",
            Filters(endpoint=ENDPOINTS[0], status="failed"),
            None,
            None,
        ),
        (
            "endpoint (0.1 %) + status=queued",
            Filters(endpoint=ENDPOINTS[7], status="queued"),
            None,
            None,
        ),
        (
            "endpoint (0.1 %) + rare type",
            Filters(endpoint=ENDPOINTS[7], event_type="checkout.session.async_payment_failed"),
            None,
            None,
        ),
        (
            "endpoint (0.1 %) + status=delivered",
            Filters(endpoint=ENDPOINTS[7], status="delivered"),
            None,
            None,
        ),
        (
            "endpoint (60 %) + rare type",
            Filters(endpoint=ENDPOINTS[0], event_type="checkout.session.async_payment_failed"),
            None,
            None,
        ),
        ("status=failed + search: an address", Filters(status="failed", search=rare), None, None),
        (
            "all four filters",
            Filters(
                endpoint=ENDPOINTS[0], status="delivered", event_type="invoice.paid", search=rare
            ),
            None,
            None,
        ),
    ]
    print(f"\n{args.rows:,} deliveries, {args.repeat} runs each; milliseconds (median / max)\n")
    for name, filters, before, after in cases:

        def run(f: Filters = filters, b: int | None = before, a: int | None = after) -> Page:
            return list_deliveries(engine, f, before=b, after=a)

        page = run()
        median, worst = measure(args.repeat, run)
        shown = f"{len(page.rows)} rows" + (", search window ran out" if page.partial else "")
        print(f"{median:8.2f} / {worst:8.2f}  {name}  [{shown}]")
        for text in plans(engine, run):
            print(f"{'':21}{text}")
    median, worst = measure(args.repeat, lambda: read_overview(engine, 10))
    seen = read_overview(engine, 10)
    print(
        f"{median:8.2f} / {worst:8.2f}  overview (24 h counts {seen.counts}, "
        f"queued {seen.queued:,}, pace {[(p.calls, p.busiest) for p in seen.paces]})"
    )
    print(f"\ndatabase: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
