"""The inbox's decisions and its group commit, on SQLite and, where BRIDGE_TEST_POSTGRES
names a server, PostgreSQL: one INSERT and one commit per batch, each event stored once
however it is repeated, and nothing acknowledged that is not on disk."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event as sql_event
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bridge import db
from bridge import inbox as inbox_module
from bridge.app import create_app
from bridge.inbox import Inbox, Receipt, StorageUnavailable
from bridge.settings import load
from tests.helpers import fixture_bytes, invoice_endpoint, signed_headers
from tests.servers import Bridge

SECRET = "whsec_inboxTestSecretHHHHHHHHHHHHHHH"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inbox.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = db.connect(url)
    yield engine
    engine.dispose()


def event(event_id: str, email: str | None = "jenny@example.com") -> bytes:
    body = json.loads(fixture_bytes("captured-test-mode/invoice.paid.event.json"))
    body["id"] = event_id
    body["data"]["object"]["customer_email"] = email
    return json.dumps(body).encode()


async def accept_all(inbox: Inbox, endpoint: str, bodies: list[bytes]) -> list:
    """Hand every body to the inbox at once, as a burst of webhooks would: receipts, or the
    StorageUnavailable raised instead."""
    route = await inbox.route(endpoint)
    assert route is not None
    try:
        return await asyncio.gather(
            *(inbox.accept(route, route.provider.parse(b, {}), b) for b in bodies),
            return_exceptions=True,
        )
    finally:
        await inbox.drain()


def stored(engine: Engine) -> dict[str, int]:
    """Event id -> delivery id, of every stored delivery."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, id FROM deliveries")).all()
    return {event_id: delivery_id for event_id, delivery_id in rows}


class Statements:
    """Counts the INSERTs into deliveries and the commits an engine makes."""

    def __init__(self, engine: Engine) -> None:
        self.inserts = self.commits = 0
        sql_event.listen(engine, "before_cursor_execute", self._executed)
        sql_event.listen(engine, "commit", self._committed)

    def _executed(self, _conn, _cursor, statement: str, *_args) -> None:  # type: ignore[no-untyped-def]
        self.inserts += statement.startswith("INSERT INTO deliveries")

    def _committed(self, _conn) -> None:  # type: ignore[no-untyped-def]
        self.commits += 1


def test_a_burst_is_stored_once_per_event(engine):
    endpoint = invoice_endpoint(engine, SECRET)
    bodies = [event(f"evt_{i}") for i in range(40)]
    burst = bodies + bodies[:10] + [event("evt_x", email=None)]
    receipts = asyncio.run(accept_all(Inbox(engine), endpoint, burst))
    statuses = [r.status for r in receipts]
    assert statuses == ["queued"] * 40 + ["duplicate"] * 10 + ["ignored"]
    ids = [r.delivery_id for r in receipts]
    assert len(set(ids[:40])) == 40
    assert ids[40:50] == ids[:10]  # a repeat answers with the first delivery's id
    assert "no email address" in receipts[-1].reason
    assert stored(engine) == {f"evt_{i}": ids[i] for i in range(40)} | {"evt_x": ids[-1]}


def test_a_batch_is_one_insert_and_one_commit_even_with_a_duplicate_inside(engine):
    endpoint = invoice_endpoint(engine, SECRET)
    inbox = Inbox(engine)
    asyncio.run(accept_all(inbox, endpoint, [event("evt_warm")]))  # the route is cached
    counted = Statements(engine)
    a, b, c = event("evt_a"), event("evt_b"), event("evt_c")
    receipts = asyncio.run(accept_all(inbox, endpoint, [a, b, a, c, a]))
    assert (counted.inserts, counted.commits) == (1, 1)
    assert [r.status for r in receipts] == ["queued", "queued", "duplicate", "queued", "duplicate"]
    assert receipts[2].delivery_id == receipts[4].delivery_id == receipts[0].delivery_id
    assert receipts[2].reason == "this endpoint already received this event"
    assert stored(engine) == {
        "evt_warm": stored(engine)["evt_warm"],
        "evt_a": receipts[0].delivery_id,
        "evt_b": receipts[1].delivery_id,
        "evt_c": receipts[3].delivery_id,
    }


def test_a_later_batch_finds_what_an_earlier_one_stored(engine):
    endpoint = invoice_endpoint(engine, SECRET)
    inbox = Inbox(engine)
    first = asyncio.run(accept_all(inbox, endpoint, [event("evt_1"), event("evt_2")]))
    again = asyncio.run(
        accept_all(inbox, endpoint, [event("evt_2"), event("evt_3"), event("evt_1")])
    )
    assert [r.status for r in again] == ["duplicate", "queued", "duplicate"]
    assert again[0].delivery_id == first[1].delivery_id
    assert again[2].delivery_id == first[0].delivery_id
    assert len(stored(engine)) == 3


def test_identical_events_from_concurrent_inboxes_are_stored_once(url, engine):
    """Two serving processes on one database (each its own inbox and engine), sent the same
    events at the same time, as Stripe may retry while the first attempt is in flight."""
    endpoint = invoice_endpoint(engine, SECRET)
    other = db.connect(url)
    bodies = [event(f"evt_{i}") for i in range(30)]

    async def both() -> list[list[Receipt]]:
        return list(
            await asyncio.gather(
                accept_all(Inbox(engine), endpoint, bodies),
                accept_all(Inbox(other), endpoint, bodies[::-1]),
            )
        )

    try:
        first, second = asyncio.run(both())
    finally:
        other.dispose()
    ids = stored(engine)
    assert len(ids) == 30
    for i, (one, two) in enumerate(zip(first, second[::-1], strict=True)):
        assert one.delivery_id == two.delivery_id == ids[f"evt_{i}"]
        assert sorted([one.status, two.status]) == ["duplicate", "queued"]


def refuse_one_event(engine: Engine, event_id: str) -> None:
    """Make the database refuse any batch that holds ``event_id``, as a full disk would."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON deliveries "
                    f"WHEN NEW.event_id = '{event_id}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'refused'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON deliveries "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )


def test_a_batch_that_fails_acknowledges_nothing_and_stores_nothing(engine):
    endpoint = invoice_endpoint(engine, SECRET)
    refuse_one_event(engine, "evt_refused")
    bodies = [event(f"evt_{i}") for i in range(10)] + [event("evt_refused")]
    outcomes = asyncio.run(accept_all(Inbox(engine), endpoint, bodies))
    assert all(isinstance(o, StorageUnavailable) for o in outcomes), outcomes
    assert stored(engine) == {}  # the batch is one transaction: none of it stays


def test_storage_failure_answers_503_and_acknowledges_nothing(url, engine):
    """Through the app: every answer is a 503 (Stripe retries it) or a 200 for an event that
    is on disk; then, storage back, the retries are stored."""
    endpoint = invoice_endpoint(engine, SECRET)
    refuse_one_event(engine, "evt_refused")
    app = create_app(load({"BRIDGE_DATABASE_URL": url}), engine, run_worker=False)
    bodies = [event(f"evt_{i}") for i in range(20)] + [event("evt_refused")]

    async def post_all(client: httpx.AsyncClient) -> list[httpx.Response]:
        posts = [
            client.post(f"/webhooks/{endpoint}", content=b, headers=signed_headers(b, SECRET))
            for b in bodies
        ]
        answers = await asyncio.gather(*posts)
        await app.state.inbox.drain()
        return list(answers)

    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            during = await post_all(client)
            with engine.begin() as conn:
                conn.execute(text(drop))
            return during, await post_all(client)

    drop = "DROP TRIGGER refuse" + (" ON deliveries" if engine.dialect.name != "sqlite" else "")
    during, after = asyncio.run(run())
    acknowledged = {r.json()["id"] for r in during if r.status_code == 200}
    assert {r.status_code for r in during} <= {200, 503}
    assert during[-1].status_code == 503
    assert during[-1].json() == {
        "status": "unavailable",
        "reason": "storage unavailable; retry later",
    }
    assert acknowledged <= set(stored(engine).values())
    assert [r.status_code for r in after] == [200] * len(bodies)
    assert len(stored(engine)) == len(bodies)


def test_a_dropped_table_answers_storage_unavailable(engine):
    endpoint = invoice_endpoint(engine, SECRET)
    with engine.begin() as conn:
        for table in ("loops_calls", "loops_events", "deliveries"):  # those that refer to it
            conn.execute(text(f"DROP TABLE {table}"))
    outcomes = asyncio.run(accept_all(Inbox(engine), endpoint, [event("evt_1"), event("evt_2")]))
    assert all(isinstance(o, StorageUnavailable) for o in outcomes), outcomes


def test_on_sqlite_the_wal_is_checkpointed_beside_the_writer(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(inbox_module, "CHECKPOINT_BYTES", 1)  # one due after every batch
    engine = db.connect(f"sqlite:///{tmp_path / 'wal.db'}")
    endpoint = invoice_endpoint(engine, SECRET)
    checkpoints: list[str] = []

    def executed(_conn, _cursor, statement: str, *_args) -> None:  # type: ignore[no-untyped-def]
        if "wal_checkpoint" in statement:
            checkpoints.append(statement)

    sql_event.listen(engine, "before_cursor_execute", executed)
    inbox = Inbox(engine)
    for burst in range(3):
        bodies = [event(f"evt_{burst}_{i}") for i in range(10)]
        receipts = asyncio.run(accept_all(inbox, endpoint, bodies))
        assert [r.status for r in receipts] == ["queued"] * 10
        assert len(checkpoints) > burst  # the last one due is made before the writer stops
    assert len(stored(engine)) == 30
    assert "could not checkpoint" not in caplog.text
    engine.dispose()


# -- a crash --------------------------------------------------------------------------------------


def test_the_serving_process_killed_mid_burst_loses_nothing_it_acknowledged(env):
    """``kill -9`` of ``loops-bridge serve`` while webhooks pour in: every one it answered 200
    is in the database afterwards, with the id it was given."""
    engine = db.connect(env["BRIDGE_DATABASE_URL"])
    endpoint = invoice_endpoint(engine, SECRET)
    bridge = Bridge(env)
    client = httpx.Client(base_url=bridge.url, timeout=10)
    acknowledged: dict[str, int] = {}
    some_acknowledged, killed = threading.Event(), threading.Event()

    def send(i: int) -> None:
        if killed.is_set():
            return
        body = event(f"evt_kill_{i}")
        headers = signed_headers(body, SECRET)
        try:
            response = client.post(f"/webhooks/{endpoint}", content=body, headers=headers)
        except httpx.TransportError:  # the process is gone: no answer, so Stripe retries
            return
        if response.status_code == 200:
            acknowledged[f"evt_kill_{i}"] = response.json()["id"]
            if len(acknowledged) >= 50:
                some_acknowledged.set()

    try:
        with ThreadPoolExecutor(16) as pool:
            sending = pool.map(send, range(5000))
            assert some_acknowledged.wait(timeout=60), "no webhook was acknowledged"
            bridge.proc.send_signal(signal.SIGKILL)
            killed.set()
            list(sending)
    finally:
        client.close()
        bridge.kill()
    kept = stored(engine)
    engine.dispose()
    assert 50 <= len(acknowledged) < 5000  # killed mid-burst
    assert {event_id: kept.get(event_id) for event_id in acknowledged} == acknowledged
