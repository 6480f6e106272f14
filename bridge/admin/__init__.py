"""The admin web app at ``/admin``: server-rendered pages from ``templates/`` (Jinja).

One module per page family, each a list ``routes`` of module-level handlers::

    login        sign in, sign out
    overview     /                 is the bridge keeping up?
    accounts     /accounts/...     Loops accounts and how each is doing
    endpoints    /endpoints/...    webhook URLs, their secrets, pause, delete
    deliveries   /deliveries/...   the delivery log, one delivery, retry, send again
    contacts     /contacts         one contact's timeline: what the bridge sent, what Loops said
    diagnostics  /endpoints/{id}/rejections, /endpoints/{id}/test

A handler reads the settings, the database and rendering from the :class:`Admin` on
``request.app.state.admin`` (``bridge/admin/state.py``). Around every page, outermost first,
four plain ASGI middlewares: security headers (``headers``, around the 500 page too), the
host names it answers to (``hosts``), cross-site protection (``csrf``), the session check
(``login``). Every value a template shows goes through ``formats.shown``: control and bidi
characters show as escapes. Static files (CSS and a little JavaScript, nothing from the
internet) are served from ``templates/static``.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from bridge.admin import (
    accounts,
    auth,
    contacts,
    deliveries,
    diagnostics,
    endpoints,
    login,
    overview,
)
from bridge.admin.csrf import CrossSiteProtection
from bridge.admin.formats import shown
from bridge.admin.headers import SecurityHeaders
from bridge.admin.hosts import AllowedHosts, allowed_hosts
from bridge.admin.login import RequireSession
from bridge.admin.state import Admin
from bridge.inbox import Inbox
from bridge.settings import Settings

__all__ = ["Admin", "create_admin"]

# templates/ is the package bridge.templates (setup.py): this finds it the same way in a
# checkout (an editable install) and in site-packages.
TEMPLATES = Path(str(resources.files("bridge.templates")))
PAGES = (login, overview, accounts, endpoints, deliveries, contacts, diagnostics)


async def failed(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server log; the admin gets a page, never a stack trace.
    return Admin.of(request).error(
        request,
        500,
        "Something went wrong",
        "The bridge could not show this page. The details are in the bridge's log.",
    )


class _AdminApp(Starlette):
    """Starlette puts the handler of uncaught errors (the 500 page, :func:`failed`) outside
    every middleware it is given: the security headers go around all of it instead."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def create_admin(settings: Settings, engine: Engine, inbox: Inbox) -> Starlette:
    guard = auth.Guard(engine, settings.admin_password)
    if not settings.admin_password:
        # A password generated now is printed now, where the operator looks. A configured
        # one is compared with the stored hash when the admin is first used (a scrypt check).
        guard.ensure()
    routes: list[BaseRoute] = [route for page in PAGES for route in page.routes]
    routes.append(Mount("/static", StaticFiles(directory=TEMPLATES / "static"), name="static"))
    app = _AdminApp(
        routes=routes,
        middleware=[
            Middleware(AllowedHosts, hosts=allowed_hosts(settings)),
            Middleware(CrossSiteProtection),
            Middleware(RequireSession),
        ],
        exception_handlers={Exception: failed},
    )
    app.state.admin = Admin(settings, engine, inbox, guard, _templates())
    return app


@functools.cache
def _templates() -> Jinja2Templates:
    """One set of compiled templates per process, shared by every admin app made in it
    (nothing in it depends on the app's settings)."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.finalize = shown  # set before any template is compiled, which reads it
    return templates
