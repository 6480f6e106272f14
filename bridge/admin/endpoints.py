"""Admin pages: endpoints, the webhook URLs a provider sends to.

    GET  /endpoints                              list, with each endpoint's status
    GET  /endpoints/new[?provider=]              the form, with that provider's event types
    POST /endpoints/new                          create
    GET  /endpoints/{id}                         URL (and why a platform may not reach it),
                                                 set-up steps, secrets, types it was sent
                                                 that the bridge does not handle, pause,
                                                 delete
    GET  /endpoints/{id}/edit, POST (same)       change
    POST /endpoints/{id}/secrets                 add a signing secret
    POST /endpoints/{id}/secrets/{n}/remove      remove one, named by its id, never its value
    POST /endpoints/{id}/pause, /resume          hold deliveries to Loops, or let them go
    POST /endpoints/{id}/delete                  delete it with its delivery log
    POST /endpoints/{id}/stripe-key              set or replace its Stripe API key (checked
                                                 with Stripe unless "no_check")
    POST /endpoints/{id}/stripe-key/remove       forget it
    POST /endpoints/{id}/import                  start (or continue) importing the customers
                                                 Stripe has, in a thread of this server
    POST /endpoints/{id}/import/preview          count what an import would do, writing nothing
    POST /endpoints/{id}/import/cancel           stop it at its next page

Every change goes through ``bridge.registry`` and is followed by ``inbox.forget`` so the
webhook path sees it on the next request instead of after its route cache expires.

The form has one row per event type of the provider: accept it or not, and the Loops event
it sends (empty: the contact only). A new endpoint's page holds every provider's rows, only
the chosen one's shown and sent; ``templates/static/admin.js`` swaps them when another
provider is chosen, and without a script the provider's own small GET form loads the page
for it (``?provider=``). An endpoint keeps its provider for good: its URL and secrets are
that platform's.

For a provider whose secret the bridge makes (``new_secret()``: a shared secret header), the
endpoint is created with one, and the answer to the POST is the endpoint's page with that
secret shown this once, not a redirect: nothing else holds it in the clear (no cookie, no
URL, no log), and the pages after it show only its hint.

Whatever is particular to one provider (set-up steps, where its secret is, why its requests
are refused, Loops' own event names for its types) is in its template, ``Admin.about``.

A Stripe endpoint's page also holds its Stripe API key (only its hint is ever shown) and its
import of the customers Stripe already has (``bridge.backfill``). An import started here runs
in a daemon thread of this server process, one per endpoint (:data:`_imports`); the page
shows its counts as ``backfill.status`` adds them up, and reloads itself every few seconds
while the import reads from Stripe (a ``<meta>`` refresh: no script). A server that stops
mid-import leaves it ``interrupted``: Continue picks it up at its cursor.

An endpoint's status, as listed::

    waiting for signing secret   no secret yet: every webhook is refused
    paused                       webhooks are accepted and kept; nothing goes to Loops
    active                       webhooks are verified, kept and delivered
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import cast

from sqlalchemy.engine import Engine
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import providers
from bridge import backfill, inbox, registry
from bridge.admin.formats import count, row_id, when
from bridge.admin.state import Admin
from bridge.public_url import unreachable
from bridge.stripe_api import StripeAPI, StripeAPIError

log = logging.getLogger("bridge.admin")

# status -> (what the admin reads, the existing badge style closest to it)
_STATUS = {
    "active": ("active", "status-active"),
    "paused": ("paused", "status-paused"),
    "waiting": ("waiting for signing secret", "status-waiting"),
}

# What each on-delete choice does in Loops, as the form and the endpoint's page say it.
ON_DELETE_SAID = {
    "unsubscribe": "the contact stays in Loops, unsubscribed",
    "delete": "the contact is deleted from Loops",
    "ignore": "the contact is left as it is",
}
_EVENT_FIELD = "loops_event:"  # the form's field for one event type's Loops event: + type

_Handler = Callable[[Request, str], Awaitable[Response]]


def _status(view: registry.EndpointView) -> str:
    if not view.secret_hints:
        return "waiting"
    return "paused" if view.paused else "active"


def _read_form(form: FormData, provider: str | None = None) -> registry.EndpointForm:
    """The endpoint form as posted; ``provider``: the endpoint's own, on the edit page."""

    def text(key: str) -> str:
        return str(form.get(key) or "")

    events = {
        key.removeprefix(_EVENT_FIELD): str(value).strip()
        for key, value in form.multi_items()
        if key.startswith(_EVENT_FIELD) and str(value).strip()
    }
    return registry.EndpointForm(
        name=text("name"),
        account=text("account"),
        provider=provider or text("provider"),
        event_types=[str(t) for t in form.getlist("event_types")],
        user_group=text("user_group").strip() or None,
        sync_names="sync_names" in form,
        loops_events=events,
        mailing_lists=[i.strip() for i in text("mailing_lists").split(",") if i.strip()],
        on_delete=text("on_delete").strip() or "unsubscribe",
    )


def _form_of(view: registry.EndpointView) -> registry.EndpointForm:
    """An endpoint as its form shows it: one Loops event for every type (``--loops-event``)
    is shown, and saved, as that event for each accepted type."""
    events = view.loops_events or (
        {t: view.loops_event for t in view.event_types} if view.loops_event else {}
    )
    return registry.EndpointForm(
        view.name,
        view.account,
        view.provider,
        view.event_types,
        view.user_group,
        sync_names=view.sync_names,
        loops_events=events,
        mailing_lists=view.mailing_lists,
        on_delete=view.on_delete,
    )


def _suggested(admin: Admin, provider: str) -> dict[str, str]:
    """Loops' own event names for the provider's event types, where its template
    (``Admin.about``) has them: the form shows them as placeholders."""
    module = admin.templates.env.get_template(admin.about(provider)).module
    return dict(getattr(module, "loops_events", None) or {})


def _refused_rows(form: registry.EndpointForm, errors: dict[str, str]) -> set[str]:
    """The event types whose Loops event the form refused: mapped but not accepted, or not
    a valid Loops event name."""
    rows: set[str] = set()
    if "loops_events" in errors:
        rows |= set(form.loops_events) - set(form.event_types)
    if "loops_event" in errors:
        rows |= {
            t
            for t, name in form.loops_events.items()
            if "loops_event" in registry.EndpointForm("", "", "", [], loops_event=name).problems()
        }
    return rows


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
    one_event: str | None = None,
) -> Response:
    admin = Admin.of(request)
    accounts = await admin.run(registry.list_accounts, admin.engine)
    try:
        provider = providers.get(form.provider)
    except KeyError:
        provider = _choices()[0]
    errors = errors or {}
    # A new endpoint may be any provider's (the page holds each one's rows); an endpoint
    # keeps its own.
    choosable = [provider] if endpoint_id else _choices()
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
        choosable=choosable,
        suggestions={p.name: _suggested(admin, p.name) for p in choosable},
        event_field=_EVENT_FIELD,
        refused_rows=_refused_rows(form, errors),
        on_delete_said=ON_DELETE_SAID,
        one_event=one_event,
        errors=errors,
    )


async def _show_page(
    request: Request,
    endpoint_id: str,
    status_code: int = 200,
    *,
    secret_error: str | None = None,
    new_secret: str | None = None,
    notice: str | None = None,
    key_error: str | None = None,
) -> Response:
    admin = Admin.of(request)
    view, secrets, unsupported = await admin.run(_endpoint_page, admin.engine, endpoint_id)
    imported = None
    if view.provider == "stripe":
        imported = await admin.run(
            backfill.status, admin.engine, endpoint_id, admin.settings.loops_rate_limit
        )
    shown: dict[str, str] = {"notice": notice} if notice else {}
    return admin.render(
        request,
        "endpoints/show.html",
        400 if secret_error or key_error else status_code,
        title=view.name,
        endpoint=view,
        status=_STATUS[_status(view)],
        provider=providers.get(view.provider),
        about_template=admin.about(view.provider),
        url=admin.settings.endpoint_url(view.id),
        url_warning=unreachable(admin.settings.public_url),
        unsupported=unsupported,
        when=when,
        count=count,
        secrets=secrets,
        secret_error=secret_error,
        new_secret=new_secret,
        on_delete_said=ON_DELETE_SAID,
        key_error=key_error,
        imported=imported,
        # cancelled, and still reading its last page from Stripe
        stopping=imported is not None
        and imported.state == backfill.CANCELLED
        and _importing(endpoint_id),
        duration=backfill.duration,
        **shown,
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
    asked = request.query_params.get("provider", "")
    provider = asked if asked in providers.names() else _choices()[0].name
    account = accounts[0].name if len(accounts) == 1 else ""
    return await _form_page(request, registry.EndpointForm("", account, provider, []))


async def create(request: Request) -> Response:
    admin = Admin.of(request)
    form = _read_form(await request.form())
    errors = await admin.run(registry.endpoint_problems, admin.engine, form)
    if errors:
        return await _form_page(request, form, errors=errors)
    provider = providers.get(form.provider)
    secret = provider.new_secret()
    try:
        endpoint_id = await admin.run(_create, admin.engine, form, secret)
    except registry.Invalid as exc:  # its Loops account was deleted meanwhile
        return await _form_page(request, form, errors={"account": str(exc)})
    notice = (
        f"Created endpoint {form.name.strip()!r}. Now set it up in {provider.label}: "
        "the steps are below."
    )
    if secret is None:
        return _changed(request, endpoint_id, f"/admin/endpoints/{endpoint_id}", notice)
    admin.inbox.forget(endpoint_id)
    return await _show_page(request, endpoint_id, 201, new_secret=secret, notice=notice)


@_existing
async def show(request: Request, endpoint_id: str) -> Response:
    return await _show_page(request, endpoint_id)


@_existing
async def edit(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    view = await admin.run(registry.endpoint_view, admin.engine, endpoint_id)
    one_event = None if view.loops_events else view.loops_event
    return await _form_page(request, _form_of(view), endpoint_id=endpoint_id, one_event=one_event)


@_existing
async def update(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    view = await admin.run(registry.endpoint_view, admin.engine, endpoint_id)  # 404 first
    form = _read_form(await request.form(), provider=view.provider)
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
    secret_id = row_id(request.path_params["secret_id"]) or -1
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
        "Paused.",  # the page's own notice says what that means, right under it
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


# -- the Stripe API key and the import of Stripe's customers (Stripe endpoints) -------------


def _stripe_only(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    """As :func:`_existing`, for an action only a Stripe endpoint has: another provider's
    endpoint gets an error page instead."""

    @_existing
    @functools.wraps(handler)
    async def endpoint(request: Request, endpoint_id: str) -> Response:
        admin = Admin.of(request)
        view = await admin.run(registry.endpoint_view, admin.engine, endpoint_id)  # 404 first
        if view.provider == "stripe":
            return await handler(request, endpoint_id)
        return admin.error(
            request,
            400,
            "Not a Stripe endpoint",
            f"The endpoint {view.name!r} receives {providers.get(view.provider).label} "
            "webhooks: only a Stripe endpoint has a Stripe API key and imports Stripe's "
            "customers.",
        )

    return endpoint


@_stripe_only
async def set_stripe_key(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    form = await request.form()
    key = str(form.get("stripe_key") or "").strip()
    if not key:
        return await _show_page(
            request,
            endpoint_id,
            key_error="Paste the key first: a restricted key (rk_live_... or rk_test_...), "
            "made as the steps below say.",
        )
    said = ""
    if "no_check" not in form:
        try:
            check, problems = await admin.run(
                backfill.check_key, admin.engine, endpoint_id, key, admin.settings.stripe_api_url
            )
        except StripeAPIError as exc:
            return await _show_page(
                request,
                endpoint_id,
                key_error=f"{exc} Nothing was saved; tick “Save without checking” to save the "
                "key all the same.",
            )
        if problems:
            return await _show_page(request, endpoint_id, key_error=" ".join(problems))
        account = check.account_name or check.account_id
        said = f" (Stripe account {account}, {check.mode} mode)" if account else ""
        said += ". Stripe took it: it may read customers and events."
        said += "".join(f" Note: {warning}" for warning in check.warnings)
    else:
        said = ", without checking it with Stripe: an import or a lookup tells if it works."
    try:
        hint, made_due = await admin.run(registry.set_stripe_key, admin.engine, endpoint_id, key)
    except registry.NotFound:
        raise
    except registry.Invalid as exc:
        return await _show_page(request, endpoint_id, key_error=str(exc))
    said += registry.lookups_resumed(made_due)
    return _changed(
        request, endpoint_id, _page(endpoint_id), f"Saved the Stripe API key {hint}{said}"
    )


@_stripe_only
async def remove_stripe_key(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    try:
        await admin.run(registry.set_stripe_key, admin.engine, endpoint_id, None)
    except registry.NotFound:
        raise
    except registry.Invalid as exc:  # it accepts types that need the key
        return admin.redirect(_page(endpoint_id), f"Not removed. {exc}")
    return _changed(
        request,
        endpoint_id,
        _page(endpoint_id),
        "Removed the Stripe API key: the bridge no longer calls Stripe for this endpoint. "
        "Delete the key in Stripe too (Developers → API keys).",
    )


@_stripe_only
async def start_import(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    before = await admin.run(
        backfill.status, admin.engine, endpoint_id, admin.settings.loops_rate_limit
    )
    why_not = await admin.run(
        _start_import, admin.engine, endpoint_id, admin.settings.stripe_api_url
    )
    if why_not:
        return admin.redirect(_page(endpoint_id), f"Not started. {why_not}")
    if before is not None and before.state in (backfill.CANCELLED, backfill.INTERRUPTED):
        said = (
            f"Continuing the import where it stopped ({before.customers:,} customers read "
            "so far): nothing is imported twice."
        )
    else:
        said = "Started importing the customers Stripe has into Loops."
    return admin.redirect(
        _page(endpoint_id),
        f"{said} Each becomes a Loops contact; no Loops event is sent. "
        "This page shows the progress.",
    )


@_stripe_only
async def preview_import(request: Request, endpoint_id: str) -> Response:
    """Count what an import would do (``backfill --dry-run``), reading Stripe, writing
    nothing; the page says it."""
    admin = Admin.of(request)
    try:
        plan = await admin.run(
            _estimate,
            admin.engine,
            endpoint_id,
            admin.settings.stripe_api_url,
            admin.settings.loops_rate_limit,
        )
    except (StripeAPIError, registry.Invalid) as exc:  # Stripe refused or is away; no key
        return admin.redirect(_page(endpoint_id), f"No preview. {exc}")
    return admin.redirect(_page(endpoint_id), f"Preview: {backfill.describe(plan)}")


def _estimate(engine: Engine, endpoint_id: str, base_url: str, rate: int) -> dict:
    api = backfill.api_for(engine, endpoint_id, base_url)
    return backfill.estimate(engine, endpoint_id, api, rate)


@_stripe_only
async def cancel_import(request: Request, endpoint_id: str) -> Response:
    admin = Admin.of(request)
    try:
        set_aside = await admin.run(backfill.cancel, admin.engine, endpoint_id)
    except registry.Invalid as exc:
        return admin.redirect(_page(endpoint_id), f"Nothing cancelled. {exc}")
    customers = "customer" if set_aside == 1 else "customers"
    return admin.redirect(
        _page(endpoint_id),
        "Cancelled the import: it stops after the page it is reading from Stripe. "
        f"{set_aside:,} {customers} queued but not yet sent to Loops were set aside; "
        "Continue sends them, and imports the rest.",
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
    Route("/endpoints/{endpoint_id}/stripe-key", set_stripe_key, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/stripe-key/remove", remove_stripe_key, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/import", start_import, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/import/preview", preview_import, methods=["POST"]),
    Route("/endpoints/{endpoint_id}/import/cancel", cancel_import, methods=["POST"]),
]


def _endpoint_page(
    engine: Engine, endpoint_id: str
) -> tuple[registry.EndpointView, list[tuple[int, str]], list[tuple[str, int, float]]]:
    """The endpoint, its secrets' (id, hint), and the types it was sent that its provider
    does not handle: (type, how many, last received)."""
    return (
        registry.endpoint_view(engine, endpoint_id),
        registry.endpoint_secrets(engine, endpoint_id),
        inbox.unsupported_types(engine, endpoint_id),
    )


def _create(engine: Engine, form: registry.EndpointForm, secret: str | None) -> str:
    return registry.create_endpoint(
        engine,
        name=form.name,
        account=form.account,
        provider=form.provider,
        event_types=form.event_types,
        user_group=form.user_group,
        sync_names=form.sync_names,
        signing_secret=secret,
        loops_events=form.loops_events,
        mailing_lists=form.mailing_lists,
        on_delete=form.on_delete,
    )


def _page(endpoint_id: str) -> str:
    return f"/admin/endpoints/{endpoint_id}"


# endpoint id -> the thread of this server importing its customers (at most one each)
_imports: dict[str, threading.Thread] = {}
_imports_lock = threading.Lock()


def _importing(endpoint_id: str) -> bool:
    """Whether a thread of this server is still running the endpoint's import (a cancelled
    one runs until the end of the page it is reading)."""
    with _imports_lock:
        return endpoint_id in _imports


def _start_import(engine: Engine, endpoint_id: str, base_url: str) -> str | None:
    """Start the endpoint's import in a thread of its own and wait until it has begun; why
    not, when it was refused (no key, already running)."""
    begun, refused = threading.Event(), []
    with _imports_lock:
        if endpoint_id in _imports:
            return (
                "This server is still running the endpoint's import: a cancelled import ends "
                "after the page it is reading from Stripe. Reload the page in a moment."
            )
        thread = threading.Thread(
            target=_import,
            args=(engine, endpoint_id, base_url, begun, refused),
            name=f"import {endpoint_id}",
            daemon=True,  # a server that stops leaves it interrupted; Continue resumes it
        )
        _imports[endpoint_id] = thread
        thread.start()
    begun.wait()
    return refused[0] if refused else None


def _import(
    engine: Engine, endpoint_id: str, base_url: str, begun: threading.Event, refused: list[str]
) -> None:
    try:
        api = backfill.api_for(engine, endpoint_id, base_url)
        backfill.run(engine, endpoint_id, cast(StripeAPI, _Begun(api, begun)))
    except registry.Invalid as exc:
        if begun.is_set():  # after it began: the endpoint was deleted meanwhile
            log.warning(
                "the import of endpoint %s stopped: %s",
                endpoint_id,
                exc,
                extra={"endpoint_id": endpoint_id},
            )
        refused.append(str(exc))
    except Exception:
        log.exception(
            "the import of endpoint %s stopped with an error; Continue on the endpoint's page "
            "resumes it",
            endpoint_id,
            extra={"endpoint_id": endpoint_id},
        )
    finally:
        begun.set()
        with _imports_lock:
            _imports.pop(endpoint_id, None)


class _Begun:
    """The endpoint's Stripe API, telling :func:`_start_import` that the import has begun:
    ``backfill.run`` asks it for customers once it has taken the endpoint's import, or has
    refused to (registry.Invalid) before it asks."""

    def __init__(self, api: StripeAPI, begun: threading.Event) -> None:
        self._api, self._begun = api, begun

    def customer_pages(self, starting_after: str | None = None) -> Iterator[tuple[list, str]]:
        self._begun.set()
        return self._api.customer_pages(starting_after)
