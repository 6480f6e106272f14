"""Signing in to /admin, and that nothing behind it answers an anonymous or cross-site
request. The app runs in-process (httpx's ASGI transport) on a real SQLite database."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select
from starlette.routing import Mount, Route

from bridge import db
from bridge.admin import auth
from bridge.app import create_app
from bridge.models import AdminPassword, AdminSession
from bridge.settings import load

PASSWORD = "a long admin password"


def make_app(tmp_path: Path, **env: str):
    settings = load({"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", **env})
    engine = db.connect(settings.database_url)
    return create_app(settings, engine, run_worker=False), engine


def requests(app, *calls):
    """Run ``calls`` (functions of a client) in order on one client; return the responses."""

    async def run():
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            return [await call(client) for call in calls]

    return asyncio.run(run())


def sign_in(password: str = PASSWORD):
    return lambda c: c.post("/admin/login", data={"password": password, "next": "/admin/"})


def admin_routes(app) -> list[tuple[str, str]]:
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/admin")
    found = []
    for route in mount.routes:
        if isinstance(route, Route) and route.path not in ("/login",):
            path = "/admin" + re.sub(r"\{[^}]+\}", "1", route.path)
            found += [(method, path) for method in sorted(route.methods or []) if method != "HEAD"]
    return found


def test_every_admin_route_refuses_an_anonymous_request(tmp_path):
    app, _ = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    routes = admin_routes(app)
    assert ("GET", "/admin/") in routes and len(routes) >= 3
    answers = requests(app, *(lambda c, m=m, p=p: c.request(m, p) for m, p in routes))
    for (method, path), answer in zip(routes, answers, strict=True):
        if method == "GET":
            assert answer.status_code == 303, (method, path)
            assert answer.headers["location"].startswith("/admin/login?next="), (method, path)
        else:
            assert answer.status_code == 401, (method, path)
        assert "Traceback" not in answer.text


def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(tmp_path):
    app, engine = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    signed_in, signed_out, after_logout = requests(
        app,
        sign_in(),
        lambda c: c.post("/admin/logout"),
        lambda c: c.get("/admin/deliveries"),
    )
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # BRIDGE_PUBLIC_URL is http here
    assert signed_out.status_code == 303
    assert after_logout.status_code == 303 and "/admin/login" in after_logout.headers["location"]
    with Session(engine) as session:
        assert session.exec(select(AdminSession)).all() == []


def test_cookie_is_secure_behind_https(tmp_path):
    app, _ = make_app(
        tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD, BRIDGE_PUBLIC_URL="https://hooks.example.com"
    )
    (signed_in,) = requests(app, sign_in())
    assert "Secure" in signed_in.headers["set-cookie"]


def test_each_sign_in_gets_a_new_session(tmp_path):
    app, engine = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    first, second = requests(app, sign_in(), sign_in())
    token = lambda r: r.headers["set-cookie"].split(";")[0].split("=", 1)[1]  # noqa: E731
    assert token(first) != token(second)
    with Session(engine) as session:
        assert len(session.exec(select(AdminSession)).all()) == 1  # the old one was closed


def test_expired_session_is_refused(tmp_path):
    app, engine = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)

    def expire(_client):
        with Session(engine) as session:
            for row in session.exec(select(AdminSession)):
                row.expires_at = time.time() - 1
                session.add(row)
            session.commit()

        async def nothing():
            return None

        return nothing()

    _, _, page = requests(app, sign_in(), expire, lambda c: c.get("/admin/deliveries"))
    assert page.status_code == 303 and "/admin/login" in page.headers["location"]


def test_wrong_password_says_what_to_check_and_guessing_is_slowed(tmp_path, caplog):
    app, _ = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    guesses = requests(app, *(sign_in(f"guess {i}") for i in range(5)))
    assert {g.status_code for g in guesses} == {401}
    assert "BRIDGE_ADMIN_PASSWORD" in guesses[0].text
    assert "slowing it down" in caplog.text and "203.0.113.7" in caplog.text
    # The delay itself is read off the Guard, rather than waited for:
    g = auth.Guard(engine=db.connect(f"sqlite:///{tmp_path / 'g.db'}"))
    for _ in range(7):
        g.check_password("198.51.100.1", "nope")
    assert g.delay_for("198.51.100.1") == 4.0
    assert g.delay_for("192.0.2.9") == 0.0  # another client is not slowed


def test_generated_password_is_printed_once_and_only_hashed(tmp_path, capfd):
    _, engine = make_app(tmp_path)
    printed = capfd.readouterr().err
    match = re.search(r"admin password \(shown once, only a hash is kept\): (\S+)", printed)
    assert match
    with Session(engine) as session:
        stored = session.get(AdminPassword, 1)
    assert match.group(1) not in stored.hash and stored.hash.startswith("scrypt$")
    app, _ = make_app(tmp_path)  # second start: nothing printed, the same password works
    assert "admin password" not in capfd.readouterr().err
    (signed_in,) = requests(app, sign_in(match.group(1)))
    assert signed_in.status_code == 303


def test_cross_site_form_posts_are_refused(tmp_path):
    app, _ = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    _, by_fetch_site, by_origin, same_site = requests(
        app,
        sign_in(),
        lambda c: c.post("/admin/logout", headers={"Sec-Fetch-Site": "cross-site"}),
        lambda c: c.post("/admin/logout", headers={"Origin": "https://evil.example"}),
        lambda c: c.post("/admin/logout", headers={"Sec-Fetch-Site": "same-origin"}),
    )
    assert by_fetch_site.status_code == 403 and by_origin.status_code == 403
    assert "Cross-site request refused" in by_origin.text
    assert same_site.status_code == 303


@pytest.mark.parametrize("path", ["/admin/login", "/admin/"])
def test_admin_pages_carry_security_headers(tmp_path, path):
    app, _ = make_app(tmp_path, BRIDGE_ADMIN_PASSWORD=PASSWORD)
    (page,) = requests(app, lambda c: c.get(path))
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
