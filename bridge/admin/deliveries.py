"""Admin pages: deliveries."""

from __future__ import annotations

from starlette.routing import BaseRoute

from bridge.admin import Admin


def routes(admin: Admin) -> list[BaseRoute]:
    return []
