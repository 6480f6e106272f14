"""A stand-in for the Stripe API, for the tests: what ``bridge/stripe_api.py`` calls, as Stripe
answers it, served on loopback so the test process and a ``loops-bridge`` subprocess (through
BRIDGE_STRIPE_API_URL) both reach it::

    GET /v1/account              the account (a restricted key: 403, as Stripe answers one)
    GET /v1/customers            limit 1..100, starting_after, newest first, has_more
    GET /v1/customers/{id}       the customer; deleted: {id, object, deleted: true};
                                 unknown: 404 resource_missing
    GET /v1/events               type (* wildcard) or types[] (at most 20), created[gt|gte|
                                 lt|lte], limit, starting_after, newest first

**Faithful to Stripe (documented, or seen in Stripe's answers quoted in public issues):**
Bearer auth; the 401 bodies for no key and for an unknown key (masked: ``sk_test_****1234``);
a restricted key lacking a permission gets 403 ``invalid_request_error`` with "The provided
key 'rk_test_***...abcdef' does not have the required permissions for this endpoint on
account 'acct_...'. Having the 'rak_event_read' permission would allow this request to
continue." (stripe/stripe-node#2246, tylerjrichards/st-paywall#45); a restricted key reading
/v1/account is refused naming ``rak_accounts_kyc_id_numbers_read`` even with every Read
(woocommerce/woocommerce-gateway-stripe#634); 429 with ``code: rate_limit`` and "Request rate
limit exceeded." (stripe-node, codecombat/codecombat#2588); 404 ``resource_missing`` "No such
customer: 'cus_...'" with ``param: id``; lists as ``{object: list, data, has_more, url}``,
newest first; deleted customers absent from the list; test-mode keys see test-mode objects
only (``livemode``), and a live object read with a test key is "No such customer ...; a
similar object exists in live mode, but a test mode key was used to make this request.";
an unknown parameter is refused with 400 "Received unknown parameter: ..."; at most 20
``types``.

**Made up:** the account's id and name, the ``Request-Id`` values, the order of objects
created in the same second (the order they were added), ``Retry-After`` on a 429 (only when
a test asks for it: Stripe documents none), and the exact text of the 400s for a bad
``limit``, too many ``types`` or an unknown ``starting_after``.

Objects are built from the real payloads in ``tests/fixtures/stripe`` (see its README).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import hashlib
import itertools
import json
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
ACCOUNT_ID = "acct_1StandinTestAcct"
ACCOUNT_NAME = "Stand-in Test Co"
API_VERSION = "2023-10-16"  # the API version of the captured test-mode events
MAX_TYPES = 20

# Every permission of a secret key that the stand-in checks.
ALL_READ = frozenset({"rak_customer_read", "rak_event_read", "rak_subscription_read"})
_ACCOUNT_PERMISSION = "rak_accounts_kyc_id_numbers_read"


def _fixture(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text())


def _id(prefix: str, *parts: object) -> str:
    """A deterministic Stripe-looking id: ``cus_`` and 14 base-62 characters."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return prefix + "".join(alphabet[b % 62] for b in digest[:14])


# -- objects, from the real payloads -------------------------------------------------------

_CUSTOMER_TEMPLATES = (
    _fixture("stripe-docs/customer.object.json"),
    _fixture("captured-test-mode/customer.created.data.json")["object"],
)
_SUBSCRIPTION_TEMPLATE = _fixture("stripe-docs/subscription.object.json")
_EVENT_TEMPLATE = _fixture("captured-test-mode/invoice.paid.event.json")
INVOICE = _EVENT_TEMPLATE["data"]["object"]  # a real test-mode invoice (invoice.paid)


def customer(
    index: int,
    *,
    email: str | None = "",
    name: str | None = "",
    created: int = 1_714_549_344,
    livemode: bool = False,
) -> dict[str, Any]:
    """One customer, from Stripe's documented and a captured customer (alternately), with
    its own id, email (``customer{index}@example.com`` unless given; None for none), name
    and creation time."""
    obj = copy.deepcopy(_CUSTOMER_TEMPLATES[index % 2])
    obj["id"] = _id("cus_", index, livemode)
    obj["email"] = f"customer{index}@example.com" if email == "" else email
    obj["name"] = f"Customer {index}" if name == "" else name
    obj["created"] = created
    obj["livemode"] = livemode
    obj["invoice_prefix"] = obj["id"][4:12].upper()
    return obj


def customers(
    count: int,
    *,
    start: int = 1_714_549_344,
    deleted_every: int = 0,
    without_email_every: int = 0,
    livemode: bool = False,
) -> list[dict[str, Any]]:
    """``count`` distinct customers, created a second apart from ``start``. Every
    ``deleted_every``-th one is deleted (``deleted: true`` for :meth:`StripeStandin.add`),
    every ``without_email_every``-th one has no email."""
    made = []
    for index in range(count):
        no_email = without_email_every and index % without_email_every == without_email_every - 1
        obj = customer(
            index, email=None if no_email else "", created=start + index, livemode=livemode
        )
        if deleted_every and index % deleted_every == deleted_every - 1:
            obj["deleted"] = True
        made.append(obj)
    return made


def subscription(
    customer_id: str,
    *,
    index: int = 0,
    status: str = "active",
    created: int = 1_714_549_400,
    trial_end: int | None = None,
    cancel_at_period_end: bool = False,
    livemode: bool = False,
) -> dict[str, Any]:
    """A subscription of ``customer_id``, from Stripe's documented subscription object
    (10.00 USD a month; the 2024-09-30.acacia shape, with ``current_period_end`` at the top)."""
    obj = copy.deepcopy(_SUBSCRIPTION_TEMPLATE)
    obj["id"] = _id("sub_", customer_id, index)
    obj["customer"] = customer_id
    obj["status"] = status
    obj["livemode"] = livemode
    period = obj["current_period_end"] - obj["current_period_start"]
    for key in ("created", "billing_cycle_anchor", "start_date", "current_period_start"):
        obj[key] = created
    obj["current_period_end"] = created + period
    obj["trial_end"] = trial_end
    obj["trial_start"] = created if trial_end else None
    obj["cancel_at_period_end"] = cancel_at_period_end
    for item in obj["items"]["data"]:
        item["id"] = _id("si_", obj["id"])
        item["subscription"] = obj["id"]
        item["created"] = created
    obj["items"]["url"] = f"/v1/subscription_items?subscription={obj['id']}"
    return obj


_event_numbers = itertools.count()


def event(
    type: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event of ``type`` about ``obj``, in the envelope of a captured test-mode event."""
    made = copy.deepcopy(_EVENT_TEMPLATE)
    number = next(_event_numbers)
    made["id"] = _id("evt_", type, obj.get("id"), number)
    made["created"] = obj.get("created", 0) if created is None else created
    made["type"] = type
    made["livemode"] = bool(obj.get("livemode"))
    made["pending_webhooks"] = 0
    made["request"] = {"id": _id("req_", number), "idempotency_key": None}
    made["data"] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        made["data"]["previous_attributes"] = previous_attributes
    return made


# -- the server ----------------------------------------------------------------------------


@dataclass
class Key:
    secret: str
    permissions: frozenset[str]  # rak_... a restricted key holds; ALL_READ for a secret key
    livemode: bool


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, list[str]]  # as sent: "types[0]", "created[gte]"
    key_hint: str
    status: int = 0  # 0 while the request is held or running


@dataclass
class Hold:
    """A request held until the test releases it: ``reached`` is set when it arrives."""

    path: str
    page: int | None  # GET /v1/customers: the page (1-based) counted from starting_after
    nth: int | None  # otherwise: the nth request to ``path`` (1-based)
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


def _error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"message": message, "type": type}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        error["param"] = param
    return _json({"error": error}, status, headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_INDENT_2),
        status,
        headers=headers,
        media_type="application/json",
    )


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class StripeStandin:
    """One Stripe account: its keys, customers and events, and what tests inject."""

    def __init__(self, account_id: str = ACCOUNT_ID, account_name: str = ACCOUNT_NAME) -> None:
        self.account_id = account_id
        self.account_name = account_name
        self._lock = threading.Lock()
        self._requests_ids = itertools.count(1)
        self._holds: list[Hold] = []
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/v1/account", self._account),
                Route("/v1/customers", self._list_customers),
                Route("/v1/customers/{id}", self._retrieve_customer),
                Route("/v1/events", self._list_events),
            ]
        )

    def reset(self) -> None:
        """Forget every key, object, request, injected 429 and hold (releasing held
        requests): one served stand-in can serve many tests."""
        self.release_all()
        self.keys: dict[str, Key] = {}
        self._customers: dict[str, dict[str, Any]] = {}  # id -> object
        self._added: dict[str, int] = {}  # id -> when added: the later, the newer in a second
        # livemode -> (ids newest first, id -> its place): rebuilt after each add()
        self._listed: dict[bool, tuple[list[str], dict[str, int]]] | None = None
        self._events: list[dict[str, Any]] = []  # newest first
        self.requests: list[Recorded] = []
        self._rate_limited = 0
        self._retry_after: float | None = None
        self._holds = []

    # -- what a test sets up ---------------------------------------------------------------

    def add_key(self, secret: str, permissions: Iterable[str] | None = None) -> str:
        """A key Stripe accepts. ``sk_...``: every permission; ``rk_...``: only
        ``permissions`` (default: Customers and Events read). Mode from its prefix."""
        if secret.startswith("sk_"):
            granted = ALL_READ
        else:
            granted = frozenset(
                {"rak_customer_read", "rak_event_read"} if permissions is None else permissions
            )
        self.keys[secret] = Key(secret, granted, "_live_" in secret[:8])
        return secret

    def add(self, objects: Iterable[dict[str, Any]]) -> None:
        """Customers (``object: customer``; with ``deleted: true`` for a deleted one) and
        events (``object: event``)."""
        with self._lock:
            for obj in objects:
                if obj["object"] == "event":
                    self._events.append(obj)
                else:
                    self._customers[obj["id"]] = obj
                self._added.setdefault(obj["id"], len(self._added))
            self._listed = None
            self._events.sort(key=lambda e: (e["created"], self._added[e["id"]]), reverse=True)

    def stored_customers(self) -> list[dict[str, Any]]:
        return list(self._customers.values())

    def rate_limit(self, count: int, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests 429, with ``Retry-After`` when given."""
        self._rate_limited = count
        self._retry_after = retry_after

    def hold(self, path: str = "/v1/customers", *, page: int | None = None, nth: int = 1) -> Hold:
        """Hold a request until ``release()``: the customers ``page`` (1-based, counted from
        ``starting_after``, 100 a page, so a resumed import reaches the same page), or the
        ``nth`` request to ``path``."""
        hold = Hold(path, page, None if page is not None else nth)
        self._holds.append(hold)
        return hold

    def release_all(self) -> None:
        for hold in self._holds:
            hold.release()

    def calls(self, path: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if path is None or r.path == path]

    # -- serving ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on a free loopback port in a thread; yields the base URL (for
        ``StripeAPI(base_url=...)`` or BRIDGE_STRIPE_API_URL)."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError("the Stripe stand-in did not start")
                threading.Event().wait(0.01)
            self.url = f"http://127.0.0.1:{port}"
            yield self.url
        finally:
            self.release_all()
            server.should_exit = True
            thread.join(10)
            sock.close()

    # -- Stripe's checks, in Stripe's order ------------------------------------------------

    def _record(self, request: Request) -> tuple[str, Recorded]:
        header = request.headers.get("authorization", "")
        secret = header[7:] if header.lower().startswith("bearer ") else ""
        params: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            params.setdefault(name, []).append(value)
        hint = f"{secret[:8]}…{secret[-4:]}" if len(secret) > 16 else "…"
        recorded = Recorded(request.method, request.url.path, params, hint)
        self.requests.append(recorded)
        return secret, recorded

    def _admit(self, secret: str, permission: str | None) -> Key:
        if not secret:
            raise _Refused(
                _error(
                    401,
                    "You did not provide an API key. You need to provide your API key in the "
                    "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                    "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                    "details, or we can help at https://support.stripe.com/.",
                )
            )
        key = self.keys.get(secret)
        if key is None:
            masked = secret[:8] + "*" * max(len(secret) - 12, 0) + secret[-4:]
            raise _Refused(_error(401, f"Invalid API Key provided: {masked}"))
        if self._rate_limited > 0:
            self._rate_limited -= 1
            headers = {}
            if self._retry_after is not None:
                headers["Retry-After"] = f"{self._retry_after:g}"
            raise _Refused(
                _error(
                    429,
                    "Request rate limit exceeded. Learn more about rate limits here "
                    "https://stripe.com/docs/rate-limits.",
                    code="rate_limit",
                    headers=headers,
                )
            )
        if permission and permission not in key.permissions:
            raise _Refused(self._forbidden(key, permission))
        return key

    @staticmethod
    def _check_params(params: dict[str, list[str]], allowed: set[str]) -> None:
        for name in params:
            base = re.sub(r"\[.*$", "", name)
            if base not in allowed:
                raise _Refused(_error(400, f"Received unknown parameter: {base}", param=base))

    @staticmethod
    def _limit(params: dict[str, list[str]]) -> int:
        text = params.get("limit", ["10"])[-1]
        if not text.isdigit():
            raise _Refused(_error(400, f"Invalid integer: {text}", param="limit"))
        limit = int(text)
        if not 1 <= limit <= 100:
            raise _Refused(
                _error(
                    400,
                    "This value must be greater than or equal to 1."
                    if limit < 1
                    else "This value must be less than or equal to 100.",
                    param="limit",
                )
            )
        return limit

    async def _answer(self, request: Request, permission: str | None, handler: Any) -> Response:
        secret, recorded = self._record(request)
        try:
            key = self._admit(secret, permission)
            response = await handler(request, key, recorded)
        except _Refused as refused:
            response = refused.response
        recorded.status = response.status_code
        response.headers["Request-Id"] = f"req_standin{next(self._requests_ids):08d}"
        return response

    async def _wait_if_held(self, path: str, page: int | None) -> None:
        count = sum(1 for r in self.requests if r.path == path)
        for hold in self._holds:
            if hold.path != path or hold.reached.is_set():
                continue
            if (hold.page is not None and hold.page == page) or (
                hold.nth is not None and hold.nth == count
            ):
                hold.reached.set()
                await asyncio.to_thread(hold.released.wait)

    # -- the endpoints ---------------------------------------------------------------------

    async def _account(self, request: Request) -> Response:
        async def handler(request: Request, key: Key, recorded: Recorded) -> Response:
            self._check_params(recorded.params, {"expand"})
            if not key.secret.startswith("sk_"):
                raise _Refused(self._forbidden(key, _ACCOUNT_PERMISSION))
            account = _fixture("stripe-openapi/account.json")
            account["id"] = self.account_id
            account["settings"]["dashboard"]["display_name"] = self.account_name
            account["business_profile"]["name"] = self.account_name
            return _json(account)

        return await self._answer(request, None, handler)

    def _forbidden(self, key: Key, permission: str) -> Response:
        secret = key.secret
        masked = secret[:8] + "*" * max(len(secret) - 14, 0) + secret[-6:]
        return _error(
            403,
            f"The provided key '{masked}' does not have the required permissions for this "
            f"endpoint on account '{self.account_id}'. Having the '{permission}' permission "
            "would allow this request to continue.",
        )

    def _listing(self, livemode: bool) -> tuple[list[str], dict[str, int]]:
        with self._lock:
            if self._listed is None:
                newest_first = sorted(
                    self._customers.values(),
                    key=lambda c: (c["created"], self._added[c["id"]]),
                    reverse=True,
                )
                self._listed = {}
                for mode in (False, True):
                    ids = [
                        c["id"]
                        for c in newest_first
                        if not c.get("deleted") and bool(c.get("livemode")) == mode
                    ]
                    self._listed[mode] = (ids, {cid: n for n, cid in enumerate(ids)})
            return self._listed[livemode]

    async def _list_customers(self, request: Request) -> Response:
        async def handler(request: Request, key: Key, recorded: Recorded) -> Response:
            params = recorded.params
            self._check_params(
                params,
                {"limit", "starting_after", "ending_before", "email", "created", "expand"},
            )
            limit = self._limit(params)
            ids, positions = self._listing(key.livemode)
            if "email" in params:  # Stripe's exact, case-sensitive match
                ids = [i for i in ids if self._customers[i].get("email") == params["email"][-1]]
                positions = {cid: n for n, cid in enumerate(ids)}
            start = 0
            if "starting_after" in params:
                after = params["starting_after"][-1]
                if after not in positions:
                    raise _Refused(
                        _error(
                            400,
                            f"No such customer: '{after}'",
                            code="resource_missing",
                            param="starting_after",
                        )
                    )
                start = positions[after] + 1
            await self._wait_if_held("/v1/customers", start // 100 + 1)
            page = ids[start : start + limit]
            return _json(
                {
                    "object": "list",
                    "data": [self._customers[i] for i in page],
                    "has_more": start + limit < len(ids),
                    "url": "/v1/customers",
                }
            )

        return await self._answer(request, "rak_customer_read", handler)

    async def _retrieve_customer(self, request: Request) -> Response:
        async def handler(request: Request, key: Key, recorded: Recorded) -> Response:
            self._check_params(recorded.params, {"expand"})
            customer_id = request.path_params["id"]
            await self._wait_if_held(f"/v1/customers/{customer_id}", None)
            obj = self._customers.get(customer_id)
            if obj is None or bool(obj.get("livemode")) != key.livemode:
                message = f"No such customer: '{customer_id}'"
                if obj is not None:
                    live, test = ("live", "test") if obj.get("livemode") else ("test", "live")
                    message += (
                        f"; a similar object exists in {live} mode, but a {test} mode key was "
                        "used to make this request."
                    )
                raise _Refused(_error(404, message, code="resource_missing", param="id"))
            if obj.get("deleted"):
                return _json({"id": obj["id"], "object": "customer", "deleted": True})
            return _json(obj)

        return await self._answer(request, "rak_customer_read", handler)

    async def _list_events(self, request: Request) -> Response:
        async def handler(request: Request, key: Key, recorded: Recorded) -> Response:
            params = recorded.params
            self._check_params(
                params,
                {
                    "limit",
                    "starting_after",
                    "ending_before",
                    "type",
                    "types",
                    "created",
                    "delivery_success",
                    "expand",
                },
            )
            limit = self._limit(params)
            types = [
                v for name, values in params.items() if name.startswith("types[") for v in values
            ]
            if len(types) > MAX_TYPES:
                raise _Refused(
                    _error(
                        400,
                        f"You passed {len(types)} values for types, but the maximum is "
                        f"{MAX_TYPES}.",
                        param="types",
                    )
                )
            patterns = types or params.get("type", [])
            created: dict[str, int] = {}
            for op in ("gt", "gte", "lt", "lte"):
                if f"created[{op}]" in params:
                    created[op] = int(params[f"created[{op}]"][-1])
            if "created" in params:
                created["eq"] = int(params["created"][-1])
            await self._wait_if_held("/v1/events", None)

            def wanted(e: dict[str, Any]) -> bool:
                t = e["created"]
                return (
                    bool(e.get("livemode")) == key.livemode
                    and (not patterns or any(fnmatch.fnmatchcase(e["type"], p) for p in patterns))
                    and t > created.get("gt", t - 1)
                    and t >= created.get("gte", t)
                    and t < created.get("lt", t + 1)
                    and t <= created.get("lte", t)
                    and t == created.get("eq", t)
                )

            with self._lock:
                matching = [e for e in self._events if wanted(e)]
            start = 0
            if "starting_after" in params:
                after = params["starting_after"][-1]
                ids = [e["id"] for e in matching]
                if after not in ids:
                    raise _Refused(
                        _error(
                            400,
                            f"No such event: '{after}'",
                            code="resource_missing",
                            param="starting_after",
                        )
                    )
                start = ids.index(after) + 1
            return _json(
                {
                    "object": "list",
                    "data": matching[start : start + limit],
                    "has_more": start + limit < len(matching),
                    "url": "/v1/events",
                }
            )

        return await self._answer(request, "rak_event_read", handler)
