"""BRIDGE_ADMIN: the admin and /metrics on a port of their own, or nowhere, so that the port
Stripe reaches answers only /webhooks/* and /healthz. Real ``loops-bridge serve`` processes,
as in tests/test_end_to_end.py; each test sets BRIDGE_ADMIN through ``admin`` ("port" stands
for a free port)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.helpers import fixture_bytes
from tests.servers import (
    ADMIN_PASSWORD,
    Bridge,
    Sandbox,
    answers,
    bridge_env,
    cli,
    free_port,
    wait_until,
)
from tests.test_end_to_end import INVOICE_PAID, SECRET, deliver, delivery, make_endpoint

# Everything the operator's side answers; the public port must not tell these apart from a
# path that never existed.
OPERATOR_PATHS = ["/admin", "/admin/", "/admin/login", "/admin/static/admin.css", "/metrics"]
NOT_FOUND = {"status": "rejected", "reason": "not found"}


@pytest.fixture
def env(tmp_path: Path, admin: str) -> dict[str, str]:
    return bridge_env(tmp_path, BRIDGE_ADMIN=str(free_port()) if admin == "port" else admin)


def admin_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['BRIDGE_ADMIN']}"


def assert_only_webhooks(bridge: Bridge) -> None:
    never = httpx.get(f"{bridge.url}/no-such-page")
    assert (never.status_code, never.json()) == (404, NOT_FOUND)
    for path in OPERATOR_PATHS:
        answer = httpx.get(bridge.url + path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == never.headers["content-type"], path
        assert answer.content == never.content, path
    signed_in = httpx.post(f"{bridge.url}/admin/login", data={"password": ADMIN_PASSWORD})
    assert (signed_in.status_code, signed_in.json()) == (404, NOT_FOUND)
    assert httpx.get(f"{bridge.url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("admin", ["port"])
def test_an_admin_port_takes_the_admin_and_metrics_off_the_public_port(
    env: dict[str, str], sandbox: Sandbox, bridge: Bridge
) -> None:
    endpoint = make_endpoint(env, signing_secret=SECRET)
    answer = deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))
    assert answer["status"] == "queued"
    delivery(env, answer["id"], until="delivered")
    assert_only_webhooks(bridge)

    admin = admin_url(env)
    wait_until(lambda: answers(f"{admin}/healthz"), what="the admin port to listen")
    assert httpx.get(f"{admin}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{admin}/admin").headers["location"] == "/admin/"
    sign_in = httpx.get(f"{admin}/admin/login")
    assert sign_in.status_code == 200 and 'name="password"' in sign_in.text
    with httpx.Client(base_url=admin) as client:
        signed_in = client.post(
            "/admin/login", data={"password": ADMIN_PASSWORD, "next": "/admin/"}
        )
        assert signed_in.status_code == 303
        assert client.get("/admin/").status_code == 200
    scraped = httpx.get(f"{admin}/metrics")
    assert scraped.status_code == 200
    assert 'loops_bridge_webhooks_total{outcome="queued"} 1.0' in scraped.text
    assert 'loops_bridge_deliveries{status="delivered"} 1.0' in scraped.text
    assert httpx.get(f"{admin}/webhooks/{endpoint}").status_code == 404

    # One SIGTERM stops both servers gracefully; the worker and the inbox ran once.
    assert bridge.stop() in (0, -15)
    assert not answers(f"{bridge.url}/healthz") and not answers(f"{admin}/healthz")
    log = bridge.log()
    assert f"admin at {admin}/admin" in log
    assert f"port {env['BRIDGE_PORT']} serves only /webhooks/* and /healthz" in log
    assert log.count("Application startup complete") == 1
    assert log.count("Application shutdown complete") == 1
    assert log.count(", sending to ") == 1  # "delivery worker ... started, sending to ..."


@pytest.mark.parametrize("admin", ["off"])
def test_admin_off_serves_no_admin_and_no_metrics_but_still_delivers(
    env: dict[str, str], sandbox: Sandbox, bridge: Bridge
) -> None:
    endpoint = make_endpoint(env, signing_secret=SECRET)
    answer = deliver(bridge, endpoint, fixture_bytes(INVOICE_PAID))
    shown = delivery(env, answer["id"], until="delivered")
    assert [c["path"] for c in shown["loops_calls"]] == ["/contacts/create"]
    assert sandbox.get("contacts")[0]["email"] == "test12@email.com"
    assert_only_webhooks(bridge)
    assert "BRIDGE_ADMIN=off" in bridge.log()


@pytest.mark.parametrize("admin", ["yes", "0", "65536", "8000/admin"])
def test_a_bad_admin_setting_stops_serve_at_start(env: dict[str, str]) -> None:
    done = cli(env, "serve", check=False)
    assert done.returncode == 2
    assert f"BRIDGE_ADMIN={env['BRIDGE_ADMIN']!r} is not valid" in done.stderr


@pytest.mark.parametrize("admin", ["port"])
@pytest.mark.parametrize("how", ["BRIDGE_PORT", "--port"])
def test_the_admin_cannot_share_the_webhooks_port(env: dict[str, str], how: str) -> None:
    if how == "BRIDGE_PORT":
        env["BRIDGE_PORT"] = env["BRIDGE_ADMIN"]
        done = cli(env, "serve", check=False)
    else:
        done = cli(env, "serve", "--port", env["BRIDGE_ADMIN"], check=False)
    assert done.returncode == 2
    assert f"BRIDGE_ADMIN={env['BRIDGE_ADMIN']} is the port the webhooks are served on" in (
        done.stderr
    )


@pytest.mark.parametrize("admin", ["port"])
def test_an_admin_port_in_use_stops_the_whole_process(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["BRIDGE_ADMIN"])))
        taken.listen()
        done = cli(env, "serve", check=False)
    assert done.returncode == 1
    assert "address already in use" in done.stderr
    assert "Application shutdown complete" in done.stderr  # the public server stopped too
