"""The Stripe API client: every call the bridge makes to Stripe with an endpoint's API key.

Three features read from Stripe (issue 13): ``backfill`` pages through the customers,
``recover`` lists the events it missed, and a subscription event looks its customer up at
delivery time. All of them go through :class:`StripeAPI`, one per key, which goes through the
``stripe`` library (https://docs.stripe.com/api) and decides here what each answer means::

    Stripe answers                  StripeAPI does
    2xx                             returns plain dicts, as Stripe sent them
    429 (code rate_limit)           waits Retry-After, or 1, 2, 4 .. 30 s when not given (the
                                    backoff Stripe recommends: https://docs.stripe.com/rate-limits),
                                    through the injected ``sleep``; after ``max_waits`` waits
                                    raises StripeAPIError(kind="rate_limited")
    401                             StripeAPIError(kind="key_refused")
    403 (restricted key)            StripeAPIError(kind="permission", permission="rak_...")
    404 on one customer             customer() returns None (deleted customers too)
    no answer (DNS, refused, TLS)   StripeAPIError(kind="unreachable"), naming the URL and
                                    BRIDGE_STRIPE_API_URL
    anything else (5xx, 400)        StripeAPIError(kind="stripe"), with Stripe's own message

:meth:`StripeAPI.check` turns the first two refusals into a :class:`KeyCheck` instead: what
an admin reads before saving a key. No message here holds the key, only its hint
(``rk_test_…a1b2``): Stripe's own messages quote a masked key, so they are never passed on
for a 401 or a 403.

The ``stripe`` library is used through a ``StripeClient`` of our own (``stripe.api_key`` is
never set) with its network retries off, as the waits above are ours. Two settings of the
library are module-wide, so they are set here, on import: its telemetry is off
(``stripe.enable_telemetry``: else it writes a ``telemetry_id`` file under ~/.config/stripe
and sends platform details with each request), and its logger ("stripe") is at WARNING
(else every request is an INFO line, and every answer's body, customers' emails included,
a DEBUG one). Calls use ``raw_request`` rather than the typed services: the bridge wants the
JSON exactly as Stripe sent it (a recovered event is fed to the inbox as a webhook body), not
the library's objects.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import stripe

__all__ = ["MAX_TYPES", "KeyCheck", "StripeAPI", "StripeAPIError", "key_hint"]

stripe.enable_telemetry = False
# The library logs each request at INFO and each answer's body (customers' emails) at DEBUG;
# the bridge says itself what a person needs to know.
logging.getLogger("stripe").setLevel(logging.WARNING)

MAX_TYPES = 20  # Stripe's events list takes at most 20 `types[]`
PAGE_SIZE = 100  # the largest page Stripe lists
MAX_BACKOFF = 30.0  # seconds: the longest wait on a 429 that gives no Retry-After
TIMEOUT = 30  # seconds for one call

# What the bridge reads, as Stripe's dashboard names each permission of a restricted key.
CUSTOMERS_READ = "rak_customer_read"
EVENTS_READ = "rak_event_read"
PERMISSION_NAMES = {CUSTOMERS_READ: "Customers: Read", EVENTS_READ: "Events: Read"}

_PERMISSION = re.compile(r"Having the '(rak_\w+)' permission")
_ACCOUNT = re.compile(r"on account '(acct_\w+)'")


HINTED_LENGTH = 16  # a shorter key is shown as "…" alone, and is no Stripe key


def key_hint(key: str) -> str:
    """``rk_test_…a1b2``: the key's kind and mode, and its last 4 characters."""
    match = re.match(r"(?:sk|rk|pk)_(?:test|live)_", key)
    prefix = match.group(0) if match else ""
    return f"{prefix}…{key[-4:]}" if len(key) >= HINTED_LENGTH else "…"


def _mode(key: str) -> bool | None:
    if re.match(r"(?:sk|rk)_live_", key):
        return True
    if re.match(r"(?:sk|rk)_test_", key):
        return False
    return None


class StripeAPIError(Exception):
    """A Stripe call that did not get its answer; ``str()`` says what the person must do.

    ``kind``: ``key_refused`` (401), ``permission`` (403; ``permission`` is the missing
    ``rak_...`` when Stripe named it), ``rate_limited`` (429 after every wait),
    ``unreachable`` (no answer), ``stripe`` (anything else: 5xx, a refused request)."""

    def __init__(
        self,
        message: str,
        kind: str,
        *,
        permission: str | None = None,
        status: int | None = None,
        account_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.permission = permission
        self.status = status  # Stripe's HTTP status; None when it never answered
        self.account_id = account_id  # acct_...: a 403 names the key's account

    @property
    def retryable(self) -> bool:
        """Worth trying again later unchanged (Stripe busy, failing or out of reach), rather
        than waiting for a person to fix the key or the request."""
        if self.kind == "stripe":
            return self.status is None or self.status >= 500
        return self.kind in ("rate_limited", "unreachable")


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """What Stripe says about a key, for the admin who pastes it."""

    hint: str  # rk_test_…a1b2
    kind: str  # "restricted" (rk_), "secret" (sk_) or "other"
    livemode: bool | None  # from the key's prefix; None when the prefix says neither
    account_id: str | None  # acct_...: read from /v1/account, or from Stripe's 403 message
    account_name: str | None  # the account's display name, when the key may read it
    missing: tuple[str, ...]  # permissions the bridge needs and the key lacks: rak_...
    problems: tuple[str, ...]  # the key cannot be used as it is: what to fix
    warnings: tuple[str, ...]  # usable, but worth knowing

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mode(self) -> str:
        return {True: "live", False: "test", None: "unknown"}[self.livemode]


class StripeAPI:
    """One Stripe API key's calls. ``base_url`` is ``settings.stripe_api_url``."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_waits: int = 6,
    ) -> None:
        self._hint = key_hint(api_key)
        self._kind = {"rk_": "restricted", "sk_": "secret"}.get(api_key[:3], "other")
        self._length = len(api_key)  # under HINTED_LENGTH: cut short when it was copied
        self._livemode = _mode(api_key)
        self._base_url = base_url.rstrip("/")
        self._sleep = sleep
        self._max_waits = max_waits
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self._base_url},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=TIMEOUT),
        )

    def __repr__(self) -> str:
        return f"StripeAPI({self._hint}, {self._base_url})"

    # -- the calls -------------------------------------------------------------------------

    def check(self) -> KeyCheck:
        """Try the key: the account it belongs to, and whether it may read customers and
        events. A refused key or a missing permission is a problem in the answer; Stripe out of
        reach, or busy past every wait, raises :class:`StripeAPIError`."""
        key, kind = self._hint, self._kind
        warnings: list[str] = []
        if self._length < HINTED_LENGTH:
            problem = (
                f"The key is {self._length} characters long, too short to be a Stripe "
                "API key (they are about 100): it looks cut short when it was copied. Copy it "
                "again from Stripe's dashboard: Developers → API keys."
            )
            return KeyCheck(key, kind, self._livemode, None, None, (), (problem,), ())
        if kind == "other":
            problem = (
                f"The key {key} is not a Stripe secret or restricted API key. Paste a restricted "
                "key (rk_live_... or rk_test_...) from Stripe's dashboard: Developers → API keys."
            )
            if key.startswith("pk_"):
                problem = (
                    f"The key {key} is a publishable key, which cannot read customers or "
                    "events. Paste a restricted key (rk_live_... or rk_test_...) from Stripe's "
                    "dashboard: Developers → API keys → Create restricted key, with Customers: "
                    "Read and Events: Read."
                )
            return KeyCheck(key, kind, self._livemode, None, None, (), (problem,), ())
        if kind == "secret":
            warnings.append(
                f"The key {key} is a secret key: it can do anything in your Stripe account, "
                "and the bridge only reads. A restricted key is safer: in Stripe's dashboard, "
                "Developers → API keys → Create restricted key, with Customers: Read and Events: "
                "Read, then paste it here instead."
            )

        account_id = account_name = None
        try:
            account = self._get("/v1/account")
            account_id = account.get("id")
            settings = account.get("settings") or {}
            profile = account.get("business_profile") or {}
            account_name = (settings.get("dashboard") or {}).get("display_name") or profile.get(
                "name"
            )
        except StripeAPIError as error:
            if error.kind == "key_refused":
                return KeyCheck(key, kind, self._livemode, None, None, (), (str(error),), ())
            if error.kind != "permission":
                raise
            # A restricted key may not read the account (Stripe asks for a permission no key
            # needs here); its 403 message still names the account.
            account_id = error.account_id

        missing = []
        for path, permission in (("/v1/customers", CUSTOMERS_READ), ("/v1/events", EVENTS_READ)):
            try:
                self._get(path, limit=1)
            except StripeAPIError as error:
                if error.kind != "permission":
                    raise
                missing.append(permission)
                account_id = account_id or error.account_id
        problems = []
        if missing:
            names = " and ".join(PERMISSION_NAMES[p] for p in missing)
            problems.append(
                f"The key {key} may not read what the bridge needs: it lacks {names}. In "
                "Stripe's dashboard, Developers → API keys → this restricted key → Edit, set "
                "Customers: Read and Events: Read (or create a new restricted key with both), "
                "then paste the key again."
            )
        return KeyCheck(
            key,
            kind,
            self._livemode,
            account_id,
            account_name,
            tuple(missing),
            tuple(problems),
            tuple(warnings),
        )

    def customer_pages(
        self, starting_after: str | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Every customer, 100 a page, newest first as Stripe lists them, from the one after
        ``starting_after`` (a customer id; None: from the start). Each page comes with the id
        to resume after. Stripe's list holds no deleted customer; a ``deleted: true`` object
        would be passed on as it is."""
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if starting_after:
                params["starting_after"] = starting_after
            page = self._get("/v1/customers", **params)
            customers = page.get("data") or []
            if not customers:
                return
            starting_after = customers[-1]["id"]
            yield customers, starting_after
            if not page.get("has_more"):
                return

    def events(self, types: Sequence[str], since: int) -> list[bytes]:
        """Every event of ``types`` created at or after ``since`` (unix seconds), oldest first,
        each as the JSON of the event object: the body a webhook of it carries. Stripe keeps
        events for 30 days."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(types), MAX_TYPES):
            chunk = list(types[start : start + MAX_TYPES])
            starting_after = None
            while True:
                params: dict[str, Any] = {
                    "types": chunk,
                    "created": {"gte": since},
                    "limit": PAGE_SIZE,
                }
                if starting_after:
                    params["starting_after"] = starting_after
                page = self._get("/v1/events", **params)
                events = page.get("data") or []
                for event in events:
                    found.setdefault(event["id"], event)
                if not events or not page.get("has_more"):
                    break
                starting_after = events[-1]["id"]
        # Stripe lists newest first; reversed, a stable sort by time keeps its order within a
        # second.
        ordered = sorted(reversed(found.values()), key=lambda event: event.get("created", 0))
        return [json.dumps(event, indent=2).encode() for event in ordered]

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """One customer, or None when Stripe has no such customer or it was deleted."""
        try:
            customer = self._get(f"/v1/customers/{customer_id}")
        except StripeAPIError as error:
            if error.status == 404:
                return None
            raise
        return None if customer.get("deleted") else customer

    # -- one request, and what its answer means ---------------------------------------------

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        waits = 0
        while True:
            try:
                response = self._client.raw_request("get", path, **params)
                return json.loads(response.body)
            except stripe.RateLimitError as error:
                if waits >= self._max_waits:
                    raise StripeAPIError(
                        f"Stripe kept answering 429 (rate limited) to GET {path} after "
                        f"{waits} waits. Something else may be using this Stripe account's API "
                        "rate limit heavily; try again in a few minutes.",
                        "rate_limited",
                    ) from None
                self._sleep(_retry_after(error.headers) or min(2.0**waits, MAX_BACKOFF))
                waits += 1
            except stripe.StripeError as error:
                raise self._explain(path, error) from None

    def _explain(self, path: str, error: stripe.StripeError) -> StripeAPIError:
        message = error.user_message or ""
        status = error.http_status
        if isinstance(error, stripe.APIConnectionError):
            return StripeAPIError(
                f"Could not reach the Stripe API at {self._base_url} (GET {path}): "
                f"{type(error).__name__}. Check the network, or BRIDGE_STRIPE_API_URL if the "
                "bridge should reach Stripe through a proxy.",
                "unreachable",
            )
        if isinstance(error, stripe.AuthenticationError):
            return StripeAPIError(
                f"Stripe refused the API key {self._hint} (401): it is not a valid key, or it "
                "was deleted or rolled. Create a restricted key in Stripe's dashboard "
                "(Developers → API keys, with Customers: Read and Events: Read) and replace "
                "the endpoint's key with it.",
                "key_refused",
                status=status,
            )
        if isinstance(error, stripe.PermissionError):
            permission = _PERMISSION.search(message)
            name = permission.group(1) if permission else None
            needed = PERMISSION_NAMES.get(name or "", name or "a permission it needs")
            account = _ACCOUNT.search(message)
            return StripeAPIError(
                f"Stripe refused GET {path} with the key {self._hint} (403): the restricted "
                f"key lacks {needed}. In Stripe's dashboard, Developers → API keys → this "
                "restricted key → Edit, set Customers: Read and Events: Read.",
                "permission",
                permission=name,
                status=status,
                account_id=account.group(1) if account else None,
            )
        return StripeAPIError(
            f"Stripe answered {status or 'with an error'} to GET {path}: "
            f"{message or type(error).__name__}",
            "stripe",
            status=status,
        )


def _retry_after(headers: Any) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if 0 <= seconds <= 3600 else None
    return None
