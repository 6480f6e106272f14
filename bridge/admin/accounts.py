"""Admin pages: Loops accounts (a name and an API key each).

    GET  /accounts                 the accounts, masked keys, how many endpoints use each
    POST /accounts                 add one (name + API key)
    POST /accounts/{id}/test       ask Loops (GET /api-key) whether the key works
    POST /accounts/{id}/delete     delete one no endpoint uses

A stored key leaves the database only towards Loops: pages show ``registry.mask`` hints, and
a refused form is shown again without the key that was typed.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge import registry
from bridge.admin import Admin
from bridge.loops import Answer, LoopsClient

_LIST = "/admin/accounts"


def routes(admin: Admin) -> list[BaseRoute]:
    async def page(
        request: Request, status_code: int = 200, name: str = "", errors: dict | None = None
    ) -> Response:
        accounts = await admin.run(registry.connection_views, admin.engine)
        return admin.render(
            request,
            "accounts/list.html",
            status_code,
            title="Loops accounts",
            accounts=accounts,
            name=name,
            errors=errors or {},
        )

    async def show(request: Request) -> Response:
        return await page(request)

    async def add(request: Request) -> Response:
        form = await request.form()
        name, api_key = str(form.get("name", "")), str(form.get("api_key", ""))
        problems = await admin.run(registry.connection_problems, admin.engine, name, api_key)
        if problems:
            return await page(request, 400, name=name, errors=problems)
        try:
            added = await admin.run(registry.add_connection, admin.engine, name, api_key)
        except registry.Invalid as exc:  # added meanwhile under the same name
            return await page(request, 400, name=name, errors={"name": str(exc)})
        return admin.redirect(
            _LIST, f"Added Loops account {added.name!r} (key {registry.mask(added.api_key)})."
        )

    async def test(request: Request) -> Response:
        connection_id = _id(request)
        try:
            connection = await admin.run(registry.get_connection, admin.engine, connection_id)
        except registry.NotFound:
            return _not_found(admin, request)
        client = LoopsClient(admin.settings.loops_api_url)
        try:
            answer = await client.check_key(connection.api_key)
        finally:
            await client.aclose()
        return admin.redirect(_LIST, _verdict(connection.name, answer))

    async def delete(request: Request) -> Response:
        connection_id = _id(request)
        try:
            name = await admin.run(registry.delete_connection, admin.engine, connection_id)
        except registry.NotFound:
            return _not_found(admin, request)
        except registry.Invalid as exc:
            return admin.redirect(_LIST, f"Not deleted. {exc}")
        return admin.redirect(_LIST, f"Deleted Loops account {name!r}.")

    return [
        Route("/accounts", show, methods=["GET"]),
        Route("/accounts", add, methods=["POST"]),
        Route("/accounts/{connection_id}/test", test, methods=["POST"]),
        Route("/accounts/{connection_id}/delete", delete, methods=["POST"]),
    ]


def _id(request: Request) -> int:
    """The account id from the path; -1 (no such account) when it is not a number."""
    raw = request.path_params["connection_id"]
    return int(raw) if raw.isdigit() else -1


def _verdict(name: str, answer: Answer) -> str:
    if answer.status_code is not None and 200 <= answer.status_code < 300:
        try:
            team = json.loads(answer.response_body).get("teamName")
        except (ValueError, AttributeError):
            team = None
        where = f"Loops team {team!r}" if team else "Loops accepted the key"
        return f"Loops account {name!r} works: {where}."
    return (
        f"Loops account {name!r} did not work: {answer.message}. "
        "Check the key in Loops, Settings → API."
    )


def _not_found(admin: Admin, request: Request) -> Response:
    return admin.render(
        request,
        "error.html",
        404,
        title="No such Loops account",
        message="There is no Loops account with this id; it may have been deleted.",
    )
