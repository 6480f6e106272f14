"""The admin web app at ``/admin``: server-rendered pages from ``templates/`` (Jinja).

One module per page family (``accounts``, ``endpoints``, ``deliveries``, ``diagnostics``,
``overview``), each
exposing ``routes(admin) -> list[BaseRoute]``; this module builds the app around them:
sign-in, the session check, cross-site protection and security headers for every page,
and the static files (CSS and a little JavaScript, nothing from the internet).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio.to_thread
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bridge.admin import auth
from bridge.admin.csrf import cross_site
from bridge.inbox import Inbox
from bridge.settings import Settings

__all__ = ["Admin", "create_admin"]

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
PAGE_MODULES = ("overview", "accounts", "endpoints", "deliveries", "diagnostics")
_OPEN_PATHS = ("/login", "/static/")
_NOTICE = "loops_bridge_notice"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass
class Admin:
    """What every admin page needs: settings, the database, the inbox and rendering."""

    settings: Settings
    engine: Engine
    inbox: Inbox
    guard: auth.Guard
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES))
    )

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        notice = request.cookies.get(_NOTICE)
        context.setdefault("notice", unquote(notice) if notice else None)
        response = self.templates.TemplateResponse(
            request,
            template,
            {"settings": self.settings, "path": request.url.path, **context},
            status_code=status_code,
        )
        if notice:
            response.delete_cookie(_NOTICE, path="/admin")
        return response

    @staticmethod
    def redirect(url: str, notice: str | None = None) -> RedirectResponse:
        """After a POST: 303 to ``url``, with a short message to show there once. (A cookie,
        not the URL, so that a link from elsewhere cannot put words on an admin page.)"""
        response = RedirectResponse(url, status_code=303)
        if notice:
            response.set_cookie(
                _NOTICE, quote(notice), max_age=60, path="/admin", httponly=True, samesite="lax"
            )
        return response

    async def run(self, function: Any, *args: Any) -> Any:
        """Run a blocking (database) function off the event loop."""
        return await anyio.to_thread.run_sync(function, *args)


class _Protect(BaseHTTPMiddleware):
    def __init__(self, app: Any, admin: Admin) -> None:
        super().__init__(app)
        self.admin = admin

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await self._check(request, call_next)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _check(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        refused = cross_site(request, self.admin.settings.public_url)
        if refused:
            return self.admin.render(
                request,
                "error.html",
                403,
                title="Request refused",
                message=f"Cross-site request refused: {refused}. Reload the page and try again.",
            )
        inside = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if inside.startswith(_OPEN_PATHS):
            return await call_next(request)
        token = request.cookies.get(auth.COOKIE)
        if not await self.admin.run(self.admin.guard.session_valid, token):
            if request.method == "GET":
                return RedirectResponse(
                    f"{request.scope.get('root_path', '')}/login?next={quote(request.url.path)}",
                    status_code=303,
                )
            return self.admin.render(
                request,
                "error.html",
                401,
                title="Signed out",
                message="Your session has ended. Sign in again, then repeat what you were doing.",
            )
        return await call_next(request)


def _login_routes(admin: Admin) -> list[BaseRoute]:
    secure = admin.settings.public_url.startswith("https://")

    async def login_form(request: Request) -> Response:
        return admin.render(request, "login.html", next=request.query_params.get("next", ""))

    async def login(request: Request) -> Response:
        form = await request.form()
        password = str(form.get("password", ""))
        target = str(form.get("next", ""))
        if not target.startswith("/admin") or target.startswith("//"):
            target = "/admin/"
        client = request.client.host if request.client else "unknown"
        delay = admin.guard.delay_for(client)
        if delay:
            await anyio.sleep(delay)
        if not await admin.run(admin.guard.check_password, client, password):
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
            secure=secure,
        )
        return response

    async def logout(request: Request) -> Response:
        await admin.run(admin.guard.close_session, request.cookies.get(auth.COOKIE))
        response = admin.redirect("/admin/login", "Signed out.")
        response.delete_cookie(
            auth.COOKIE, path="/admin", httponly=True, samesite="lax", secure=secure
        )
        return response

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def create_admin(settings: Settings, engine: Engine, inbox: Inbox) -> Starlette:
    auth.ensure_password(engine, settings.admin_password)
    admin = Admin(settings, engine, inbox, auth.Guard(engine))
    routes = _login_routes(admin)
    for name in PAGE_MODULES:
        routes += importlib.import_module(f"bridge.admin.{name}").routes(admin)
    routes.append(Mount("/static", StaticFiles(directory=TEMPLATES / "static"), name="static"))

    async def failed(request: Request, exc: Exception) -> Response:
        # The traceback goes to the server log; the admin gets a page, never a stack trace.
        return admin.render(
            request,
            "error.html",
            500,
            title="Something went wrong",
            message="The bridge could not show this page. The details are in the bridge's log.",
        )

    return Starlette(
        routes=routes,
        middleware=[Middleware(_Protect, admin=admin)],
        exception_handlers={Exception: failed},
    )
