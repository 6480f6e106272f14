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
from tests.harness import ADMIN_PASSWORD, Harness


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
    with Harness(tmp_path, worker=False, BRIDGE_PUBLIC_URL="https://hooks.example.com") as admin:
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


def test_wrong_password_says_what_to_check_and_guessing_is_slowed(admin: Harness, caplog):
    transport = httpx.ASGITransport(app=admin.app, client=("203.0.113.7", 4000))

    async def guesses() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as c:
            return [
                await c.post("/admin/login", data={"password": f"guess {i}", "next": "/admin/"})
                for i in range(5)
            ]

    answers = admin.run(guesses())
    assert {g.status_code for g in answers} == {401}
    assert "BRIDGE_ADMIN_PASSWORD" in answers[0].text
    assert "slowing it down" in caplog.text and "203.0.113.7" in caplog.text
    # The delay itself is read off the Guard, rather than waited for:
    g = auth.Guard(engine=admin.engine)
    for _ in range(7):
        g.check_password("198.51.100.1", "nope")
    assert g.delay_for("198.51.100.1") == 4.0
    assert g.delay_for("192.0.2.9") == 0.0  # another client is not slowed
    assert admin.sign_in().status_code == 303  # the right password still works


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
