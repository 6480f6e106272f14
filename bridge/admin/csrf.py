"""Cross-site request protection for the admin, without tokens.

A state-changing request (anything but GET/HEAD/OPTIONS) is refused when the browser says it
comes from another site: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``, or, from
browsers that do not send that header, an ``Origin`` that is not this server's. This is the
rule of Go's ``http.CrossOriginProtection`` (https://words.filippo.io/csrf/), also used by
Datasette. Requests with neither header come from non-browser clients, which cannot be
tricked into sending the admin's cookie; the session cookie is SameSite=Lax besides.
:class:`CrossSiteProtection` applies the rule to every request of the admin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.admin.state import Admin

__all__ = ["CrossSiteProtection", "cross_site"]

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def cross_site(request: Request, public_url: str) -> str | None:
    """Why ``request`` must be refused as cross-site, or None when it may proceed."""
    if request.method in _SAFE_METHODS:
        return None
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site in ("same-origin", "none"):
            return None
        return f"the browser marked this form submission as {fetch_site}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    allowed = {_origin(public_url), f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if origin in allowed:
        return None
    return f"the form was sent from {origin}, not from this bridge"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class CrossSiteProtection:
    """ASGI middleware: answers a cross-site request with a 403 page, before anything else
    reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            admin = Admin.of(request)
            refused = cross_site(request, admin.settings.public_url)
            if refused:
                page = admin.error(
                    request,
                    403,
                    "Request refused",
                    f"Cross-site request refused: {refused}. Reload the page and try again.",
                )
                await page(scope, receive, send)
                return
        await self.app(scope, receive, send)
