"""``GET /metrics``: what ``loops-bridge serve`` counts and reads from its database, scraped
over HTTP and parsed with prometheus_client's own parser; the database gauges' cache and
their fallback, in-process."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlmodel import Session

from bridge import db, metrics, registry
from bridge.models import QUEUED, Delivery
from tests.helpers import fixture_bytes, invoice_endpoint, signed_headers
from tests.servers import Bridge, Sandbox, bridge_env, cli, free_port, wait_until

SECRET = "whsec_metricsTestSecretAAAAAAAAAAA"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
MAX_BODY_BYTES = 16_384

Samples = dict[tuple[str, ...], float]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return bridge_env(tmp_path, BRIDGE_MAX_BODY_BYTES=str(MAX_BODY_BYTES))


def scrape(text: str) -> dict[str, Samples]:
    """Sample name -> {label values, in label-name order: value}."""
    found: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(v for _, v in sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def invoice(event_id: str) -> bytes:
    event = json.loads(fixture_bytes(INVOICE_PAID))
    event["id"] = event_id
    return json.dumps(event).encode()


def add_account(env: dict[str, str], name: str, *, endpoint: bool = True) -> str | None:
    cli(env, "accounts", "add", "--name", name, "--api-key", f"loops_key_{name}_00001234")
    if not endpoint:
        return None
    args = ["--account", name, "--events", "invoice.paid", "--signing-secret", SECRET]
    return cli(env, "endpoints", "create", "--name", name, *args, "--json")["id"]


def send(bridge: Bridge, endpoint_id: str, body: bytes, secret: str = SECRET) -> str:
    """Post a webhook; the answer's status."""
    answer = bridge.post(endpoint_id, body, signed_headers(body, secret)).json()
    return answer["status"]


@pytest.fixture
def database(env: dict[str, str], bridge: Bridge) -> Iterator[sqlite3.Connection]:
    """The running bridge's SQLite database, read (and written) behind its back."""
    path = env["BRIDGE_DATABASE_URL"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        yield conn


def test_metrics_count_every_answer_and_mirror_the_database(
    env: dict[str, str], sandbox: Sandbox, bridge: Bridge, database: sqlite3.Connection
) -> None:
    acme, beta = add_account(env, "acme"), add_account(env, "beta")
    add_account(env, "gamma", endpoint=False)
    assert acme and beta
    # acme's endpoint is paused, so its deliveries stay queued whatever the worker does.
    engine = create_engine(env["BRIDGE_DATABASE_URL"])
    registry.set_paused(engine, acme, True)
    engine.dispose()
    # gamma has a refused key (written as the worker writes it).
    database.execute(
        "INSERT INTO account_states (account_id, next_slot, failures, problem, problem_kind,"
        " problem_since) SELECT id, 0, 1, 'Loops refused the key', 'key', ? FROM accounts"
        " WHERE name = 'gamma'",
        (time.time(),),
    )
    database.commit()

    answers = [
        send(bridge, acme, invoice("evt_acme_1")),
        send(bridge, acme, invoice("evt_acme_2")),
        send(bridge, beta, invoice("evt_beta_1")),
        send(bridge, beta, invoice("evt_beta_1")),
        send(bridge, beta, fixture_bytes(CUSTOMER_CREATED)),
        send(bridge, beta, invoice("evt_beta_2"), secret="whsec_notTheSecretAAAAAAAAAAAAAAAAA"),
        bridge.post("no-such-endpoint", b"{}", {}).status_code,
        bridge.post(beta, b" " * (MAX_BODY_BYTES + 1), {}).status_code,
    ]
    assert answers == ["queued", "queued", "queued", "duplicate", "ignored", "rejected", 404, 413]
    wait_until(
        lambda: cli(env, "deliveries", "list", "--status", "delivered", "--json"),
        what="beta's delivery to be delivered",
    )

    before = time.time()
    response = httpx.get(f"{bridge.url}/metrics")
    after = time.time()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = scrape(response.text)

    assert found["loops_bridge_webhooks_total"] == {
        ("queued",): 3,
        ("duplicate",): 1,
        ("ignored",): 1,
        ("rejected",): 1,
        ("not_found",): 1,
        ("too_large",): 1,
        ("unavailable",): 0,
    }
    assert found["loops_bridge_database_up"] == {(): 1}

    by_status = dict(database.execute("SELECT status, count(*) FROM deliveries GROUP BY status"))
    assert by_status == {"queued": 2, "delivered": 1, "ignored": 1}
    shown = found["loops_bridge_deliveries"]
    assert {status: shown[(status,)] for status in by_status} == by_status
    assert all(count == 0 for (status,), count in shown.items() if status not in by_status)

    depth = dict(
        database.execute(
            "SELECT c.name, count(d.id) FROM accounts c"
            " LEFT JOIN endpoints e ON e.account_id = c.id"
            " LEFT JOIN deliveries d ON d.endpoint_id = e.id AND d.status = 'queued'"
            " GROUP BY c.name"
        )
    )
    assert depth == {"acme": 2, "beta": 0, "gamma": 0}
    assert found["loops_bridge_queue_depth"] == {(name,): n for name, n in depth.items()}

    (oldest,) = database.execute(
        "SELECT min(queued_at) FROM deliveries WHERE status = 'queued'"
    ).fetchone()
    ages = found["loops_bridge_oldest_queued_seconds"]
    assert before - oldest <= ages[("acme",)] <= after - oldest
    assert ages[("beta",)] == ages[("gamma",)] == 0

    assert found["loops_bridge_account_problem"] == {("gamma", "key"): 1}


def test_metrics_count_loops_calls_and_time_deliveries(
    env: dict[str, str], sandbox: Sandbox, bridge: Bridge
) -> None:
    endpoint = add_account(env, "acme")
    assert endpoint and send(bridge, endpoint, invoice("evt_1")) == "queued"
    wait_until(
        lambda: cli(env, "deliveries", "list", "--status", "delivered", "--json"),
        what="the delivery to be delivered",
    )
    found = scrape(httpx.get(f"{bridge.url}/metrics").text)

    statuses = [str(call["status"]) for call in sandbox.calls()]
    calls = found.get("loops_bridge_loops_calls_total", {})
    assert calls == {(s,): statuses.count(s) for s in set(statuses)}
    assert found["loops_bridge_delivery_seconds_count"] == {(): 1}


# --- in-process: the database gauges' cache and fallback --------------------------------


def test_an_unreachable_database_still_leaves_the_process_metrics(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'bridge.db'}")
    found = scrape(metrics.Exposition(engine).render().decode())
    assert found["loops_bridge_database_up"] == {(): 0}
    assert len(found["loops_bridge_webhooks_total"]) == len(metrics.WEBHOOK_OUTCOMES)
    assert "loops_bridge_deliveries" not in found


def test_the_database_is_read_once_per_cache_period(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'bridge.db'}")
    endpoint_id = invoice_endpoint(engine, SECRET)
    cached = metrics.Exposition(engine, cache_seconds=3600)
    uncached = metrics.Exposition(engine, cache_seconds=0)
    for exposition in (cached, uncached):
        found = scrape(exposition.render().decode())
        assert found["loops_bridge_queue_depth"] == {("acme",): 0}

    now = time.time()
    with Session(engine) as session:
        session.add(
            Delivery(
                endpoint_id=endpoint_id,
                event_id="evt_1",
                event_type="invoice.paid",
                occurred_at=int(now),
                status=QUEUED,
                received_at=now,
                queued_at=now,
            )
        )
        session.commit()

    assert scrape(cached.render().decode())["loops_bridge_queue_depth"] == {("acme",): 0}
    assert scrape(uncached.render().decode())["loops_bridge_queue_depth"] == {("acme",): 1}


def test_serve_http_answers_on_its_own_port(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'bridge.db'}")
    port = free_port()
    server = metrics.serve_http(port, engine, host="127.0.0.1")
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = scrape(response.text)
    assert found["loops_bridge_database_up"] == {(): 1}
    assert "loops_bridge_webhooks_total" in found
