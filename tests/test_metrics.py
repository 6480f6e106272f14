"""``GET /metrics``: what the bridge counts and reads from its database, scraped from the
app in-process (tests/harness.py) and parsed with prometheus_client's own parser; the
database gauges' cache and their fallback; and ``loops-bridge worker``'s own metrics port,
a real socket.

The counters belong to the process, and every test in it adds to them: a test compares
them before and after what it does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlmodel import Session

from bridge import accounts, db, metrics, registry
from bridge.loops import Verdict
from bridge.models import QUEUED, Delivery
from tests import leaks
from tests.harness import Harness
from tests.helpers import fixture_bytes, invoice_endpoint
from tests.servers import free_port

SECRET = "whsec_metricsTestSecretAAAAAAAAAAA"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
MAX_BODY_BYTES = 16_384

Samples = dict[tuple[str, ...], float]


def scrape(text: str) -> dict[str, Samples]:
    """Sample name -> {label values, in label-name order: value}."""
    found: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(v for _, v in sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def counted(engine: sa.Engine) -> dict[str, Samples]:
    """This process's counters as they are now (and the database's gauges, uncached)."""
    return scrape(metrics.Exposition(engine, cache_seconds=0).render().decode())


def added(before: dict[str, Samples], after: dict[str, Samples], name: str) -> Samples:
    """What each of ``name``'s samples grew by (0: it did not)."""
    old, new = before.get(name, {}), after.get(name, {})
    return {labels: value - old.get(labels, 0) for labels, value in new.items()}


def grown(before: dict[str, Samples], after: dict[str, Samples], name: str) -> Samples:
    """The samples of ``name`` that grew, and by how much."""
    return {k: v for k, v in added(before, after, name).items() if v}


def invoice(event_id: str) -> bytes:
    event = json.loads(fixture_bytes(INVOICE_PAID))
    event["id"] = event_id
    return json.dumps(event).encode()


def add_account(harness: Harness, name: str) -> str:
    """A Loops account named ``name`` with an invoice.paid endpoint; the endpoint's id."""
    harness.account(name, f"loops_key_{name}_00001234")
    return harness.endpoint("invoice.paid", account=name, secret=SECRET, name=name)


def send(harness: Harness, endpoint_id: str, body: bytes, secret: str = SECRET) -> str:
    """Post a signed webhook; the answer's status."""
    return harness.webhook(endpoint_id, body, secret).json()["status"]


def post_unsigned(harness: Harness, endpoint_id: str, body: bytes) -> int:
    answer = harness.run(harness.client.post(f"/webhooks/{endpoint_id}", content=body))
    return answer.status_code


def get_metrics(harness: Harness) -> httpx.Response:
    response = harness.get("/metrics")
    leaks.text("HTTP", "GET /metrics", response.text)
    return response


def test_metrics_count_every_answer_and_mirror_the_database(tmp_path: Path) -> None:
    with Harness(tmp_path, BRIDGE_MAX_BODY_BYTES=str(MAX_BODY_BYTES)) as harness:
        acme, beta = add_account(harness, "acme"), add_account(harness, "beta")
        gamma = harness.account("gamma", "loops_key_gamma_00001234")  # no endpoint
        # acme's endpoint is paused, so its deliveries stay queued whatever the worker does.
        registry.set_paused(harness.engine, acme, True)
        # Loops refused gamma's key, as the worker records it.
        with harness.engine.begin() as conn:
            accounts.record(
                conn,
                gamma,
                verdict=Verdict.KEY_REFUSED,
                message="Loops answered 401: Invalid API key",
                api_key="loops_key_gamma_00001234",
                current_key=lambda: "loops_key_gamma_00001234",
                was_probe=False,
                intervals=accounts.Intervals(),
            )
        before_counts = counted(harness.engine)

        answers = [
            send(harness, acme, invoice("evt_acme_1")),
            send(harness, acme, invoice("evt_acme_2")),
            send(harness, beta, invoice("evt_beta_1")),
            send(harness, beta, invoice("evt_beta_1")),
            send(harness, beta, fixture_bytes(CUSTOMER_CREATED)),
            send(
                harness, beta, invoice("evt_beta_2"), secret="whsec_notTheSecretAAAAAAAAAAAAAAAAA"
            ),
            post_unsigned(harness, "no-such-endpoint", b"{}"),
            post_unsigned(harness, beta, b" " * (MAX_BODY_BYTES + 1)),
        ]
        assert answers == [
            "queued",
            "queued",
            "queued",
            "duplicate",
            "ignored",
            "rejected",
            404,
            413,
        ]
        harness.until(
            lambda: harness.deliveries(status="delivered"),
            what="beta's delivery to be delivered",
        )

        before = time.time()
        response = get_metrics(harness)
        after = time.time()
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        found = scrape(response.text)

        assert added(before_counts, found, "loops_bridge_webhooks_total") == {
            ("queued",): 3,
            ("duplicate",): 1,
            ("ignored",): 1,
            ("rejected",): 1,
            ("not_found",): 1,
            ("too_large",): 1,
            ("unavailable",): 0,
        }
        assert found["loops_bridge_database_up"] == {(): 1}

        with harness.engine.connect() as conn:
            by_status = dict(
                conn.execute(
                    sa.text("SELECT status, count(*) FROM deliveries GROUP BY status")
                ).all()
            )
            depth = dict(
                conn.execute(
                    sa.text(
                        "SELECT c.name, count(d.id) FROM accounts c"
                        " LEFT JOIN endpoints e ON e.account_id = c.id"
                        " LEFT JOIN deliveries d ON d.endpoint_id = e.id AND d.status = 'queued'"
                        " GROUP BY c.name"
                    )
                ).all()
            )
            oldest = conn.execute(
                sa.text("SELECT min(queued_at) FROM deliveries WHERE status = 'queued'")
            ).scalar_one()
        assert by_status == {"queued": 2, "delivered": 1, "ignored": 1}
        shown = found["loops_bridge_deliveries"]
        assert {status: shown[(status,)] for status in by_status} == by_status
        assert all(count == 0 for (status,), count in shown.items() if status not in by_status)

        assert depth == {"acme": 2, "beta": 0, "gamma": 0}
        assert found["loops_bridge_queue_depth"] == {(name,): n for name, n in depth.items()}

        ages = found["loops_bridge_oldest_queued_seconds"]
        assert before - oldest <= ages[("acme",)] <= after - oldest
        assert ages[("beta",)] == ages[("gamma",)] == 0

        assert found["loops_bridge_account_problem"] == {("gamma", "key"): 1}


def test_metrics_count_loops_calls_and_time_deliveries(harness: Harness) -> None:
    endpoint = add_account(harness, "acme")
    before = counted(harness.engine)
    assert send(harness, endpoint, invoice("evt_1")) == "queued"
    harness.until(
        lambda: harness.deliveries(status="delivered"), what="the delivery to be delivered"
    )
    found = scrape(get_metrics(harness).text)

    statuses = [str(call["status"]) for call in harness.loops_calls()]
    assert statuses  # the delivery called Loops
    assert grown(before, found, "loops_bridge_loops_calls_total") == {
        (s,): statuses.count(s) for s in set(statuses)
    }
    assert added(before, found, "loops_bridge_delivery_seconds_count") == {(): 1}
    # The webhook waited for one batch of the inbox, and that batch took some time.
    assert added(before, found, "loops_bridge_inbox_write_seconds_count") == {(): 1}
    assert added(before, found, "loops_bridge_inbox_write_seconds_sum")[()] > 0


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
