"""What every admin handler reads: the one :class:`Admin` on ``request.app.state.admin``.

A handler is a plain ``async def page(request) -> Response`` at module level; it gets the
settings, the database, the inbox and rendering from ``Admin.of(request)``. So a handler is
tested alone by mounting it in any Starlette app whose ``state.admin`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import anyio.to_thread
import httpx
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from bridge.admin.auth import Guard
from bridge.inbox import Inbox
from bridge.settings import Settings

__all__ = ["Admin"]

_NOTICE = "loops_bridge_notice"


@dataclass
class Admin:
    """What every admin page needs: settings, the database, the inbox and rendering.

    ``loops_transport`` and ``webhook_transport``: where the admin's own calls go, to Loops
    (an account's Test button) and to the bridge's public webhook URL (a test event); by
    default the network. Tests give transports to in-process apps, as for ``LoopsClient``.
    """

    settings: Settings
    engine: Engine
    inbox: Inbox
    guard: Guard
    templates: Jinja2Templates
    loops_transport: httpx.AsyncBaseTransport | None = None
    webhook_transport: httpx.AsyncBaseTransport | None = None

    @staticmethod
    def of(request: Request) -> Admin:
        admin: Admin = request.app.state.admin
        return admin

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

    def about(self, provider: str) -> str:
        """The template that says what is particular to ``provider`` in the admin (its set-up
        steps, where its secret is, why its requests are refused, Loops' own event names for
        its types): ``endpoints/setup_{provider}.html``, or for a provider this bridge has no
        such page for, the generic ``endpoints/setup_generic.html``. The pages import it."""
        names = [f"endpoints/setup_{provider}.html", "endpoints/setup_generic.html"]
        name: str = self.templates.env.select_template(names).name  # type: ignore[assignment]
        return name

    def error(self, request: Request, status_code: int, title: str, message: str) -> Response:
        """The error page: a title and what to do about it."""
        return self.render(request, "error.html", status_code, title=title, message=message)

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
