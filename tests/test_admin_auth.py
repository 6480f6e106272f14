"""Signing in to /admin, and that nothing behind it answers an anonymous or cross-site
request. The app runs in-process (tests/harness.py) without its delivery worker."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select
from starlette.routing import Mount, Route

from bridge.admin import auth
from bridge.models import AdminPassword, AdminSession
from tests.harness import ADMIN_PASSWORD, PUBLIC_URL, Harness


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Harness]:
    """The bridge without its worker; nobody signed in yet."""
    with Harness(tmp_path, worker=False) as started:
        yield started


def admin_routes(harness: Harness) -> list[tuple[str, str]]:
    mount = next(r for r in harness.app.routes if isinstance(r, Mount) and r.path == "/admin")
    found = []
    for route in mount.routes:
        if isinstance(route, Route) and route.path not in ("/login",):
            path = "/admin" + re.sub(r"\{[^}]+\}", "1", route.path)
            found += [(method, path) for method in sorted(route.methods or []) if method != "HEAD"]
    return found


def post(harness: Harness, url: str, **headers: str) -> httpx.Response:
    """A POST without a form, as a script or another site's page would send it."""
    return harness.run(harness.client.post(url, headers=headers))


def test_every_admin_route_refuses_an_anonymous_request(admin: Harness):
    routes = admin_routes(admin)
    assert ("GET", "/admin/") in routes and len(routes) >= 3
    for method, path in routes:
        answer = admin.run(admin.client.request(method, path))
        if method == "GET":
            assert answer.status_code == 303, (method, path)
            assert answer.headers["location"].startswith("/admin/login?next="), (method, path)
        else:
            assert answer.status_code == 401, (method, path)
            assert "Your session has ended" in answer.text
        assert "Traceback" not in answer.text


def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(admin: Harness):
    signed_in = admin.sign_in()
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # BRIDGE_PUBLIC_URL is http here
    assert admin.get("/admin/deliveries").status_code == 200

    signed_out = admin.form("/admin/logout")
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/admin/login")
    assert "Signed out." in admin.get("/admin/login").text
    after_logout = admin.get("/admin/deliveries")
    assert after_logout.status_code == 303 and "/admin/login" in after_logout.headers["location"]
    with Session(admin.engine) as session:
        assert session.exec(select(AdminSession)).all() == []


def test_cookie_is_secure_behind_https(tmp_path: Path):
    with Harness(
        tmp_path,
        worker=False,
        BRIDGE_PUBLIC_URL="https://hooks.example.com",
        BRIDGE_ALLOWED_HOSTS="bridge.test",  # the harness's own address
    ) as admin:
        assert "Secure" in admin.sign_in().headers["set-cookie"]


def test_each_sign_in_gets_a_new_session(admin: Harness):
    first, second = admin.sign_in(), admin.sign_in()
    token = lambda r: r.headers["set-cookie"].split(";")[0].split("=", 1)[1]  # noqa: E731
    assert token(first) != token(second)
    with Session(admin.engine) as session:
        assert len(session.exec(select(AdminSession)).all()) == 1  # the old one was closed


def test_expired_session_is_refused(admin: Harness):
    admin.sign_in()
    with Session(admin.engine) as session:
        for row in session.exec(select(AdminSession)):
            row.expires_at = time.time() - 1
            session.add(row)
        session.commit()
    page = admin.get("/admin/deliveries")
    assert page.status_code == 303 and "/admin/login" in page.headers["location"]


def sign_in_from(harness: Harness, client: str, passwords: list[str]) -> list[httpx.Response]:
    """Sign-ins from the address ``client``, one after the other."""
    transport = httpx.ASGITransport(app=harness.app, client=(client, 4000))

    async def sign_ins() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as c:
            return [
                await c.post("/admin/login", data={"password": p, "next": "/admin/"})
                for p in passwords
            ]

    return harness.run(sign_ins())


def test_past_its_budget_a_client_is_refused_without_a_check(admin: Harness, caplog):
    answers = sign_in_from(admin, "203.0.113.7", [f"guess {i}" for i in range(11)])
    assert [a.status_code for a in answers] == [401] * 10 + [429]
    assert "BRIDGE_ADMIN_PASSWORD" in answers[0].text
    refused = answers[-1]
    assert 590 <= int(refused.headers["retry-after"]) <= 600
    assert "Too many wrong passwords from your address. Try again in 10 minutes." in refused.text
    assert "10 wrong passwords from 203.0.113.7" in caplog.text
    # Not even the right password is checked from there now; other clients still sign in.
    assert sign_in_from(admin, "203.0.113.7", [ADMIN_PASSWORD])[0].status_code == 429
    assert admin.sign_in().status_code == 303


def test_a_flood_of_new_addresses_neither_frees_a_client_nor_grows_the_table():
    """Today's table was emptied past 10,000 addresses. Each address is remembered only
    with a wrong password, and those are bounded overall, so the table stays small."""
    now = [0.0]
    budget = auth.Budget(clock=lambda: now[0])
    for _ in range(auth.CLIENT_BUDGET):
        assert not isinstance(budget.take("198.51.100.1"), auth.Refused)
    assert budget.take("198.51.100.1") == auth.Refused(600, "client")
    flood = [budget.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}") for i in range(10_001)]
    assert sum(not isinstance(f, auth.Refused) for f in flood) == 20  # 30 a minute in all
    assert {f for f in flood if isinstance(f, auth.Refused)} == {auth.Refused(60, "everyone")}
    for minute in range(1, 10):  # then 30 new addresses a minute, for as long as allowed
        now[0] = minute * 60.0
        for i in range(30):
            assert not isinstance(budget.take(f"192.0.2.{minute}.{i}"), auth.Refused)
        assert budget.take("198.51.100.1") == auth.Refused(600 - minute * 60, "client")
        assert len(budget) <= 300
    now[0] = 600.0  # ten minutes after its guesses: that client may try again
    assert not isinstance(budget.take("198.51.100.1"), auth.Refused)
    assert len(budget) <= 300


def test_a_right_password_or_a_busy_refusal_costs_nothing_from_the_budget():
    budget = auth.Budget()
    for i in range(100):
        token = budget.take(f"192.0.2.{i}")
        assert not isinstance(token, auth.Refused)
        budget.give_back(f"192.0.2.{i}", token)
    assert budget.spent("192.0.2.1") == (0, 0) and len(budget) == 0


def test_a_changed_password_ends_every_session(tmp_path: Path, caplog):
    with Harness(tmp_path, worker=False) as before:
        before.sign_in()
        cookie = before.client.cookies[auth.COOKIE]
    with Harness(tmp_path, worker=False) as same:  # a restart with the same password
        same.client.cookies.set(auth.COOKIE, cookie, path="/admin")
        assert same.get("/admin/deliveries").status_code == 200
    with Harness(tmp_path, worker=False, BRIDGE_ADMIN_PASSWORD="a new password, longer") as after:
        after.client.cookies.set(auth.COOKIE, cookie, path="/admin")
        refused = after.get("/admin/deliveries")
        assert refused.status_code == 303 and "/admin/login" in refused.headers["location"]
        assert "BRIDGE_ADMIN_PASSWORD has changed, so every session has ended (1)" in caplog.text
        old = after.form("/admin/login", password=ADMIN_PASSWORD, next="/admin/")
        assert old.status_code == 401
        assert after.sign_in("a new password, longer").status_code == 303


def test_sign_out_everywhere_ends_every_session(admin: Harness):
    admin.sign_in()
    elsewhere = admin.client.cookies[auth.COOKIE]
    admin.client.cookies.clear()
    admin.sign_in()
    page = admin.get("/admin/")
    assert 'action="/admin/logout-everywhere"' in page.text
    refused = post(admin, "/admin/logout-everywhere", Origin="https://evil.example")
    assert refused.status_code == 403
    assert admin.get("/admin/deliveries").status_code == 200

    done = admin.form("/admin/logout-everywhere")
    assert (done.status_code, done.headers["location"]) == (303, "/admin/login")
    assert "Signed out everywhere: every session has ended" in admin.get("/admin/login").text
    assert admin.get("/admin/deliveries").status_code == 303
    admin.client.cookies.set(auth.COOKIE, elsewhere, path="/admin")
    assert admin.get("/admin/deliveries").status_code == 303
    with Session(admin.engine) as session:
        assert session.exec(select(AdminSession)).all() == []


def test_a_sign_in_form_larger_than_any_password_is_refused_unread(admin: Harness):
    answer = admin.form("/admin/login", password="x" * 10_000, next="/admin/")
    assert answer.status_code == 413
    assert "in 4096 bytes at most" in answer.text

    async def chunked() -> httpx.Response:  # no length said: read as far as it goes
        async def body():  # type: ignore[no-untyped-def]
            yield b"password=" + b"x" * 1000

        return await admin.client.post("/admin/login", content=body())

    assert admin.run(chunked()).status_code == 413


@pytest.mark.parametrize(
    ("host", "allowed", "status"),
    [
        ("bridge.test", "", 200),  # BRIDGE_PUBLIC_URL's
        ("localhost:8001", "", 200),
        ("127.0.0.1:8001", "", 200),
        ("[::1]:8001", "", 200),
        ("evil.example", "", 400),
        ("bridge.test.evil.example", "", 400),
        ("admin.internal:8001", "admin.internal", 200),
        ("evil.example", "*", 200),
    ],
)
def test_the_admin_answers_only_its_own_host_names(
    tmp_path: Path, host: str, allowed: str, status: int
):
    with Harness(tmp_path, worker=False, BRIDGE_ALLOWED_HOSTS=allowed) as admin:
        answer = admin.run(admin.client.get("/admin/login", headers={"Host": host}))
    assert answer.status_code == status
    if status == 400:
        assert "Unknown host name" in answer.text and "BRIDGE_ALLOWED_HOSTS" in answer.text
        assert answer.headers["x-frame-options"] == "DENY"


def test_generated_password_is_printed_once_and_only_hashed(tmp_path: Path, capfd):
    with Harness(tmp_path, worker=False, BRIDGE_ADMIN_PASSWORD="") as first:
        printed = capfd.readouterr().err
        match = re.search(r"admin password \(shown once, only a hash is kept\): (\S+)", printed)
        assert match
        with Session(first.engine) as session:
            stored = session.get(AdminPassword, 1)
        assert stored is not None
        assert match.group(1) not in stored.hash and stored.hash.startswith("scrypt$")
    # Second start: nothing printed, the same password works.
    with Harness(tmp_path, worker=False, BRIDGE_ADMIN_PASSWORD="") as second:
        assert "admin password" not in capfd.readouterr().err
        assert second.sign_in(match.group(1)).status_code == 303
        refused = second.form("/admin/login", password=ADMIN_PASSWORD, next="/admin/")
        assert refused.status_code == 401


def test_cross_site_form_posts_are_refused(admin: Harness):
    admin.sign_in()
    by_fetch_site = post(admin, "/admin/logout", **{"Sec-Fetch-Site": "cross-site"})
    by_origin = post(admin, "/admin/logout", Origin="https://evil.example")
    assert by_fetch_site.status_code == 403 and by_origin.status_code == 403
    assert "Cross-site request refused" in by_origin.text
    assert "the browser marked this form submission as cross-site" in by_fetch_site.text
    assert "content-security-policy" in by_origin.headers  # a refusal is a page like any
    assert admin.get("/admin/deliveries").status_code == 200  # still signed in
    same_site = post(admin, "/admin/logout", **{"Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code == 303


@pytest.mark.parametrize("path", ["/admin/login", "/admin/", "/admin/static/admin.css"])
def test_admin_pages_carry_security_headers(admin: Harness, path: str):
    page = admin.get(path)
    assert page.status_code in (200, 303)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
