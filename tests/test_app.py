"""The web app in-process (httpx's ASGI transport) against a real SQLite database: the
answers Stripe gets when something other than the signature is wrong."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import text

from bridge import db
from bridge.app import create_app
from bridge.settings import load
from tests.harness import Harness
from tests.helpers import fixture_bytes, invoice_endpoint, signed_headers

SECRET = "whsec_appTestSecretFFFFFFFFFFFFFFFF"


def post_all(
    tmp_path: Path, bodies: list[bytes], break_storage: bool = False
) -> list[httpx.Response]:
    settings = load({"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    engine = db.connect(settings.database_url)
    endpoint = invoice_endpoint(engine, SECRET)
    if break_storage:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE loops_calls"))
            conn.execute(text("DROP TABLE deliveries"))
    app = create_app(settings, engine, run_worker=False)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            answers = [
                await client.post(
                    f"/webhooks/{endpoint}", content=b, headers=signed_headers(b, SECRET)
                )
                for b in bodies
            ]
        await app.state.inbox.drain()  # what the lifespan does on shutdown
        return answers

    return asyncio.run(run())


def test_storage_failure_answers_503_so_stripe_retries(tmp_path):
    (response,) = post_all(
        tmp_path, [fixture_bytes("captured-test-mode/invoice.paid.event.json")], True
    )
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "storage unavailable; retry later",
    }


def test_signed_bodies_that_are_not_stripe_events_get_a_reason(tmp_path):
    bodies = [
        b"not json at all",
        b"[1, 2, 3]",
        fixture_bytes("stripe-python/thin-event.v2.core.event.json"),
        "caf\xe9".encode("latin-1"),
    ]
    answers = post_all(tmp_path, bodies)
    assert [a.status_code for a in answers] == [400, 400, 400, 400]
    reasons = [a.json()["reason"] for a in answers]
    assert "not JSON" in reasons[0]
    assert "not an object" in reasons[1]
    assert "snapshot" in reasons[2]
    assert "UTF-8" in reasons[3]


def test_healthz(tmp_path):
    settings = load({"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}"})
    app = create_app(settings, db.connect(settings.database_url), run_worker=False)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            return await client.get("/healthz")

    assert asyncio.run(get()).json() == {"status": "ok"}


def test_paths_the_public_port_does_not_serve_answer_one_json_404_never_a_redirect(harness):
    """A webhook URL missing its endpoint id, with or without the slash, is told so rather
    than sent somewhere else (a redirect would make Stripe report a 3xx, not the reason)."""
    paths = (("POST", "/webhooks"), ("GET", "/healthz/"), ("POST", "/nothing"), ("POST", "/"))
    for method, path in paths:
        answer = harness.run(harness.client.request(method, path))
        assert answer.status_code == 404, (method, path)
        assert answer.json() == {"status": "rejected", "reason": "not found"}
    empty_id = harness.run(harness.client.post("/webhooks/"))
    assert (empty_id.status_code, empty_id.json()["reason"]) == (
        404,
        "unknown endpoint: check the URL",
    )


def test_a_person_opening_the_bridges_address_lands_on_the_admin(tmp_path):
    with Harness(tmp_path, worker=False) as on_this_port:
        home = on_this_port.get("/")
        assert (home.status_code, home.headers["location"]) == (307, "/admin/")
    (tmp_path / "own-port").mkdir()
    with Harness(tmp_path / "own-port", worker=False, BRIDGE_ADMIN="8001") as elsewhere:
        answer = elsewhere.get("/")  # the public port says nothing of an admin elsewhere
        assert (answer.status_code, answer.json()["reason"]) == (404, "not found")
