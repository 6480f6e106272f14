"""Signing in and out of the admin, and the check that every other page is signed in.

    GET  /login               the sign-in form (?next= the page to go back to)
    POST /login               check the password, within the budget of guesses (``auth``):
                              past it, 429 with Retry-After and nothing checked
    POST /logout              end the session
    POST /logout-everywhere   end every session, this one too

:class:`RequireSession` lets a request through to any other page only with a valid session
cookie: without one, a GET is sent to the sign-in form and anything else gets a 401 page.
"""

from __future__ import annotations

import math
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.admin import auth
from bridge.admin.state import Admin

__all__ = ["RequireSession", "routes"]

OPEN_PATHS = ("/login", "/static/")  # inside /admin: what answers without a session
MAX_FORM_BYTES = 4096
_REFUSED = {
    "client": "Too many wrong passwords from your address. Try again in {wait}.",
    "everyone": "Too many wrong passwords were tried in the last minute, so signing in is "
    "paused for everyone. Try again in {wait}. If they were not yours, someone is guessing "
    "the password: the bridge's log says from where.",
    "busy": "The bridge is checking other sign-ins right now. Try again in {wait}.",
}


async def login_form(request: Request) -> Response:
    admin = Admin.of(request)
    return admin.render(request, "login.html", next=request.query_params.get("next", ""))


async def login(request: Request) -> Response:
    admin = Admin.of(request)
    # The one body read before signing in: not more than a sign-in form can need. (The HTTP
    # parser holds a body to its Content-Length.)
    length = request.headers.get("content-length", "")
    if not length.isdecimal() or int(length) > MAX_FORM_BYTES:
        return admin.error(
            request,
            413,
            "Sign-in refused",
            f"A sign-in form is sent with its length (Content-Length), in {MAX_FORM_BYTES} "
            "bytes at most.",
        )
    form = await request.form()
    password = str(form.get("password", ""))
    target = str(form.get("next", ""))
    if not target.startswith("/admin") or target.startswith("//"):
        target = "/admin/"
    client = request.client.host if request.client else "unknown"
    right = await admin.guard.sign_in(client, password)
    if isinstance(right, auth.Refused):
        minutes = math.ceil(right.seconds / 60)
        wait = f"{right.seconds} s" if right.seconds < 120 else f"{minutes} minutes"
        error = _REFUSED[right.who].format(wait=wait)
        refused = admin.render(request, "login.html", 429, next=target, error=error)
        refused.headers["Retry-After"] = str(right.seconds)
        return refused
    if not right:
        return admin.render(
            request,
            "login.html",
            401,
            next=target,
            error="That password is not right. Check BRIDGE_ADMIN_PASSWORD, or the "
            "password the bridge printed on its first start.",
        )
    # A new session on every sign-in: an old cookie is never promoted.
    await admin.run(admin.guard.close_session, request.cookies.get(auth.COOKIE))
    token = await admin.run(admin.guard.open_session)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.COOKIE,
        token,
        max_age=auth.SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=_secure(admin),
    )
    return response


async def logout(request: Request) -> Response:
    admin = Admin.of(request)
    await admin.run(admin.guard.close_session, request.cookies.get(auth.COOKIE))
    return _signed_out(admin, "Signed out.")


async def logout_everywhere(request: Request) -> Response:
    admin = Admin.of(request)
    await admin.run(admin.guard.close_every_session)
    return _signed_out(admin, "Signed out everywhere: every session has ended, this one too.")


def _signed_out(admin: Admin, notice: str) -> Response:
    response = admin.redirect("/admin/login", notice)
    response.delete_cookie(
        auth.COOKIE, path="/admin", httponly=True, samesite="lax", secure=_secure(admin)
    )
    return response


def _secure(admin: Admin) -> bool:
    """Whether the session cookie is sent over HTTPS only: when the bridge is reached so."""
    return admin.settings.public_url.startswith("https://")


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/logout-everywhere", logout_everywhere, methods=["POST"]),
]


class RequireSession:
    """ASGI middleware: every path but :data:`OPEN_PATHS` needs a valid session cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = await _refused(Request(scope))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _refused(request: Request) -> Response | None:
    """The answer to a request without a valid session; None when it may go on."""
    root = request.scope.get("root_path", "")
    if request.url.path.removeprefix(root).startswith(OPEN_PATHS):
        return None
    admin = Admin.of(request)
    if await admin.run(admin.guard.session_valid, request.cookies.get(auth.COOKIE)):
        return None
    if request.method == "GET":
        return RedirectResponse(f"{root}/login?next={quote(request.url.path)}", status_code=303)
    return admin.error(
        request,
        401,
        "Signed out",
        "Your session has ended. Sign in again, then repeat what you were doing.",
    )
