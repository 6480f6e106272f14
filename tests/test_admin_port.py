"""BRIDGE_ADMIN: the admin and /metrics on a port of their own, or nowhere, so that the port
Stripe reaches answers only /webhooks/* and /healthz.

What each port serves is checked in-process, on the apps ``bridge.app.create_apps`` makes
(tests/harness.py). What only a ``loops-bridge serve`` process shows is checked on one: that
it serves both ports, says where each is and stops both on one SIGTERM, and the settings it
refuses at start. Each of those sets BRIDGE_ADMIN through ``admin`` ("port" stands for a
free port)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest

from bridge.app import create_apps
from tests.harness import ADMIN_PASSWORD, Harness
from tests.helpers import fixture_bytes
from tests.servers import Bridge, answers, bridge_env, cli, free_port, wait_until

SECRET = "whsec_adminPortSecretAAAAAAAAAAAA"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
# Everything the operator's side answers; the public port must not tell these apart from a
# path that never existed.
OPERATOR_PATHS = ["/admin", "/admin/", "/admin/login", "/admin/static/admin.css", "/metrics"]
NOT_FOUND = {"status": "rejected", "reason": "not found"}


def delivered(bridge: Harness) -> str:
    """A signed invoice.paid webhook, delivered to Loops; the endpoint's id."""
    endpoint = bridge.endpoint(secret=SECRET)
    answer = bridge.webhook(endpoint, fixture_bytes(INVOICE_PAID), SECRET).json()
    assert answer["status"] == "queued"
    (shown,) = bridge.settled(1)
    assert shown["status"] == "delivered"
    return endpoint


def assert_only_webhooks(bridge: Harness) -> None:
    never = bridge.get("/no-such-page")
    assert (never.status_code, never.json()) == (404, NOT_FOUND)
    for path in OPERATOR_PATHS:
        answer = bridge.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == never.headers["content-type"], path
        assert answer.content == never.content, path
    signed_in = bridge.run(bridge.client.post("/admin/login", data={"password": ADMIN_PASSWORD}))
    assert (signed_in.status_code, signed_in.json()) == (404, NOT_FOUND)
    assert bridge.get("/healthz").json() == {"status": "ok"}


def test_an_admin_port_takes_the_admin_and_metrics_off_the_public_port(tmp_path: Path) -> None:
    with Harness(tmp_path, BRIDGE_ADMIN="8199") as bridge:
        endpoint = delivered(bridge)
        assert_only_webhooks(bridge)

        operator = create_apps(bridge.settings, bridge.engine, run_worker=False).admin
        assert operator is not None

        async def on_the_admin_port() -> dict[str, httpx.Response]:
            transport = httpx.ASGITransport(app=operator)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8199"
            ) as client:
                return {
                    "healthz": await client.get("/healthz"),
                    "admin": await client.get("/admin"),
                    "login form": await client.get("/admin/login"),
                    "sign in": await client.post(
                        "/admin/login", data={"password": ADMIN_PASSWORD, "next": "/admin/"}
                    ),
                    "overview": await client.get("/admin/"),
                    "metrics": await client.get("/metrics"),
                    "webhook": await client.post(f"/webhooks/{endpoint}", content=b"{}"),
                }

        seen = bridge.run(on_the_admin_port())
    assert seen["healthz"].json() == {"status": "ok"}
    assert seen["admin"].headers["location"] == "/admin/"
    assert seen["login form"].status_code == 200 and 'name="password"' in seen["login form"].text
    assert seen["sign in"].status_code == 303
    assert seen["overview"].status_code == 200 and "<h1>Overview" in seen["overview"].text
    scraped = seen["metrics"]
    assert scraped.status_code == 200
    assert re.search(r'^loops_bridge_webhooks_total\{outcome="queued"\} \d', scraped.text, re.M)
    assert 'loops_bridge_deliveries{status="delivered"} 1.0' in scraped.text
    assert seen["webhook"].status_code == 404


def test_admin_off_serves_no_admin_and_no_metrics_but_still_delivers(tmp_path: Path) -> None:
    with Harness(tmp_path, BRIDGE_ADMIN="off") as bridge:
        delivered(bridge)
        assert [c["path"] for c in bridge.loops_calls()] == ["/api/v1/contacts/create"]
        assert bridge.loops_get("contacts")[0]["email"] == "test12@email.com"
        assert_only_webhooks(bridge)


# --- the serve process ------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, admin: str) -> dict[str, str]:
    return bridge_env(tmp_path, BRIDGE_ADMIN=str(free_port()) if admin == "port" else admin)


@pytest.mark.parametrize("admin", ["port"])
def test_one_serve_process_runs_both_ports_and_one_sigterm_stops_both(
    env: dict[str, str],
) -> None:
    bridge = Bridge(env)
    admin = f"http://127.0.0.1:{env['BRIDGE_ADMIN']}"
    wait_until(lambda: answers(f"{admin}/healthz"), what="the admin port to listen")
    assert httpx.get(f"{admin}/admin/login").status_code == 200
    assert httpx.get(f"{bridge.url}/admin/login").status_code == 404

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
def test_serve_says_when_the_admin_is_off(env: dict[str, str]) -> None:
    bridge = Bridge(env)
    assert httpx.get(f"{bridge.url}/admin/login").status_code == 404
    assert bridge.stop() in (0, -15)
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
