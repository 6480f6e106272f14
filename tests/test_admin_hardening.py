"""Issue 12's attacks on a running bridge, each against a server on loopback: guessing the
admin password through many connections and forged addresses, DNS rebinding through a
forged Host, headers of megabytes, and clients too slow to finish their headers.

``loops-bridge serve`` runs as a process, with the admin on a port of its own, where what
the process does with forwarded headers and its HTTP protocol is the point. The slow clients
meet the same protocol (``bridge.server``) in uvicorn in a thread, with its deadline made
short rather than waited for."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from bridge import server
from bridge.app import create_apps
from tests.harness import Harness, Served
from tests.servers import ADMIN_PASSWORD, Bridge, answers, bridge_env, free_port, wait_until


class Admin:
    """``loops-bridge serve`` with BRIDGE_ADMIN=<a port>, and that port's URL."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.bridge = Bridge(bridge_env(tmp_path, BRIDGE_ADMIN=str(self.port), **env))
        self.url = f"http://127.0.0.1:{self.port}"
        # Bridge() waits for the public port; the admin's may start listening a moment later.
        wait_until(lambda: answers(self.url + "/admin/login"), what="the admin port")


@pytest.fixture
def started() -> Iterator[list[Admin]]:
    """The servers a test started, stopped after it."""
    servers: list[Admin] = []
    yield servers
    for admin in servers:
        assert admin.bridge.stop() in (0, -15)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    """One ``serve`` with nothing but its admin port set, for the tests that only need such a
    server: none of them changes what another sees (the wrong passwords of
    test_forwarded_addresses... lock 127.0.0.1 out of signing in, which no other tries)."""
    admin = Admin(tmp_path_factory.mktemp("plain"))
    yield admin
    assert admin.bridge.stop() in (0, -15)


def guesses(url: str, forwarded_for: list[str], password: str = "") -> list[httpx.Response]:
    """A wrong password (or ``password``) sent from each forwarded address, all at once, each
    on a connection of its own."""

    async def send() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(forwarded_for))
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/admin/login",
                        data={"password": password or f"guess {i}", "next": "/admin/"},
                        headers={"X-Forwarded-For": address},
                    )
                    for i, address in enumerate(forwarded_for)
                )
            )

    return asyncio.run(send())


def test_guessing_through_any_number_of_connections_checks_30_a_minute(started, tmp_path):
    admin = Admin(tmp_path, BRIDGE_TRUSTED_PROXIES="127.0.0.1")
    started.append(admin)
    signed_in = httpx.Client(base_url=admin.url)
    assert signed_in.post("/admin/login", data={"password": ADMIN_PASSWORD}).status_code == 303

    # One forwarded address alone: its own budget, 10, then refused unchecked.
    alone = [r for _ in range(11) for r in guesses(admin.url, ["198.51.100.7"])]
    assert [r.status_code for r in alone] == [401] * 10 + [429]
    assert "from your address" in alone[-1].text

    # Then many addresses, 40 connections at a time, until none is checked any more.
    checked, refused, wave = 10, [], 0
    while not refused or "paused for everyone" not in refused[-1].text:
        answers = guesses(admin.url, [f"10.0.{wave}.{i}" for i in range(40)])
        checked += sum(r.status_code == 401 for r in answers)
        refused += [r for r in answers if r.status_code != 401]
        wave += 1
        assert wave < 100, "guesses were still checked after 100 waves"
    assert checked == 30
    assert {r.status_code for r in refused} == {429}
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    # Checks past two at once were refused as "busy", not queued; the rest, by the budget.
    assert any("checking other sign-ins" in r.text for r in refused)

    (right,) = guesses(admin.url, ["192.0.2.1"], ADMIN_PASSWORD)
    assert right.status_code == 429 and "paused for everyone" in right.text
    assert signed_in.get("/admin/").status_code == 200  # an open session keeps working
    signed_in.close()
    log = admin.bridge.log()
    assert "10 wrong passwords from 198.51.100.7" in log
    assert "30 wrong passwords in the last minute" in log


def test_forwarded_addresses_are_ignored_unless_from_a_trusted_proxy(plain: Admin):
    admin = plain  # BRIDGE_TRUSTED_PROXIES unset
    answers = [r for i in range(11) for r in guesses(admin.url, [f"198.51.100.{i}"])]
    assert [r.status_code for r in answers] == [401] * 10 + [429]
    log = admin.bridge.log()
    assert "10 wrong passwords from 127.0.0.1" in log
    assert "198.51.100." not in log


def test_a_forged_host_is_refused_so_dns_rebinding_gets_nothing(plain: Admin):
    admin = plain
    rebound = f"evil.example:{admin.port}"
    page = httpx.get(f"{admin.url}/admin/login", headers={"Host": rebound})
    assert page.status_code == 400 and "Unknown host name" in page.text
    # The cross-site check compares Origin with Host: both forged, the host check refuses.
    sign_in = httpx.post(
        f"{admin.url}/admin/login",
        data={"password": ADMIN_PASSWORD},
        headers={"Host": rebound, "Origin": f"http://{rebound}"},
    )
    assert sign_in.status_code == 400 and "set-cookie" not in sign_in.headers
    for host in (f"127.0.0.1:{admin.port}", f"localhost:{admin.port}"):
        assert httpx.get(f"{admin.url}/admin/login", headers={"Host": host}).status_code == 200
    # The webhook port answers under the name Stripe uses, whatever it is.
    webhook = httpx.post(
        f"{admin.bridge.url}/webhooks/ep_AAAAAAAAAAAAAAAAAAAAAA",
        headers={"Host": "hooks.example.com"},
    )
    assert webhook.status_code == 404 and webhook.json()["status"] == "rejected"


def test_a_header_of_megabytes_is_refused_on_both_ports(plain: Admin):
    admin = plain
    for url in (f"{admin.url}/admin/login", f"{admin.bridge.url}/webhooks/ep_x"):
        answer = httpx.get(url, headers={"X-Padding": "a" * 5_000_000}, timeout=30)
        assert answer.status_code == 431, url
        assert "The request headers are over 65536 bytes" in answer.text
    assert httpx.get(f"{admin.url}/admin/login").status_code == 200


class Quick(server.SlowClientGuard):
    header_seconds = 0.5


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[int]:
    """The admin app in uvicorn configured as serve configures it, but with a header
    deadline of 0.5 s; its port."""
    with Harness(tmp_path, worker=False, BRIDGE_ADMIN="8001") as bridge:
        app = create_apps(bridge.settings, bridge.engine, run_worker=False).admin
        sock = Served.bound_socket()
        config = server.config(app, bridge.settings, 0, http=Quick, lifespan="off")
        uvicorn_server = uvicorn.Server(config)
        thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]})
        thread.start()
        deadline = time.monotonic() + 15
        while not uvicorn_server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield sock.getsockname()[1]
        uvicorn_server.should_exit = True
        thread.join(timeout=30)


def test_slow_clients_are_cut_off(quick: int):
    # A connection that never sends anything is closed.
    with socket.create_connection(("127.0.0.1", quick), timeout=10) as idle:
        assert idle.recv(100) == b""
    # One that sends a header line every 0.1 s, never finishing, gets a 408 and is closed.
    with socket.create_connection(("127.0.0.1", quick), timeout=10) as slow:
        slow.sendall(b"GET /admin/login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        lines = 0
        while not select.select([slow], [], [], 0.1)[0]:
            slow.sendall(b"X-Line-%d: still coming\r\n" % lines)
            lines += 1
            assert lines < 500, "the server waited for the headers for over 50 s"
        answer = slow.recv(1000)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
        # Closed: with a FIN, or with a reset when our last header lines were still unread.
        try:
            assert slow.recv(1000) == b""
        except ConnectionResetError:
            pass
    # One answered before its body came (signed out: 401), sending the rest a byte every
    # 0.1 s, is closed once the answer is out and the deadline has passed.
    with socket.create_connection(("127.0.0.1", quick), timeout=10) as trickle:
        trickle.sendall(
            b"POST /admin/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
        )
        answer, sent = b"", 0
        while True:
            if select.select([trickle], [], [], 0.1)[0]:
                try:
                    piece = trickle.recv(1000)
                except ConnectionResetError:
                    piece = b""
                if not piece:
                    break  # closed
                answer += piece
            else:
                try:
                    trickle.sendall(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                assert sent < 500, "the server waited for the body for over 50 s"
        assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 303")), answer
    # A request that is not slow is answered.
    assert httpx.get(f"http://127.0.0.1:{quick}/admin/login").status_code == 200
