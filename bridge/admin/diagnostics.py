"""Admin pages for an endpoint's troubles: its refused requests, and a test event sent
through the bridge's own webhook URL.

    GET  /endpoints/{id}/rejections     the endpoint's most recent refused requests
    GET  /endpoints/{id}/test           pick an event type and an email address...
    POST /endpoints/{id}/test           ...and send it as the provider would
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from sqlmodel import select as select_models
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import providers
from bridge.admin.formats import ago, json_object, when
from bridge.admin.state import Admin
from bridge.inbox import REJECTIONS_KEPT
from bridge.models import Account, Endpoint, Rejection, Secret

SELF_CALL_TIMEOUT = 10.0  # seconds for the test event's trip through the public URL
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")  # what Loops takes, roughly


@dataclass(frozen=True, slots=True)
class Refusal:
    at: float
    status_code: int
    reason: str
    headers: dict[str, str]


def _rejections(engine: Engine, endpoint_id: str) -> list[Refusal]:
    query = (
        select_models(Rejection)
        .where(Rejection.endpoint_id == endpoint_id)
        .order_by(col(Rejection.id).desc())
        .limit(REJECTIONS_KEPT)
    )
    with Session(engine) as session:
        return [
            Refusal(row.at, row.status_code, row.reason, json_object(row.headers))
            for row in session.exec(query)
        ]


@dataclass(frozen=True, slots=True)
class Target:
    """An endpoint as the test-event form needs it. Never holds the secret itself."""

    id: str
    name: str
    provider: str
    event_types: list[str]
    account_name: str
    has_secret: bool


def _target(engine: Engine, endpoint_id: str) -> Target | None:
    with Session(engine) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        if endpoint is None:
            return None
        account = session.get(Account, endpoint.account_id)
        secret = session.exec(
            select_models(Secret.id).where(Secret.endpoint_id == endpoint_id)
        ).first()
        return Target(
            id=endpoint.id,
            name=endpoint.name,
            provider=endpoint.provider,
            event_types=endpoint.accepted_types(),
            account_name=account.name if account else "?",
            has_secret=secret is not None,
        )


def _first_secret(engine: Engine, endpoint_id: str) -> str | None:
    query = (
        select_models(Secret.value)
        .where(Secret.endpoint_id == endpoint_id)
        .order_by(col(Secret.id))
        .limit(1)
    )
    with Session(engine) as session:
        return session.exec(query).first()


def _email_problem(email: str) -> str | None:
    if not email:
        return "Enter the email address the test contact gets in Loops, e.g. you@example.com."
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        return (
            f"{email[:80]!r} is not an email address: it needs a name, an @ and a domain, "
            "like you@example.com."
        )
    return None


def _not_found(request: Request) -> Response:
    message = "There is no endpoint with that id."
    return Admin.of(request).error(request, 404, "Not found", message)


async def rejections(request: Request) -> Response:
    admin = Admin.of(request)
    endpoint_id = request.path_params["endpoint_id"]
    target = await admin.run(_target, admin.engine, endpoint_id)
    if target is None:
        return _not_found(request)
    refusals = await admin.run(_rejections, admin.engine, endpoint_id)
    return admin.render(
        request,
        "deliveries/rejections.html",
        title=f"Rejected requests · {target.name}",
        endpoint=target,
        provider=providers.get(target.provider),
        about_template=admin.about(target.provider),
        refusals=refusals,
        kept=REJECTIONS_KEPT,
        when=when,
        ago=ago,
    )


def _test_form(
    request: Request,
    target: Target,
    status_code: int = 200,
    *,
    event_type: str = "",
    email: str = "",
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    delivery_id: int | None = None,
    refused: bool = False,
) -> Response:
    admin = Admin.of(request)
    return admin.render(
        request,
        "deliveries/test_event.html",
        status_code,
        title=f"Send a test event · {target.name}",
        endpoint=target,
        url=admin.settings.endpoint_url(target.id),
        label=providers.get(target.provider).label,
        event_type=event_type or (target.event_types[0] if target.event_types else ""),
        email=email,
        errors=errors or {},
        problem=problem,
        delivery_id=delivery_id,
        refused=refused,
    )


async def test_page(request: Request) -> Response:
    admin = Admin.of(request)
    target = await admin.run(_target, admin.engine, request.path_params["endpoint_id"])
    if target is None:
        return _not_found(request)
    return _test_form(request, target)


async def send_test(request: Request) -> Response:
    """Sign a sample event with the endpoint's first secret and POST it to the endpoint's
    public URL, as the provider would: so the admin sees that URL reach the bridge."""
    admin = Admin.of(request)
    target = await admin.run(_target, admin.engine, request.path_params["endpoint_id"])
    if target is None:
        return _not_found(request)
    form = await request.form()
    event_type, email = str(form.get("event_type", "")), str(form.get("email", "")).strip()

    def again(status_code: int, **shown: Any) -> Response:
        """The form once more, with what was typed and what went wrong."""
        return _test_form(request, target, status_code, event_type=event_type, email=email, **shown)

    errors: dict[str, str] = {}
    if event_type not in target.event_types:
        errors["event_type"] = "Pick one of the event types this endpoint accepts."
    if problem := _email_problem(email):
        errors["email"] = problem
    secret = await admin.run(_first_secret, admin.engine, target.id)
    if secret is None:
        errors["secret"] = "This endpoint has no signing secret yet: add one first."
    if errors or secret is None:
        return again(400, errors=errors)
    provider = providers.get(target.provider)
    body, headers = provider.sample(event_type, email, secret)
    url = admin.settings.endpoint_url(target.id)
    try:
        async with httpx.AsyncClient(
            timeout=SELF_CALL_TIMEOUT, transport=admin.webhook_transport
        ) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return again(
            502,
            problem=f"The bridge could not reach its own webhook URL {url} "
            f"({type(exc).__name__}: {exc or 'no details'}). BRIDGE_PUBLIC_URL must be an "
            f"address where this bridge can be reached, by {provider.label} and by the bridge "
            "itself.",
        )
    try:
        answer = response.json()
        status, reason, delivery_id = answer["status"], answer.get("reason"), answer.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return again(
            502,
            problem=f"{url} answered {response.status_code}, but not the way this bridge "
            "answers: BRIDGE_PUBLIC_URL must reach this bridge, not another server or a "
            "proxy's page.",
        )
    if status in ("queued", "duplicate") and isinstance(delivery_id, int):
        return admin.redirect(
            f"/admin/deliveries/{delivery_id}",
            f"Test {event_type} event for {email} sent through {url}: {status}.",
        )
    if status == "ignored":
        return again(
            200,
            problem=f"The webhook took the test event but ignored it: {reason}",
            delivery_id=delivery_id,
        )
    return again(
        502,
        problem=f"The webhook answered {response.status_code} {status}: {reason}",
        refused=status == "rejected",
    )


routes = [
    Route("/endpoints/{endpoint_id}/rejections", rejections, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/test", test_page, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/test", send_test, methods=["POST"]),
]
