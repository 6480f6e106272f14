"""The inbox's decisions and its batched writes, on SQLite and, where BRIDGE_TEST_POSTGRES
names a server, PostgreSQL (the writer process has one batch insert per database)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from bridge import db
from bridge.inbox import Inbox
from tests.helpers import fixture_bytes, invoice_endpoint

SECRET = "whsec_inboxTestSecretHHHHHHHHHHHHHHH"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'inbox.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = db.connect(url)
    yield engine
    engine.dispose()


def event(event_id: str, email: str | None = "jenny@example.com") -> bytes:
    body = json.loads(fixture_bytes("captured-test-mode/invoice.paid.event.json"))
    body["id"] = event_id
    body["data"]["object"]["customer_email"] = email
    return json.dumps(body).encode()


def accept_all(engine: Engine, bodies: list[bytes]) -> list:
    """Hand every body to the inbox at once, as a burst of webhooks would."""
    endpoint = invoice_endpoint(engine, SECRET)
    inbox = Inbox(engine)

    async def run() -> list:
        route = await inbox.route(endpoint)
        try:
            return await asyncio.gather(
                *(inbox.accept(route, route.provider.parse(b), b) for b in bodies)
            )
        finally:
            await inbox.drain()

    return asyncio.run(run())


def test_a_burst_is_stored_once_per_event(engine):
    bodies = [event(f"evt_{i}") for i in range(40)]
    receipts = accept_all(engine, bodies + bodies[:10] + [event("evt_x", email=None)])
    statuses = [r.status for r in receipts]
    assert statuses == ["queued"] * 40 + ["duplicate"] * 10 + ["ignored"]
    ids = [r.delivery_id for r in receipts]
    assert len(set(ids[:40])) == 40
    assert ids[40:50] == ids[:10]  # a repeat answers with the first delivery's id
    assert "no email address" in receipts[-1].reason
