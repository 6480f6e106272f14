"""Admin pages: Loops accounts (a name and an API key each), and how each is doing.

    GET  /accounts                    the accounts: state, queue, rate limit, masked key
    POST /accounts                    add one (name + API key)
    GET  /accounts/{id}               one account: its state in words, and the forms below
    POST /accounts/{id}/rate-limit    its own requests per second, or the default
    POST /accounts/{id}/api-key       replace its key (clears a problem, queue due now)
    POST /accounts/{id}/test          ask Loops (GET /api-key) whether the key works
    POST /accounts/{id}/delete        delete one no endpoint uses

An account's state is what the workers wrote in ``account_states`` (no row: healthy)::

    healthy        nothing known against it
    key refused    Loops answered 401/403 to its key: deliveries paused, a probe every 30 s
    unreachable    Loops did not answer, or answered 5xx: the account is probed until it does
    rate-limited   Loops answered 429: no delivery starts before ``held_until``

A stored key leaves the database only towards Loops: pages show ``registry.mask`` hints, and
a refused form is shown again without the key that was typed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection as Db
from sqlalchemy.engine import Engine
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge import registry
from bridge.admin import Admin
from bridge.admin.formats import COUNT_CAP, ago, count, when
from bridge.loops import Answer, LoopsClient
from bridge.models import QUEUED, AccountState, Connection, Delivery, Endpoint
from bridge.pacing import rate_in_use

__all__ = ["Account", "read_accounts"]

_LIST = "/admin/accounts"
# state -> what the admin reads on its badge
STATES = {
    "healthy": "healthy",
    "key": "key refused",
    "outage": "Loops unreachable",
    "held": "rate-limited",
}


@dataclass(frozen=True, slots=True)
class Account:
    """A Loops account as the admin shows it: never its key, only a hint."""

    id: int
    name: str
    key_hint: str
    endpoints: list[tuple[str, str]]  # (id, name) of the endpoints that deliver to it
    own_rate_limit: int | None  # None: BRIDGE_LOOPS_RATE_LIMIT
    loops_limit: int | None  # x-ratelimit-limit as Loops last reported it
    problem_kind: str | None  # "outage", "key" or None
    problem: str | None
    problem_since: float | None
    held_until: float | None
    failures: int
    queued: int | None  # at most COUNT_CAP + 1; None: not read
    oldest_queued: tuple[int, float] | None  # (delivery id, received_at)

    def state(self, now: float) -> str:
        """One of :data:`STATES`."""
        if self.problem_kind in ("key", "outage"):
            return self.problem_kind
        return "held" if self.held_until and self.held_until > now else "healthy"

    def configured_rate(self, default: int) -> int:
        return self.own_rate_limit or default

    def rate_in_use(self, default: int) -> int:
        """Requests per second the workers keep to (see :func:`bridge.pacing.rate_in_use`)."""
        return rate_in_use(self.own_rate_limit, default, self.loops_limit)


def read_accounts(
    engine: Engine, connection_id: int | None = None, *, queues: bool = True
) -> list[Account]:
    """Every account (or the one with ``connection_id``), by name, with its state and, unless
    ``queues`` is false, its queue. Queue counts are capped like the overview's, so the page
    stays cheap in an outage."""
    connections = select(
        col(Connection.id),
        col(Connection.name),
        col(Connection.api_key),
        col(Connection.rate_limit),
        col(AccountState.loops_limit),
        col(AccountState.problem_kind),
        col(AccountState.problem),
        col(AccountState.problem_since),
        col(AccountState.held_until),
        col(AccountState.failures),
    ).outerjoin(AccountState, col(AccountState.connection_id) == col(Connection.id))
    if connection_id is not None:
        connections = connections.where(col(Connection.id) == connection_id)
    with engine.connect() as db:
        rows = list(db.execute(connections.order_by(col(Connection.name))))
        users: dict[int, list[tuple[str, str]]] = {}
        for endpoint in db.execute(
            select(col(Endpoint.id), col(Endpoint.name), col(Endpoint.connection_id)).order_by(
                col(Endpoint.name)
            )
        ):
            users.setdefault(endpoint.connection_id, []).append((endpoint.id, endpoint.name))
        found = []
        for row in rows:
            queued, oldest = None, None
            if queues:
                queued, oldest = _queue(db, row.id)
            found.append(
                Account(
                    id=row.id,
                    name=row.name,
                    key_hint=registry.mask(row.api_key),
                    endpoints=users.get(row.id, []),
                    own_rate_limit=row.rate_limit,
                    loops_limit=row.loops_limit,
                    problem_kind=row.problem_kind,
                    problem=row.problem,
                    problem_since=row.problem_since,
                    held_until=row.held_until,
                    failures=row.failures or 0,
                    queued=queued,
                    oldest_queued=oldest,
                )
            )
        return found


def _queue(db: Db, connection_id: int) -> tuple[int, tuple[int, float] | None]:
    """How many deliveries of the account are queued (at most ``COUNT_CAP + 1``), and the
    (id, received_at) of the oldest."""
    of_account = (
        col(Delivery.status) == QUEUED,
        col(Delivery.endpoint_id).in_(
            select(col(Endpoint.id)).where(col(Endpoint.connection_id) == connection_id)
        ),
    )
    capped = select(col(Delivery.id)).where(*of_account).limit(COUNT_CAP + 1).subquery()
    queued: int = db.execute(select(func.count()).select_from(capped)).scalar_one()
    oldest = db.execute(
        select(col(Delivery.id), col(Delivery.received_at))
        .where(*of_account)
        .order_by(col(Delivery.received_at))
        .limit(1)
    ).first()
    return queued, (oldest.id, oldest.received_at) if oldest else None


def _read_account(engine: Engine, connection_id: int) -> Account:
    found = read_accounts(engine, connection_id)
    if not found:
        raise registry.NotFound(f"No Loops account with id {connection_id}.")
    return found[0]


def routes(admin: Admin) -> list[BaseRoute]:
    default_rate = admin.settings.loops_rate_limit

    def shown(request: Request, template: str, status_code: int, **context: object) -> Response:
        now = time.time()
        return admin.render(
            request,
            template,
            status_code,
            states=STATES,
            default_rate=default_rate,
            now=now,
            when=when,
            ago=lambda epoch: ago(epoch, now),
            count=count,
            **context,
        )

    async def page(
        request: Request, status_code: int = 200, name: str = "", errors: dict | None = None
    ) -> Response:
        accounts = await admin.run(read_accounts, admin.engine)
        return shown(
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

    async def account_page(
        request: Request,
        status_code: int = 200,
        rate_limit: str | None = None,
        errors: dict | None = None,
    ) -> Response:
        try:
            account = await admin.run(_read_account, admin.engine, _id(request))
        except registry.NotFound:
            return _not_found(admin, request)
        return shown(
            request,
            "accounts/show.html",
            status_code,
            title=f"Loops account {account.name}",
            account=account,
            rate_limit=(
                rate_limit if rate_limit is not None else str(account.own_rate_limit or "")
            ),
            errors=errors or {},
        )

    async def one(request: Request) -> Response:
        return await account_page(request)

    async def set_rate_limit(request: Request) -> Response:
        connection_id = _id(request)
        typed = str((await request.form()).get("rate_limit", ""))
        try:
            rate_limit = registry.read_rate_limit(typed)
        except registry.Invalid as exc:
            return await account_page(request, 400, typed, {"rate_limit": str(exc)})
        try:
            done = await admin.run(
                lambda: registry.update_connection(
                    admin.engine, connection_id, rate_limit=rate_limit
                )
            )
        except registry.NotFound:
            return _not_found(admin, request)
        if done.rate_limit is None:
            said = f"the default rate limit ({default_rate} per second, BRIDGE_LOOPS_RATE_LIMIT)"
        else:
            said = f"at most {done.rate_limit} requests per second"
        return admin.redirect(
            f"{_LIST}/{connection_id}", f"Loops account {done.name!r} now uses {said}."
        )

    async def replace_key(request: Request) -> Response:
        connection_id = _id(request)
        api_key = str((await request.form()).get("api_key", ""))
        try:
            done = await admin.run(
                lambda: registry.update_connection(admin.engine, connection_id, api_key=api_key)
            )
        except registry.NotFound:
            return _not_found(admin, request)
        except registry.Invalid as exc:
            return await account_page(request, 400, errors={"api_key": str(exc)})
        deliveries = "delivery is" if done.made_due == 1 else "deliveries are"
        due = f" Its {done.made_due} queued {deliveries} due now." if done.made_due else ""
        return admin.redirect(
            f"{_LIST}/{connection_id}",
            f"Replaced the API key of Loops account {done.name!r} (now {done.key_hint}); any "
            f"problem with the old key is cleared.{due}",
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
        return admin.redirect(_back(request), _verdict(connection.name, answer))

    async def delete(request: Request) -> Response:
        connection_id = _id(request)
        try:
            name = await admin.run(registry.delete_connection, admin.engine, connection_id)
        except registry.NotFound:
            return _not_found(admin, request)
        except registry.Invalid as exc:
            return admin.redirect(_back(request), f"Not deleted. {exc}")
        return admin.redirect(_LIST, f"Deleted Loops account {name!r}.")

    return [
        Route("/accounts", show, methods=["GET"]),
        Route("/accounts", add, methods=["POST"]),
        Route("/accounts/{connection_id}", one, methods=["GET"]),
        Route("/accounts/{connection_id}/rate-limit", set_rate_limit, methods=["POST"]),
        Route("/accounts/{connection_id}/api-key", replace_key, methods=["POST"]),
        Route("/accounts/{connection_id}/test", test, methods=["POST"]),
        Route("/accounts/{connection_id}/delete", delete, methods=["POST"]),
    ]


def _id(request: Request) -> int:
    """The account id from the path; -1 (no such account) when it is not a number."""
    raw = request.path_params["connection_id"]
    return int(raw) if raw.isdigit() else -1


def _back(request: Request) -> str:
    """Where a Test or Delete button was pressed: the account's page or the list."""
    return f"{_LIST}/{_id(request)}" if request.query_params.get("from") == "account" else _LIST


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
