"""Admin pages: endpoints, the webhook URLs a provider sends to.

    GET  /endpoints                              list, with each endpoint's status
    GET  /endpoints/new, POST /endpoints/new     create
    GET  /endpoints/{id}                         URL, set-up steps, secrets, pause, delete
    GET  /endpoints/{id}/edit, POST (same)       change
    POST /endpoints/{id}/secrets                 add a signing secret
    POST /endpoints/{id}/secrets/{n}/remove      remove one, named by its id, never its value
    POST /endpoints/{id}/pause, /resume          hold deliveries to Loops, or let them go
    POST /endpoints/{id}/delete                  delete it with its delivery log

Every change goes through ``bridge.registry`` and is followed by ``inbox.forget`` so the
webhook path sees it on the next request instead of after its route cache expires.

An endpoint's status, as listed::

    waiting for signing secret   no secret yet: every webhook is refused
    paused                       webhooks are accepted and kept; nothing goes to Loops
    active                       webhooks are verified, kept and delivered
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import Engine
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import providers
from bridge import registry
from bridge.admin.state import Admin

# status -> (what the admin reads, the existing badge style closest to it)
_STATUS = {
    "active": ("active", "status-active"),
    "paused": ("paused", "status-paused"),
    "waiting": ("waiting for signing secret", "status-waiting"),
}

_Handler = Callable[[Request, str], Awaitable[Response]]


def _status(view: registry.EndpointView) -> str:
    if not view.secret_hints:
        return "waiting"
    return "paused" if view.paused else "active"


def _read_form(form: FormData) -> registry.EndpointForm:
    def text(key: str) -> str:
        return str(form.get(key) or "")

    return registry.EndpointForm(
        name=text("name"),
        account=text("account"),
        provider=text("provider"),
        event_types=[str(t) for t in form.getlist("event_types")],
        user_group=text("user_group").strip() or None,
        loops_event=text("loops_event").strip() or None,
        sync_names="sync_names" in form,
    )


def _choices() -> list[providers.Provider]:
    return [providers.get(name) for name in providers.names()]


def _not_found(request: Request) -> Response:
    return Admin.of(request).error(
        request,
        404,
        "No such endpoint",
        "There is no endpoint with this id; it may have been deleted.",
    )


def _existing(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    """Pass the endpoint id on; an unknown id gets the 404 page wherever it shows up."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, request.path_params["endpoint_id"])
        except registry.NotFound:
            return _not_found(request)

    return endpoint


async def _form_page(
    request: Request,
    form: registry.EndpointForm,
    *,
    endpoint_id: str | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    admin = Admin.of(request)
    accounts = await admin.run(registry.list_accounts, admin.engine)
    try:
        provider = providers.get(form.provider)
    except KeyError:
        provider = _choices()[0]
    return admin.render(
        request,
        "endpoints/form.html",
        400 if errors else 200,
        title="Edit endpoint" if endpoint_id else "New endpoint",
        form=form,
        endpoint_id=endpoint_id,
        accounts=[a.name for a in accounts],
        providers=_choices(),
        provider=provider,
        errors=errors or {},
    )


async def _show_page(
    request: Request, endpoint_id: str, *, secret_error: str | None = None
) -> Response:
    admin = Admin.of(request)
    view, secrets = await admin.run(_endpoint_page, admin.engine, endpoint_id)
    return admin.render(
        request,
        "endpoints/show.html",
        400 if secret_error else 200,
        title=view.name,
        endpoint=view,
        status=_STATUS[_status(view)],
        provider=providers.get(view.provider),
        url=admin.settings.endpoint_url(view.id),
        secrets=secrets,
        secret_error=secret_error,
    )


def _changed(request: Request, endpoint_id: str, url: str, notice: str) -> Response:
    """After a change: the webhook path forgets what it cached of the endpoint."""
    admin = Admin.of(request)
    admin.inbox.forget(endpoint_id)
    return admin.redirect(url, notice)


async def index(request: Request) -> Response:
    admin = Admin.of(request)
    views = await admin.run(registry.list_endpoints, admin.engine)
    labels = {p.name: p.label for p in _choices()}
    rows = [(v, _STATUS[_status(v)], labels.get(v.provider, v.provider)) for v in views]
    return admin.render(request, "endpoints/list.html", title="Endpoints", rows=rows)


async def new(request: Request) -> Response:
    admin = Admin.of(request)
    accounts = await admin.run(registry.list_accounts, admin.engine)
    first = _choices()[0].name
    account = accounts[0].name if len(accounts) == 1 else ""
    return await _form_page(request, registry.EndpointForm("", account, first, []))


async def create(request: Request) -> Response:
    admin = Admin.of(request)
    form = _read_form(await request.form())
    errors = await admin.run(registry.endpoint_problems, admin.engine, form)
    if errors:
        return await _form_page(request, form, errors=errors)
    try:
        endpoint_id = await admin.run(_create, admin.engine, form)
    except registry.Invalid as exc:  # its Loops account was deleted meanwhile
        return await _form_page(request, form, errors={"account": str(exc)})
    return _changed(
        request,
        endpoint_id,
        f"/admin/endpoints/{endpoint_id}",
        f"Created endpoint {form.name.strip()!r}. Now set it up in "
        f"{providers.get(form.provider).label}: the steps are below.",
    )


@_existing
async def show(request: Request, endpoint_id: str) -> Response:
    return await _show_page(request, endpoint_id)


@_existing
async def edit(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    view = await admin.run(registry.endpoint_view, admin.engine, endpoint_id)
    form = registry.EndpointForm(
        view.name,
        view.account,
        view.provider,
        view.event_types,
        view.user_group,
        view.loops_event,
        view.sync_names,
    )
    return await _form_page(request, form, endpoint_id=endpoint_id)


@_existing
async def update(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    await admin.run(registry.endpoint_view, admin.engine, endpoint_id)  # 404 first
    form = _read_form(await request.form())
    errors = await admin.run(registry.endpoint_problems, admin.engine, form)
    if errors:
        return await _form_page(request, form, endpoint_id=endpoint_id, errors=errors)
    try:
        await admin.run(registry.update_endpoint, admin.engine, endpoint_id, form)
    except registry.NotFound:
        raise
    except registry.Invalid as exc:  # its Loops account was deleted meanwhile
        return await _form_page(
            request, form, endpoint_id=endpoint_id, errors={"account": str(exc)}
        )
    return _changed(
        request,
        endpoint_id,
        f"/admin/endpoints/{endpoint_id}",
        "Saved. It applies from the next webhook.",
    )


@_existing
async def add_secret(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    value = str((await request.form()).get("secret") or "")
    try:
        hint = await admin.run(registry.add_secret, admin.engine, endpoint_id, value)
    except registry.NotFound:
        raise  # the 404 page, not a message about the secret
    except registry.Invalid as exc:
        return await _show_page(request, endpoint_id, secret_error=str(exc))
    return _changed(
        request, endpoint_id, f"/admin/endpoints/{endpoint_id}", f"Added signing secret {hint}."
    )


@_existing
async def remove_secret(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    raw = request.path_params["secret_id"]
    secret_id = int(raw) if raw.isdigit() else -1
    hint = await admin.run(registry.remove_secret_by_id, admin.engine, endpoint_id, secret_id)
    return _changed(
        request,
        endpoint_id,
        f"/admin/endpoints/{endpoint_id}",
        f"Removed signing secret {hint}: webhooks signed with it are refused from now on.",
    )


async def _set_paused(request: Request, endpoint_id: str, paused: bool, done: str) -> Response:
    admin = Admin.of(request)
    await admin.run(registry.set_paused, admin.engine, endpoint_id, paused)
    return _changed(request, endpoint_id, f"/admin/endpoints/{endpoint_id}", done)


@_existing
async def pause(request: Request, endpoint_id: str) -> Response:
    return await _set_paused(
        request,
        endpoint_id,
        True,
        "Paused. Webhooks are still accepted and kept; nothing goes to Loops until you resume.",
    )


@_existing
async def resume(request: Request, endpoint_id: str) -> Response:
    return await _set_paused(
        request,
        endpoint_id,
        False,
        "Resumed. Webhooks kept while paused are on their way to Loops.",
    )


@_existing
async def delete(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    view = await admin.run(registry.endpoint_view, admin.engine, endpoint_id)
    await admin.run(registry.delete_endpoint, admin.engine, endpoint_id)
    return _changed(
        request,
        endpoint_id,
        "/admin/endpoints",
        f"Deleted endpoint {view.name!r} and its delivery log. Its URL now answers 404; "
        "remove it from the provider too.",
    )


routes = [
    Route("/endpoints", index, methods=["GET"]),
    Route("/endpoints/new", new, methods=["GET"]),
    Route("/endpoints/new", create, methods=["POST"]),
    Route("/endpoints/{endpoint_id}", show, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/edit", edit, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/edit", update, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/secrets", add_secret, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/secrets/{secret_id}/remove", remove_secret, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/pause", pause, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/resume", resume, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/delete", delete, methods=["POST"]),
]


def _endpoint_page(
    engine: Engine, endpoint_id: str
) -> tuple[registry.EndpointView, list[tuple[int, str]]]:
    return registry.endpoint_view(engine, endpoint_id), registry.endpoint_secrets(
        engine, endpoint_id
    )


def _create(engine: Engine, form: registry.EndpointForm) -> str:
    return registry.create_endpoint(
        engine,
        name=form.name,
        account=form.account,
        provider=form.provider,
        event_types=form.event_types,
        user_group=form.user_group,
        loops_event=form.loops_event,
        sync_names=form.sync_names,
    )
