"""Loops accounts and endpoints: create, list, change.

The CLI and the admin pages both go through these functions, so every rule (names unique,
event types known to the provider, secrets never read back) is checked in one place.
Errors are :class:`Invalid` with a message that says what to fix.
"""

from __future__ import annotations

import enum
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select

import providers
from bridge import accounts, loops_webhooks, stripe_api
from bridge.models import (
    DEAD,
    DELIVERED,
    FAILED,
    ON_DELETE,
    QUEUED,
    Account,
    Contact,
    Delivery,
    Endpoint,
    LoopsCall,
    LoopsEvent,
    LoopsWebhookSecret,
    Rejection,
    Secret,
    UnsupportedEvent,
)

if TYPE_CHECKING:
    from bridge.settings import Settings

_LOOPS_EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,99}$")
_MAILING_LIST_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
RATE_LIMITS = range(1, 1001)  # requests per second a Loops account may be given


class Invalid(ValueError):
    """Input a person must correct; the message says how."""


class NotFound(Invalid):
    """No Loops account or endpoint with that id (the admin answers 404)."""


def mask(secret: str) -> str:
    """A hint that identifies a secret without revealing it: ``whsec_…c0ff``. Only a kind
    prefix of lower-case letters is kept, never the start of a random secret."""
    kind = re.match(r"[a-z]{3,7}_", secret)
    prefix = kind.group() if kind else ""
    return f"{prefix}…{secret[-4:]}" if len(secret) > 12 else "…"


@dataclass(frozen=True, slots=True)
class EndpointView:
    """An endpoint as shown to people and scripts: never a secret, only hints."""

    id: str
    name: str
    account: str
    provider: str
    event_types: list[str]
    user_group: str | None
    loops_event: str | None
    loops_events: dict[str, str]
    mailing_lists: list[str]
    on_delete: str
    sync_names: bool
    paused: bool
    secret_hints: list[str]
    stripe_key_hint: str | None = None  # the endpoint's Stripe API key, as a hint

    def as_dict(self, url: str) -> dict:
        return {
            "id": self.id,
            "url": url,
            "name": self.name,
            "account": self.account,
            "provider": self.provider,
            "event_types": self.event_types,
            "user_group": self.user_group,
            "loops_event": self.loops_event,
            "loops_events": self.loops_events,
            "mailing_lists": self.mailing_lists,
            "on_delete": self.on_delete,
            "sync_names": self.sync_names,
            "paused": self.paused,
            "signing_secrets": self.secret_hints,
            "waiting_for_secret": not self.secret_hints,
            "stripe_api_key": self.stripe_key_hint,
        }


def account_problems(engine: Engine, name: str, api_key: str) -> dict[str, str]:
    """Field (``name``, ``api_key``) -> what to fix; empty when the account can be added."""
    name, api_key = name.strip(), api_key.strip()
    found: dict[str, str] = {}
    if not name:
        found["name"] = "Give the Loops account a name, e.g. acme."
    else:
        with Session(engine) as session:
            if session.exec(select(Account).where(Account.name == name)).first():
                found["name"] = f"A Loops account named {name!r} already exists; pick another name."
    if problem := key_problem(engine, api_key):
        found["api_key"] = problem
    return found


def key_problem(engine: Engine, api_key: str, but: int | None = None) -> str | None:
    """What is wrong with ``api_key`` as the key of a Loops account (``but``: the account
    it replaces the key of), before Loops is asked; None if nothing."""
    return _key_problem(api_key) or _key_in_use(engine, api_key, but)


def _key_in_use(engine: Engine, api_key: str, but: int | None = None) -> str | None:
    """Why ``api_key`` cannot be added: another account of the bridge has it. Two names for
    one key would get a pace each and together go past Loops' limit for the team."""
    with Session(engine) as session:
        for account in session.exec(select(Account)):  # keys are encrypted: compared here
            if account.id != but and hmac.compare_digest(
                account.api_key.encode(), api_key.strip().encode()
            ):
                return (
                    f"This API key is already the key of the Loops account {account.name!r}; "
                    "add endpoints to that account instead, so that one pace keeps both "
                    "within Loops' limit."
                )
    return None


def _key_problem(api_key: str) -> str | None:
    api_key = api_key.strip()
    if not api_key:
        return "The Loops API key is empty: copy it from Loops, Settings → API."
    if not all("!" <= c <= "~" for c in api_key):
        # The key goes into an HTTP header, and no Loops key has such a character. The
        # message never repeats the key, nor the character, which may be part of it.
        return (
            "The Loops API key holds a space, a line break or a character that is not plain "
            "ASCII, and no Loops key does: copy it again from Loops, Settings → API."
        )
    return None


def add_account(engine: Engine, name: str, api_key: str) -> Account:
    problems = account_problems(engine, name, api_key)
    if problems:
        raise Invalid(" ".join(problems.values()))
    name, api_key = name.strip(), api_key.strip()
    with Session(engine) as session:
        account = Account(name=name, api_key=api_key, created_at=time.time())
        session.add(account)
        session.commit()
        session.refresh(account)
        return account


def list_accounts(engine: Engine) -> list[Account]:
    with Session(engine) as session:
        return list(session.exec(select(Account).order_by(Account.name)))


def get_account(engine: Engine, account_id: int) -> Account:
    with Session(engine) as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"No Loops account with id {account_id}.")
        return account


def delete_account(engine: Engine, account_id: int) -> str:
    """Delete a Loops account no endpoint uses, with what the bridge knows of its contacts.
    Returns its name."""
    with Session(engine) as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"No Loops account with id {account_id}.")
        name = account.name
        users = session.exec(select(Endpoint.name).where(Endpoint.account_id == account_id))
        in_use = sorted(users)
        if in_use:
            raise Invalid(
                f"Loops account {name!r} is used by endpoint(s) {', '.join(in_use)}: move them "
                "to another Loops account or delete them first."
            )
        for model in (Contact, LoopsEvent, LoopsWebhookSecret):
            session.exec(delete(model).where(col(model.account_id) == account_id))  # type: ignore[attr-defined]
        accounts.forget(session.connection(), account_id)
        session.delete(account)
        session.commit()
        return name


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP  # update_account(rate_limit=KEEP): leave the rate limit as it is


def read_rate_limit(text: str, default: str = "leave it blank") -> int | None:
    """A rate limit as a person types it: blank is None (BRIDGE_LOOPS_RATE_LIMIT applies),
    else a whole number of requests per second from 1 to 1000. ``default``: how the person
    asks for the default where they typed it (a form: leave it blank)."""
    text = text.strip()
    if not text:
        return None
    low, high = RATE_LIMITS.start, RATE_LIMITS.stop - 1
    if not (text.isascii() and text.isdigit()):  # "²" is a digit int() cannot read
        raise Invalid(
            f"{text[:20]!r} is not a whole number: enter requests per second from {low} to "
            f"{high}, or {default} for the default (BRIDGE_LOOPS_RATE_LIMIT)."
        )
    return _checked_rate_limit(int(text), default)


def _checked_rate_limit(rate_limit: int, default: str = "leave it blank") -> int:
    if rate_limit not in RATE_LIMITS:
        low, high = RATE_LIMITS.start, RATE_LIMITS.stop - 1
        raise Invalid(
            f"{rate_limit} requests per second is out of range: enter {low} to {high}, or "
            f"{default} for the default (BRIDGE_LOOPS_RATE_LIMIT)."
        )
    return rate_limit


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """What :func:`update_account` did, for a notice or a CLI line."""

    name: str
    key_hint: str
    rate_limit: int | None
    made_due: int  # queued deliveries of the account made due now (a new key only)


def update_account(
    engine: Engine,
    account_id: int,
    *,
    api_key: str | None = None,
    rate_limit: int | _Keep | None = KEEP,
) -> AccountUpdate:
    """Change a Loops account's rate limit (None: the default) and/or replace its API key.

    A new key ends the account's problem at once, in the same transaction: a key Loops
    refused (or an outage seen through the old key) says nothing about the new one, so the
    hold and the problem are cleared and the account's queued deliveries are due now. The
    worker finds out for itself whether the new key works."""
    if api_key is not None and (problem := key_problem(engine, api_key, but=account_id)):
        raise Invalid(problem)
    if rate_limit is not KEEP and rate_limit is not None:
        _checked_rate_limit(rate_limit)
    with Session(engine) as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"No Loops account with id {account_id}.")
        made_due = 0
        if api_key is not None:
            account.api_key = api_key.strip()
            made_due = accounts.key_replaced(session.connection(), account_id)
        if rate_limit is not KEEP:
            account.rate_limit = rate_limit
        session.add(account)
        session.commit()
        return AccountUpdate(
            account.name,
            mask(account.api_key),
            account.rate_limit,
            made_due,
        )


def _account_by_name(session: Session, name: str) -> Account:
    account = session.exec(select(Account).where(Account.name == name)).first()
    if account is None:
        known = ", ".join(c.name for c in session.exec(select(Account))) or "none yet"
        raise Invalid(
            f"No Loops account named {name!r} (known: {known}). "
            "Add it first: loops-bridge accounts add --name NAME --api-key KEY"
        )
    return account


def _check_event_types(provider: providers.Provider, event_types: list[str]) -> str:
    wanted = [t.strip() for t in event_types if t.strip()]
    if not wanted:
        raise Invalid(f"Pick at least one event type: {', '.join(provider.event_types)}.")
    unknown = [t for t in wanted if t not in provider.event_types]
    if unknown:
        raise Invalid(
            f"{provider.label} event type(s) not supported: {', '.join(unknown)}. "
            f"Supported: {', '.join(provider.event_types)}."
        )
    return ",".join(t for t in provider.event_types if t in wanted)


def _check_api_key_types(provider: providers.Provider, endpoint: Endpoint) -> None:
    """Types whose events name only a customer id need the platform's API to find the
    customer's email: refused on an endpoint without an API key."""
    needing = [t for t in endpoint.accepted_types() if t in _needs_key(provider)]
    if needing and not endpoint.stripe_api_key:
        raise Invalid(
            f"{', '.join(needing)} carry only a customer id, so the bridge looks each "
            f"customer's email up in {provider.label} with an API key of the endpoint's: set "
            "one first (`loops-bridge endpoints set-stripe-key ENDPOINT_ID -`, or on the "
            "endpoint's page in the admin), then enable them. A new endpoint is created "
            "without them first."
        )


def set_stripe_key(engine: Engine, endpoint_id: str, api_key: str | None) -> tuple[str | None, int]:
    """Store (or with None, remove) an endpoint's Stripe API key: its hint, and how many
    queued deliveries waiting to look their customer's email up (retried on the backoff
    schedule while Stripe refused the old key) were made due now. Check the key with
    :meth:`bridge.stripe_api.StripeAPI.check` first: this only stores it."""
    with Session(engine) as session:
        endpoint = _endpoint(session, endpoint_id)
        if endpoint.provider != "stripe":
            raise Invalid(
                f"Endpoint {endpoint_id} receives {endpoint.provider} webhooks: only a Stripe "
                "endpoint takes a Stripe API key."
            )
        if api_key is None:
            plugin = providers.get(endpoint.provider)
            needing = [t for t in endpoint.accepted_types() if t in _needs_key(plugin)]
            if needing:
                raise Invalid(
                    f"The endpoint accepts {', '.join(needing)}, which need the key to find "
                    "each customer's email: disable them first "
                    f"(loops-bridge endpoints edit {endpoint_id} --events ...)."
                )
        endpoint.stripe_api_key = api_key
        session.add(endpoint)
        made_due = 0
        if api_key is not None:
            now = time.time()
            made_due = session.execute(
                update(Delivery)
                .where(
                    col(Delivery.endpoint_id) == endpoint_id,
                    col(Delivery.status) == QUEUED,
                    col(Delivery.email).is_(None),
                    col(Delivery.next_attempt_at) > now,
                )
                .values(next_attempt_at=now)
            ).rowcount
        session.commit()
    return (stripe_api.key_hint(api_key) if api_key else None), made_due


def lookups_resumed(count: int) -> str:
    """What :func:`set_stripe_key`'s second value means, as the CLI and the admin say it."""
    if not count:
        return ""
    deliveries, go = ("delivery", "goes") if count == 1 else ("deliveries", "go")
    return (
        f" {count:,} queued {deliveries} waiting to look a customer's email up in Stripe {go} now."
    )


def livemode_seen(engine: Engine, endpoint_id: str) -> bool | None:
    """Whether the endpoint's latest webhook was a live-mode event (Stripe's ``livemode``);
    None before its first, or when its body is gone."""
    with Session(engine) as session:
        payload = session.exec(
            select(Delivery.payload)
            .where(
                Delivery.endpoint_id == endpoint_id,
                Delivery.backfill.is_(False),  # type: ignore[attr-defined]
                Delivery.payload.is_not(None),  # type: ignore[union-attr]
            )
            .order_by(Delivery.id.desc())  # type: ignore[union-attr]
            .limit(1)
        ).first()
    try:
        livemode = json.loads(payload).get("livemode") if payload else None
    except (ValueError, AttributeError):
        return None
    return livemode if isinstance(livemode, bool) else None


def _needs_key(provider: providers.Provider) -> frozenset[str]:
    """The event types of ``provider`` that need an API key (none for most providers)."""
    return frozenset(getattr(provider, "needs_api_key", ()))


def _check_secret(provider: str, value: str) -> str:
    value = value.strip()
    problem = providers.get(provider).secret_problem(value)
    if problem:
        raise Invalid(problem)
    return value


def new_endpoint_id() -> str:
    """128 random bits, URL-safe, behind a prefix: a bare base64url id can start with "-",
    and the CLI would then read it as an option (``endpoints add-secret -x1...``)."""
    return "ep_" + secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class EndpointForm:
    """What a person sets on an endpoint, checked by :func:`check` before anything is saved."""

    name: str
    account: str  # the Loops account's name
    provider: str
    event_types: list[str]
    user_group: str | None = None
    loops_event: str | None = None  # one Loops event for every accepted type
    sync_names: bool = True
    loops_events: dict[str, str] = field(default_factory=dict)  # or one per event type
    mailing_lists: list[str] = field(default_factory=list)  # lists new contacts join
    on_delete: str = "unsubscribe"  # what a deletion does: ON_DELETE

    def problems(self) -> dict[str, str]:
        """Field name -> what to fix; empty when the form can be saved."""
        found: dict[str, str] = {}
        if not self.name.strip():
            found["name"] = "Give the endpoint a name, e.g. 'Stripe live'."
        try:
            plugin = providers.get(self.provider)
        except KeyError:
            found["provider"] = (
                f"Unknown provider {self.provider!r}; available: {', '.join(providers.names())}."
            )
        else:
            try:
                _check_event_types(plugin, self.event_types)
            except Invalid as exc:
                found["event_types"] = str(exc)
        event = (self.loops_event or "").strip()
        named = [event] if event else []
        if self.loops_events:
            if event:
                found["loops_events"] = (
                    "Give one Loops event for every type (--loops-event) or one per type "
                    "(--loops-events TYPE=EVENT,...), not both."
                )
            # Checked against the types once they are valid: an unknown or missing type is
            # the one problem to fix, not a mapping it makes look wrong.
            chosen = {t.strip() for t in self.event_types if t.strip()}
            stray = sorted(set(self.loops_events) - chosen)
            if stray and not found.keys() & {"provider", "event_types"}:
                found["loops_events"] = (
                    f"Loops events are mapped for event type(s) the endpoint does not accept: "
                    f"{', '.join(stray)}. Accepted: {', '.join(sorted(chosen)) or 'none'}."
                )
            named += list(self.loops_events.values())
        bad = [n for n in named if not _LOOPS_EVENT_NAME.match(n)]
        if bad:
            found["loops_event"] = (
                f"Loops event name {bad[0]!r} is not valid: use letters, digits, - and _, "
                "starting with a letter (e.g. successfulPayment)."
            )
        lists = [i for i in self.mailing_lists if not _MAILING_LIST_ID.match(i)]
        if lists:
            found["mailing_lists"] = (
                f"Mailing list id {lists[0][:40]!r} is not valid: copy the id from Loops, "
                "Audience → Lists → the list → its id (letters and digits)."
            )
        if self.on_delete not in ON_DELETE:
            found["on_delete"] = (
                f"On delete {self.on_delete[:20]!r} is not one of: {', '.join(ON_DELETE)}."
            )
        return found

    def apply(self, session: Session, endpoint: Endpoint) -> None:
        problems = self.problems()
        if problems:
            raise Invalid(" ".join(problems.values()))
        plugin = providers.get(self.provider)
        endpoint.name = self.name.strip()
        endpoint.account_id = _account_by_name(session, self.account).id  # type: ignore[assignment]
        endpoint.provider = plugin.name
        endpoint.event_types = _check_event_types(plugin, self.event_types)
        _check_api_key_types(plugin, endpoint)
        endpoint.user_group = (self.user_group or "").strip() or None
        endpoint.loops_event = (self.loops_event or "").strip() or None
        per_type = {t: e for t, e in self.loops_events.items() if t in endpoint.accepted_types()}
        endpoint.loops_events = json.dumps(per_type) if per_type else None
        endpoint.mailing_lists = ",".join(self.mailing_lists) or None
        endpoint.on_delete = self.on_delete
        endpoint.sync_names = self.sync_names


def endpoint_problems(engine: Engine, form: EndpointForm) -> dict[str, str]:
    """:meth:`EndpointForm.problems`, plus whether its Loops account exists."""
    found = form.problems()
    with Session(engine) as session:
        try:
            _account_by_name(session, form.account)
        except Invalid:
            found["account"] = (
                "Pick one of the Loops accounts, or add the account first."
                if form.account
                else "Pick the Loops account this endpoint delivers to."
            )
    return found


def create_endpoint(
    engine: Engine,
    *,
    name: str,
    account: str,
    provider: str,
    event_types: list[str],
    user_group: str | None = None,
    loops_event: str | None = None,
    sync_names: bool = True,
    signing_secret: str | None = None,
    loops_events: dict[str, str] | None = None,
    mailing_lists: list[str] | None = None,
    on_delete: str = "unsubscribe",
) -> str:
    """Create an endpoint and return its id (the last part of its webhook URL)."""
    form = EndpointForm(
        name,
        account,
        provider,
        event_types,
        user_group,
        loops_event,
        sync_names,
        loops_events or {},
        mailing_lists or [],
        on_delete,
    )
    problems = form.problems()
    if problems:
        raise Invalid(" ".join(problems.values()))
    secret = _check_secret(provider, signing_secret) if signing_secret else None
    now = time.time()
    with Session(engine) as session:
        endpoint = Endpoint(
            id=new_endpoint_id(),
            name="",
            account_id=0,
            provider=provider,
            event_types="",
            created_at=now,
        )
        form.apply(session, endpoint)
        session.add(endpoint)
        if secret:
            session.add(Secret(endpoint_id=endpoint.id, value=secret, created_at=now))
        session.commit()
        return endpoint.id


def update_endpoint(engine: Engine, endpoint_id: str, form: EndpointForm) -> None:
    with Session(engine) as session:
        endpoint = _endpoint(session, endpoint_id)
        form.apply(session, endpoint)
        session.add(endpoint)
        session.commit()


def set_paused(engine: Engine, endpoint_id: str, paused: bool) -> None:
    with Session(engine) as session:
        endpoint = _endpoint(session, endpoint_id)
        endpoint.paused = paused
        session.add(endpoint)
        session.commit()


def delete_endpoint(engine: Engine, endpoint_id: str) -> None:
    """Delete an endpoint with its secrets, rejections and delivery log."""
    with Session(engine) as session:
        endpoint = _endpoint(session, endpoint_id)
        deliveries = select(Delivery.id).where(Delivery.endpoint_id == endpoint_id)
        # What Loops reported stays in the contact's timeline, without its delivery.
        session.exec(
            update(LoopsEvent)
            .where(col(LoopsEvent.delivery_id).in_(deliveries))
            .values(delivery_id=None)
        )
        for model, column in (
            (LoopsCall, LoopsCall.delivery_id.in_(deliveries)),  # type: ignore[attr-defined]
            (Delivery, Delivery.endpoint_id == endpoint_id),
            (Secret, Secret.endpoint_id == endpoint_id),
            (Rejection, Rejection.endpoint_id == endpoint_id),
            (UnsupportedEvent, UnsupportedEvent.endpoint_id == endpoint_id),
        ):
            for row in session.exec(select(model).where(column)):
                session.delete(row)
        session.delete(endpoint)
        session.commit()


def retry_delivery(engine: Engine, delivery_id: int) -> None:
    """Queue a failed or dead delivery again, now, with a fresh max age (BRIDGE_MAX_AGE_HOURS
    from now). Steps that already succeeded are not repeated."""
    _requeue(engine, delivery_id, (FAILED, DEAD), new_key=False)


def send_again(engine: Engine, delivery_id: int) -> None:
    """Deliver a delivered event once more, with a new idempotency key: this fires the
    Loops workflow again, so the admin asks for confirmation first."""
    _requeue(engine, delivery_id, (DELIVERED,), new_key=True)


def _outcome(delivery: Delivery) -> str:
    """One line of what a finished delivery came to, kept when it is queued again."""
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(delivery.finished_at or 0))
    tries = f"{delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'}"
    return f"{delivery.status} at {at} after {tries}: {delivery.reason or 'no reason given'}"


def _requeue(engine: Engine, delivery_id: int, expected: tuple[str, ...], *, new_key: bool) -> None:
    with Session(engine) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            raise Invalid(f"No delivery {delivery_id}.")
        if delivery.status not in expected:
            what = "sent again" if new_key else "retried"
            raise Invalid(
                f"Delivery {delivery_id} is {delivery.status}; only a {' or '.join(expected)} "
                f"delivery can be {what}."
            )
        if delivery.payload is None:
            raise Invalid(
                f"Delivery {delivery_id} cannot be sent again: its event was deleted after the "
                "retention period (BRIDGE_RETENTION_DAYS). Its outcome and Loops calls are kept."
            )
        now = time.time()
        delivery.earlier_outcomes = "\n".join(
            filter(None, [delivery.earlier_outcomes, _outcome(delivery)])
        )
        delivery.status, delivery.finished_at = QUEUED, None
        delivery.claimed_by = delivery.lease_until = None
        delivery.queued_at = delivery.next_attempt_at = now  # a fresh max age of tries
        delivery.reason = "sent again by an admin" if new_key else "retry requested by an admin"
        if new_key:
            delivery.idempotency_key = (
                f"{delivery.endpoint_id}:{delivery.id}:{secrets.token_hex(8)}"
            )
        session.add(delivery)
        session.commit()


def _endpoint(session: Session, endpoint_id: str) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"No endpoint with id {endpoint_id!r}; see loops-bridge endpoints list.")
    return endpoint


def add_secret(engine: Engine, endpoint_id: str, value: str) -> str:
    with Session(engine) as session:
        value = _check_secret(_endpoint(session, endpoint_id).provider, value)
        existing = session.exec(select(Secret).where(Secret.endpoint_id == endpoint_id))
        if any(s.value == value for s in existing):
            raise Invalid(f"Endpoint {endpoint_id} already has the secret {mask(value)}.")
        session.add(Secret(endpoint_id=endpoint_id, value=value, created_at=time.time()))
        session.commit()
    return mask(value)


def remove_secret(engine: Engine, endpoint_id: str, value: str) -> str:
    value = value.strip()
    with Session(engine) as session:
        _endpoint(session, endpoint_id)
        for secret in session.exec(select(Secret).where(Secret.endpoint_id == endpoint_id)):
            if secrets.compare_digest(secret.value, value):
                session.delete(secret)
                session.commit()
                return mask(value)
    raise Invalid(f"Endpoint {endpoint_id} has no secret {mask(value)}; nothing was removed.")


def endpoint_secrets(engine: Engine, endpoint_id: str) -> list[tuple[int, str]]:
    """(id, hint) of each signing secret, oldest first. The id names a secret for removal
    without ever sending the secret back to the browser."""
    with Session(engine) as session:
        _endpoint(session, endpoint_id)
        rows = session.exec(
            select(Secret).where(Secret.endpoint_id == endpoint_id).order_by(Secret.id)
        )
        return [(s.id, mask(s.value)) for s in rows]  # type: ignore[misc]


def remove_secret_by_id(engine: Engine, endpoint_id: str, secret_id: int) -> str:
    with Session(engine) as session:
        _endpoint(session, endpoint_id)
        secret = session.get(Secret, secret_id)
        if secret is None or secret.endpoint_id != endpoint_id:
            raise NotFound(
                f"Endpoint {endpoint_id} has no secret {secret_id}; nothing was removed."
            )
        hint = mask(secret.value)
        session.delete(secret)
        session.commit()
        return hint


def list_endpoints(engine: Engine) -> list[EndpointView]:
    with Session(engine) as session:
        return _views(session, list(session.exec(select(Endpoint).order_by(Endpoint.created_at))))


def endpoint_view(engine: Engine, endpoint_id: str) -> EndpointView:
    """One endpoint as shown to people; :class:`NotFound` for an unknown id."""
    with Session(engine) as session:
        return _views(session, [_endpoint(session, endpoint_id)])[0]


def _views(session: Session, endpoints: list[Endpoint]) -> list[EndpointView]:
    names = {c.id: c.name for c in session.exec(select(Account))}
    hints: dict[str, list[str]] = {}
    ids = [e.id for e in endpoints]
    for secret in session.exec(
        select(Secret).where(Secret.endpoint_id.in_(ids)).order_by(Secret.id)  # type: ignore[attr-defined]
    ):
        hints.setdefault(secret.endpoint_id, []).append(mask(secret.value))
    return [
        EndpointView(
            id=e.id,
            name=e.name,
            account=names[e.account_id],
            provider=e.provider,
            event_types=e.accepted_types(),
            user_group=e.user_group,
            loops_event=e.loops_event,
            loops_events=json.loads(e.loops_events) if e.loops_events else {},
            mailing_lists=[i for i in (e.mailing_lists or "").split(",") if i],
            on_delete=e.on_delete,
            sync_names=e.sync_names,
            paused=e.paused,
            secret_hints=hints.get(e.id, []),
            stripe_key_hint=stripe_api.key_hint(e.stripe_api_key) if e.stripe_api_key else None,
        )
        for e in endpoints
    ]


# -- Loops' own webhooks: an account's URL and signing secrets --------------------------------


def new_loops_webhook_token() -> str:
    """128 random bits, URL-safe, behind a prefix (as :func:`new_endpoint_id`)."""
    return "lw_" + secrets.token_urlsafe(16)


def loops_webhook_url(engine: Engine, settings: Settings, account_name: str) -> str:
    """The URL Loops posts the account's webhooks to (Settings → Webhooks in Loops). Its
    token is made the first time it is asked for, and stays."""
    with Session(engine) as session:
        account = _account_by_name(session, account_name)
        if account.loops_webhook_token is None:
            # Only where there is none yet: two first calls at once agree on one token.
            session.exec(
                update(Account)
                .where(col(Account.id) == account.id, col(Account.loops_webhook_token).is_(None))
                .values(loops_webhook_token=new_loops_webhook_token())
            )
            session.commit()
            session.refresh(account)
        token = account.loops_webhook_token
    return f"{settings.public_url.rstrip('/')}/loops-webhooks/{token}"


def loops_webhook_refused(engine: Engine, account_name: str) -> tuple[float, str] | None:
    """The latest Loops webhook the account refused: (unix time, "400: reason"), or None."""
    with Session(engine) as session:
        account = _account_by_name(session, account_name)
        if account.loops_webhook_refused_at is None:
            return None
        return account.loops_webhook_refused_at, account.loops_webhook_refused or ""


def loops_webhook_secrets(engine: Engine, account_name: str) -> list[tuple[int, str]]:
    """(id, hint) of each signing secret of the account's Loops webhook, oldest first."""
    with Session(engine) as session:
        account = _account_by_name(session, account_name)
        rows = session.exec(
            select(LoopsWebhookSecret)
            .where(LoopsWebhookSecret.account_id == account.id)
            .order_by(col(LoopsWebhookSecret.id))
        )
        return [(s.id, mask(s.value)) for s in rows]  # type: ignore[misc]


def add_loops_webhook_secret(engine: Engine, account_name: str, value: str) -> str:
    """Add a signing secret of the account's Loops webhook (several may be active while one
    is rolled); its hint."""
    value = value.strip()
    if problem := loops_webhooks.secret_problem(value):
        raise Invalid(problem)
    with Session(engine) as session:
        account = _account_by_name(session, account_name)
        existing = session.exec(
            select(LoopsWebhookSecret).where(LoopsWebhookSecret.account_id == account.id)
        )
        if any(secrets.compare_digest(s.value, value) for s in existing):
            raise Invalid(f"Loops account {account.name!r} already has the secret {mask(value)}.")
        session.add(
            LoopsWebhookSecret(account_id=account.id, value=value, created_at=time.time())  # type: ignore[arg-type]
        )
        session.commit()
    return mask(value)


def remove_loops_webhook_secret(engine: Engine, account_name: str, value: str) -> str:
    value = value.strip()
    with Session(engine) as session:
        account = _account_by_name(session, account_name)
        for secret in session.exec(
            select(LoopsWebhookSecret).where(LoopsWebhookSecret.account_id == account.id)
        ):
            if secrets.compare_digest(secret.value, value):
                session.delete(secret)
                session.commit()
                return mask(value)
    raise Invalid(
        f"Loops account {account_name!r} has no Loops webhook secret {mask(value)}; nothing "
        "was removed."
    )


def remove_loops_webhook_secret_by_id(engine: Engine, account_id: int, secret_id: int) -> str:
    """The admin's Remove button: the secret named by its id, never sent to the browser."""
    with Session(engine) as session:
        secret = session.get(LoopsWebhookSecret, secret_id)
        if secret is None or secret.account_id != account_id:
            raise NotFound(
                f"The Loops account has no Loops webhook secret {secret_id}; nothing was removed."
            )
        hint = mask(secret.value)
        session.delete(secret)
        session.commit()
        return hint
