"""The host names the admin answers to, against DNS rebinding.

A page on another site can point a name of its own at 127.0.0.1 and so make a browser send
requests to an admin that listens only on loopback (DNS rebinding). Such a request names
the other site's host, so the admin answers only requests naming one of its own: the hosts
of ``BRIDGE_PUBLIC_URL`` and ``BRIDGE_HOST``, ``localhost``, ``127.0.0.1``, ``::1``, and
any in ``BRIDGE_ALLOWED_HOSTS`` (``*``: any host). Starlette's ``TrustedHostMiddleware``
does the same with a plain-text answer; :class:`AllowedHosts` answers with the admin's
error page, and with its security headers. ``/metrics`` and ``/healthz`` are not checked:
scrapers and health checks reach them under names of their own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.admin.state import Admin
from bridge.settings import Settings

__all__ = ["AllowedHosts", "allowed_hosts"]

_ANY_ADDRESS = {"", "0.0.0.0", "::"}  # BRIDGE_HOST values that name no host


def allowed_hosts(settings: Settings) -> frozenset[str]:
    named = {urlsplit(settings.public_url).hostname or "", settings.host.lower()}
    named.update(settings.allowed_hosts.split(","))
    return frozenset({"localhost", "127.0.0.1", "::1"} | (named - _ANY_ADDRESS))


def _name(host: str) -> str:
    """The host name of a Host header, without its port: example.com, 127.0.0.1, ::1."""
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    return host.partition(":")[0].lower()


class AllowedHosts:
    """ASGI middleware: a request naming a host not in ``hosts`` gets a 400 page."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.hosts:
            request = Request(scope)
            host = request.headers.get("host", "")
            if _name(host) not in self.hosts:
                page = Admin.of(request).error(
                    request,
                    400,
                    "Unknown host name",
                    f"This admin is not served under the name “{host[:100]}”. Open it at its "
                    "own address (BRIDGE_PUBLIC_URL, or localhost on its machine), or add the "
                    "name to BRIDGE_ALLOWED_HOSTS.",
                )
                await page(scope, receive, send)
                return
        await self.app(scope, receive, send)
