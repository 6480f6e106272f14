"""Admin pages: Loops accounts (a name and an API key each), and how each is doing.

    GET  /accounts                    the accounts: state, queue, rate limit, masked key
    POST /accounts                    add one (name + API key Loops takes)
    GET  /accounts/{id}               one account: its state in words, and the forms below
    POST /accounts/{id}/rate-limit    its own requests per second, or the default
    POST /accounts/{id}/api-key       replace its key by one Loops takes (clears a problem,
                                      queue due now)
    POST /accounts/{id}/test          ask Loops (GET /api-key) whether the key works
    POST /accounts/{id}/delete        delete one no endpoint uses
    POST /accounts/{id}/loops-webhook-secrets               add a Loops webhook secret
    POST /accounts/{id}/loops-webhook-secrets/{sid}/remove  remove one (named by its id)

An account's page also shows its Loops webhook URL (``/loops-webhooks/lw_...``, made when
first shown: :func:`bridge.registry.loops_webhook_url`) with the steps in Loops, its
signing secrets as hints, when Loops' test event last arrived, and how many events Loops
reported in the last 7 days (:mod:`bridge.loops_webhooks`).

A key is checked with Loops before it is added or replaces another (``loops.key_refusal``):
one Loops refuses, or that could not be checked, is refused on the form with the reason,
unless "Save without checking" is ticked (an offline set-up). A failed Test is shown as an
error on the page it was pressed on, not as a notice.

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
from starlette.routing import Route

from bridge import registry
from bridge.accounts import rate_in_use
from bridge.admin.formats import COUNT_CAP, ago, count, row_id, when
from bridge.admin.state import Admin
from bridge.loops import Answer, LoopsClient, Verdict, key_refusal
from bridge.models import QUEUED, Account, AccountState, Delivery, Endpoint, LoopsEvent
from bridge.settings import Settings

__all__ = [
    "STATES",
    "AccountView",
    "LoopsWebhookView",
    "read_accounts",
    "read_loops_webhook",
    "routes",
]

_LIST = "/admin/accounts"
# state -> what the admin reads on its badge
STATES = {
    "healthy": "healthy",
    "key": "key refused",
    "outage": "Loops unreachable",
    "held": "rate-limited",
}


@dataclass(frozen=True, slots=True)
class AccountView:
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
    engine: Engine, account_id: int | None = None, *, queues: bool = True
) -> list[AccountView]:
    """Every account (or the one with ``account_id``), by name, with its state and, unless
    ``queues`` is false, its queue. Queue counts are capped like the overview's, so the page
    stays cheap in an outage."""
    query = select(
        col(Account.id),
        col(Account.name),
        col(Account.api_key),
        col(Account.rate_limit),
        col(AccountState.loops_limit),
        col(AccountState.problem_kind),
        col(AccountState.problem),
        col(AccountState.problem_since),
        col(AccountState.held_until),
        col(AccountState.failures),
    ).outerjoin(AccountState, col(AccountState.account_id) == col(Account.id))
    if account_id is not None:
        query = query.where(col(Account.id) == account_id)
    with engine.connect() as db:
        rows = list(db.execute(query.order_by(col(Account.name))))
        users: dict[int, list[tuple[str, str]]] = {}
        for endpoint in db.execute(
            select(col(Endpoint.id), col(Endpoint.name), col(Endpoint.account_id)).order_by(
                col(Endpoint.name)
            )
        ):
            users.setdefault(endpoint.account_id, []).append((endpoint.id, endpoint.name))
        found = []
        for row in rows:
            queued, oldest = None, None
            if queues:
                queued, oldest = _queue(db, row.id)
            found.append(
                AccountView(
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


def _queue(db: Db, account_id: int) -> tuple[int, tuple[int, float] | None]:
    """How many deliveries of the account are queued (at most ``COUNT_CAP + 1``), and the
    (id, received_at) of the oldest."""
    of_account = (
        col(Delivery.status) == QUEUED,
        col(Delivery.endpoint_id).in_(
            select(col(Endpoint.id)).where(col(Endpoint.account_id) == account_id)
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


WEEK = 7 * 86400


@dataclass(frozen=True, slots=True)
class LoopsWebhookView:
    """An account's Loops webhook as its page shows it: never a secret, only hints."""

    url: str
    secrets: list[tuple[int, str]]  # (id, hint), oldest first
    tested_at: float | None  # the latest testing.testEvent received; None: none yet
    week: int  # events Loops reported in the last 7 days, at most COUNT_CAP + 1
    refused: tuple[float, str] | None  # the latest refused: when, "400: reason"; None: none


def read_loops_webhook(engine: Engine, settings: Settings, name: str) -> LoopsWebhookView:
    url = registry.loops_webhook_url(engine, settings, name)
    secrets = registry.loops_webhook_secrets(engine, name)
    with engine.connect() as db:
        account_id, refused_at, refused = db.execute(
            select(
                col(Account.id),
                col(Account.loops_webhook_refused_at),
                col(Account.loops_webhook_refused),
            ).where(col(Account.name) == name)
        ).one()
        tested_at = db.execute(
            select(func.max(col(LoopsEvent.received_at))).where(
                col(LoopsEvent.event_name) == "testing.testEvent",
                col(LoopsEvent.account_id) == account_id,
            )
        ).scalar()
        recent = (
            select(col(LoopsEvent.id))
            .where(
                col(LoopsEvent.account_id) == account_id,
                col(LoopsEvent.received_at) >= time.time() - WEEK,
            )
            .limit(COUNT_CAP + 1)
            .subquery()
        )
        week: int = db.execute(select(func.count()).select_from(recent)).scalar_one()
    last_refused = (refused_at, refused) if refused_at is not None else None
    return LoopsWebhookView(url, secrets, tested_at, week, last_refused)


def _read_account(engine: Engine, account_id: int) -> AccountView:
    found = read_accounts(engine, account_id)
    if not found:
        raise registry.NotFound(f"No Loops account with id {account_id}.")
    return found[0]


async def _refusal(request: Request, api_key: str) -> str | None:
    """Why Loops does not take ``api_key`` (None: it does), unless the form asked to save it
    without checking."""
    if "no_check" in await request.form():
        return None
    admin = Admin.of(request)
    return await key_refusal(api_key.strip(), admin.settings.loops_api_url, admin.loops_transport)


def _checked(unchecked: bool) -> str:
    """What the notice after a saved key says of its check."""
    if unchecked:
        return " It was saved without checking it with Loops: press Test once Loops answers."
    return " Loops took the key."


def _shown(request: Request, template: str, status_code: int, **context: object) -> Response:
    admin, now = Admin.of(request), time.time()
    return admin.render(
        request,
        template,
        status_code,
        states=STATES,
        default_rate=admin.settings.loops_rate_limit,
        now=now,
        when=when,
        ago=lambda epoch: ago(epoch, now),
        count=count,
        **context,
    )


async def _list_page(
    request: Request,
    status_code: int = 200,
    name: str = "",
    errors: dict | None = None,
    alert: str | None = None,
) -> Response:
    admin = Admin.of(request)
    accounts = await admin.run(read_accounts, admin.engine)
    return _shown(
        request,
        "accounts/list.html",
        status_code,
        title="Loops accounts",
        accounts=accounts,
        name=name,
        errors=errors or {},
        alert=alert,
    )


async def _account_page(
    request: Request,
    status_code: int = 200,
    rate_limit: str | None = None,
    errors: dict | None = None,
    alert: str | None = None,
) -> Response:
    admin = Admin.of(request)
    try:
        account = await admin.run(_read_account, admin.engine, _id(request))
    except registry.NotFound:
        return _not_found(request)
    hook = await admin.run(read_loops_webhook, admin.engine, admin.settings, account.name)
    return _shown(
        request,
        "accounts/show.html",
        status_code,
        title=f"Loops account {account.name}",
        account=account,
        hook=hook,
        rate_limit=rate_limit if rate_limit is not None else str(account.own_rate_limit or ""),
        errors=errors or {},
        alert=alert,
    )


async def index(request: Request) -> Response:
    return await _list_page(request)


async def add(request: Request) -> Response:
    admin = Admin.of(request)
    form = await request.form()
    name, api_key = str(form.get("name", "")), str(form.get("api_key", ""))
    problems = await admin.run(registry.account_problems, admin.engine, name, api_key)
    if not problems and (refusal := await _refusal(request, api_key)):
        problems = {"api_key": refusal}
    if problems:
        return await _list_page(request, 400, name=name, errors=problems)
    try:
        added = await admin.run(registry.add_account, admin.engine, name, api_key)
    except registry.Invalid as exc:  # added meanwhile under the same name
        return await _list_page(request, 400, name=name, errors={"name": str(exc)})
    return admin.redirect(
        _LIST,
        f"Added Loops account {added.name!r} (key {registry.mask(added.api_key)})."
        + _checked("no_check" in form),
    )


async def one(request: Request) -> Response:
    return await _account_page(request)


async def set_rate_limit(request: Request) -> Response:
    admin, account_id = Admin.of(request), _id(request)
    typed = str((await request.form()).get("rate_limit", ""))
    try:
        rate_limit = registry.read_rate_limit(typed)
    except registry.Invalid as exc:
        return await _account_page(request, 400, typed, {"rate_limit": str(exc)})
    try:
        done = await admin.run(
            lambda: registry.update_account(admin.engine, account_id, rate_limit=rate_limit)
        )
    except registry.NotFound:
        return _not_found(request)
    if done.rate_limit is None:
        default = admin.settings.loops_rate_limit
        said = f"the default rate limit ({default} per second, BRIDGE_LOOPS_RATE_LIMIT)"
    else:
        said = f"at most {done.rate_limit} requests per second"
    return admin.redirect(f"{_LIST}/{account_id}", f"Loops account {done.name!r} now uses {said}.")


async def replace_key(request: Request) -> Response:
    admin, account_id = Admin.of(request), _id(request)
    form = await request.form()
    api_key = str(form.get("api_key", ""))
    try:
        await admin.run(registry.get_account, admin.engine, account_id)
    except registry.NotFound:
        return _not_found(request)
    # Local mistakes first: they need no call to Loops.
    problem = await admin.run(registry.key_problem, admin.engine, api_key, account_id)
    if problem or (problem := await _refusal(request, api_key)):
        return await _account_page(request, 400, errors={"api_key": problem})
    try:
        done = await admin.run(
            lambda: registry.update_account(admin.engine, account_id, api_key=api_key)
        )
    except registry.NotFound:
        return _not_found(request)
    except registry.Invalid as exc:
        return await _account_page(request, 400, errors={"api_key": str(exc)})
    deliveries = "delivery is" if done.made_due == 1 else "deliveries are"
    due = f" Its {done.made_due} queued {deliveries} due now." if done.made_due else ""
    return admin.redirect(
        f"{_LIST}/{account_id}",
        f"Replaced the API key of Loops account {done.name!r} (now {done.key_hint}); any "
        f"problem with the old key is cleared.{due}" + _checked("no_check" in form),
    )


async def test(request: Request) -> Response:
    admin = Admin.of(request)
    try:
        account = await admin.run(registry.get_account, admin.engine, _id(request))
    except registry.NotFound:
        return _not_found(request)
    client = LoopsClient(admin.settings.loops_api_url, transport=admin.loops_transport)
    try:
        answer = await client.check_key(account.api_key)
    finally:
        await client.aclose()
    if answer.verdict is Verdict.DONE:
        return admin.redirect(_back(request), _verdict(account.name, answer))
    # Shown as an error where the button was pressed, not in the notice a success gets.
    failed = _verdict(account.name, answer)
    if _back(request) == _LIST:
        return await _list_page(request, alert=failed)
    return await _account_page(request, alert=failed)


async def delete(request: Request) -> Response:
    admin = Admin.of(request)
    try:
        name = await admin.run(registry.delete_account, admin.engine, _id(request))
    except registry.NotFound:
        return _not_found(request)
    except registry.Invalid as exc:
        return admin.redirect(_back(request), f"Not deleted. {exc}")
    return admin.redirect(_LIST, f"Deleted Loops account {name!r}.")


async def add_loops_webhook_secret(request: Request) -> Response:
    admin, account_id = Admin.of(request), _id(request)
    value = str((await request.form()).get("secret", ""))
    try:
        account = await admin.run(registry.get_account, admin.engine, account_id)
        hint = await admin.run(registry.add_loops_webhook_secret, admin.engine, account.name, value)
    except registry.NotFound:
        return _not_found(request)
    except registry.Invalid as exc:
        return await _account_page(request, 400, errors={"secret": str(exc)})
    return admin.redirect(
        f"{_LIST}/{account_id}#loops-webhook",
        f"Added the Loops webhook secret {hint}: Loops' webhooks signed with it are accepted. "
        "Send a test event from Loops (Settings → Webhooks) to check.",
    )


async def remove_loops_webhook_secret(request: Request) -> Response:
    admin, account_id = Admin.of(request), _id(request)
    secret_id = row_id(request.path_params["secret_id"]) or -1
    try:
        hint = await admin.run(
            registry.remove_loops_webhook_secret_by_id, admin.engine, account_id, secret_id
        )
    except registry.NotFound:
        return _not_found(request)
    return admin.redirect(
        f"{_LIST}/{account_id}#loops-webhook", f"Removed the Loops webhook secret {hint}."
    )


routes = [
    Route("/accounts", index, methods=["GET"]),
    Route("/accounts", add, methods=["POST"]),
    Route("/accounts/{account_id}", one, methods=["GET"]),
    Route("/accounts/{account_id}/rate-limit", set_rate_limit, methods=["POST"]),
    Route("/accounts/{account_id}/api-key", replace_key, methods=["POST"]),
    Route("/accounts/{account_id}/test", test, methods=["POST"]),
    Route("/accounts/{account_id}/delete", delete, methods=["POST"]),
    Route(
        "/accounts/{account_id}/loops-webhook-secrets", add_loops_webhook_secret, methods=["POST"]
    ),
    Route(
        "/accounts/{account_id}/loops-webhook-secrets/{secret_id}/remove",
        remove_loops_webhook_secret,
        methods=["POST"],
    ),
]


def _id(request: Request) -> int:
    """The account id from the path; -1 (no such account) when it is not one."""
    return row_id(request.path_params["account_id"]) or -1


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


def _not_found(request: Request) -> Response:
    return Admin.of(request).error(
        request,
        404,
        "No such Loops account",
        "There is no Loops account with this id; it may have been deleted.",
    )
