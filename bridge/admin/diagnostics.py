"""Admin pages for an endpoint's troubles: its refused requests, and a test event sent
through the bridge's own webhook URL.

    GET  /rejections                    the most recent refused requests of every endpoint
    GET  /endpoints/{id}/rejections     the endpoint's most recent refused requests
    GET  /endpoints/{id}/test           pick an event type and an email address...
    POST /endpoints/{id}/test           ...and send it as the provider would

A test event never changes a contact Loops already has. Its sample carries no names, so only
a user id or a deletion could: for those, Loops is asked for the contact first (``GET
/contacts/find``), and the sample is about the userId Loops has for it. A type that would
still change it is refused for that address: a deletion (unless the endpoint's on-delete is
"ignore"), or, on a platform with user ids, a contact without one, which the test user's id
would be given to. An address Loops does not have gets a new contact, as a real event would
make it.
"""

from __future__ import annotations

import json
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
from bridge.loops import LoopsClient, Verdict
from bridge.models import Account, Endpoint, Rejection, Secret

SELF_CALL_TIMEOUT = 10.0  # seconds for the test event's trip through the public URL
ALL_SHOWN = 200  # refused requests listed across every endpoint (each keeps REJECTIONS_KEPT)
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")  # what Loops takes, roughly


@dataclass(frozen=True, slots=True)
class Refusal:
    at: float
    status_code: int
    reason: str
    headers: dict[str, str]
    endpoint_id: str
    endpoint_name: str


def _rejections(engine: Engine, endpoint_id: str | None = None) -> list[Refusal]:
    """The newest refused requests of one endpoint (all it keeps), or of every endpoint."""
    query = select_models(Rejection, Endpoint.name).join(
        Endpoint, col(Endpoint.id) == col(Rejection.endpoint_id)
    )
    if endpoint_id is not None:
        query = query.where(Rejection.endpoint_id == endpoint_id)
    query = query.order_by(col(Rejection.id).desc()).limit(
        REJECTIONS_KEPT if endpoint_id is not None else ALL_SHOWN
    )
    with Session(engine) as session:
        return [
            Refusal(
                row.at,
                row.status_code,
                row.reason,
                json_object(row.headers),
                row.endpoint_id,
                name,
            )
            for row, name in session.exec(query)
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
    on_delete: str


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
            on_delete=endpoint.on_delete,
        )


def _credentials(engine: Engine, endpoint_id: str) -> tuple[str | None, str]:
    """The endpoint's first signing secret (None: it has none yet) and its Loops account's
    API key."""
    query = (
        select_models(Secret.value)
        .where(Secret.endpoint_id == endpoint_id)
        .order_by(col(Secret.id))
        .limit(1)
    )
    with Session(engine) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        account = session.get(Account, endpoint.account_id) if endpoint else None
        return session.exec(query).first(), account.api_key if account else ""


async def _loops_contact(
    admin: Admin, api_key: str, email: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(the contact Loops has for ``email``, or None; what went wrong, when Loops could not
    tell)."""
    client = LoopsClient(admin.settings.loops_api_url, transport=admin.loops_transport)
    try:
        answer = await client.find_contact(api_key, {"email": email})
    finally:
        await client.aclose()
    try:
        found = json.loads(answer.response_body) if answer.verdict is Verdict.DONE else None
    except ValueError:
        found = None
    if not isinstance(found, list):
        said = answer.message if answer.verdict is not Verdict.DONE else "not a list of contacts"
        return None, f"Loops did not say whether {email} is already a contact ({said})"
    return (found[0] if found and isinstance(found[0], dict) else None), None


def _change(target: Target, event: providers.Event, contact: dict[str, Any]) -> str | None:
    """How the test ``event`` would change the ``contact`` Loops has, or None."""
    if event.deletion and target.on_delete != "ignore":
        done = "delete it" if target.on_delete == "delete" else "unsubscribe it"
        return (
            f"{contact.get('email')} is a contact in Loops: a test {event.type} would {done} "
            f"(this endpoint's on-delete is {target.on_delete}). A test event never changes "
            "a contact Loops has: test deletions with an address Loops does not have."
        )
    if event.user_id and event.user_id != contact.get("userId"):
        return (
            f"{contact.get('email')} is a contact in Loops without a userId: a test "
            f"{providers.get(target.provider).label} event would give it the test user's id. "
            "A test event never changes a contact Loops has: use an address Loops does not "
            "have, or one it has with its userId."
        )
    return None


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


async def every_rejection(request: Request) -> Response:
    """One list for every endpoint: the commonest set-up failure, a wrong secret or a proxy
    that changes the request, shows up here whichever endpoint it hits."""
    admin = Admin.of(request)
    refusals = await admin.run(_rejections, admin.engine)
    return admin.render(
        request,
        "deliveries/rejections.html",
        title="Rejected requests",
        endpoint=None,
        about_template=admin.about(""),  # said per endpoint, on its own list
        refusals=refusals,
        kept=ALL_SHOWN,
        kept_each=REJECTIONS_KEPT,
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
    secret, api_key = await admin.run(_credentials, admin.engine, target.id)
    if secret is None:
        errors["secret"] = "This endpoint has no signing secret yet: add one first."
    if errors or secret is None:
        return again(400, errors=errors)
    provider = providers.get(target.provider)
    body, headers = provider.sample(event_type, email, secret)
    event = provider.parse(body, headers)
    # Without names, only a user id or a deletion could change a contact Loops has: then
    # Loops is asked for it first.
    if event.user_id or (event.deletion and target.on_delete != "ignore"):
        contact, unasked = await _loops_contact(admin, api_key, email)
        if unasked:
            return again(
                502,
                problem=f"{unasked}. A test event is sent only where it cannot change a "
                "contact Loops has: try again once Loops answers (see the Loops account "
                f"{target.account_name}).",
            )
        user_id = contact.get("userId") if contact else None
        if event.user_id and isinstance(user_id, str) and user_id:  # the user Loops has
            body, headers = provider.sample(event_type, email, secret, user_id)
            event = provider.parse(body, headers)
        if contact and (change := _change(target, event, contact)):
            return again(400, errors={"email": change})
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
    Route("/rejections", every_rejection, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/rejections", rejections, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/test", test_page, methods=["GET"]),
    Route("/endpoints/{endpoint_id}/test", send_test, methods=["POST"]),
]
