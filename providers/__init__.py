"""Providers: the plug-ins that turn a platform's signed webhook into a plain event.

A provider is a module-level object that satisfies :class:`Provider`, registered under its
name in the entry-point group ``loops_bridge.providers`` (pyproject.toml:
``stripe = "providers.stripe:provider"``). The core looks providers up by name
(``get("stripe")``) and never imports one directly, so adding Clerk or Supabase means adding
one module here and one line to pyproject.toml, or installing a distribution that registers
one in that group.

The shape of the data a provider hands on::

    raw request (bytes + headers)
        -> Provider.verify()   raises Rejected(reason) on any bad signature / header
        -> Provider.parse()    raises Rejected(reason) if the body is not an event it knows
        -> Event               provider-neutral: id (the dedupe key), type, time, email,
                               the platform's user id, deletion, a customer to look up;
                               stored with the body
    later, when the delivery is made, from the stored body:
        -> Provider.details()  names, Loops event properties, the customer to look up

Around those: ``secret_problem`` checks a pasted secret's form, ``new_secret`` makes one for
platforms where the receiver chooses it (Supabase), ``redact`` says how the rejected-requests
log shows the provider's own headers (a signature or a secret hidden), and ``sample`` makes a
signed test request for the admin's "send a test event", without names.

The split keeps the ingest path lean: it reads only what it needs to dedupe and filter.

An event without an email may name a customer on the platform instead (``lookup``: Stripe's
subscription events carry only ``cus_...``). Such an event is queued only for an endpoint
that holds the platform's API key (``Endpoint.stripe_api_key``; the inbox ignores it
otherwise, saying which key to add), and the delivery asks the platform for the customer's
email and name with that key before it calls Loops (:mod:`bridge.delivery`). ``parse`` and
``details`` name the same customer for the same body, and only when the body has no email.

What every provider's ``verify`` and ``parse`` owe the public ingest path, which anyone on
the internet can reach:

- Compare signatures in constant time (:func:`hmac.compare_digest`, or a library that uses
  it, as ``stripe`` does). A comparison that stops at the first differing byte answers a
  little faster the fewer bytes match, and that lets a sender find a valid signature byte by
  byte. Compare ASCII ``str`` or ``bytes``: ``compare_digest`` raises on other ``str``.
- Accept a signed timestamp only within a window around this server's clock, both ways: an
  old one is a replay, one from the future would stay replayable until its time comes.
- Raise nothing but :class:`Rejected`, whatever the headers and bytes (any other exception
  answers 503, and the sender retries it forever); tests/test_webhooks_fuzz.py holds the
  ingest path to that.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol

__all__ = [
    "LOOPS_STRING_LIMIT",
    "Details",
    "Event",
    "Properties",
    "Provider",
    "Rejected",
    "get",
    "loops_properties",
    "names",
]

GROUP = "loops_bridge.providers"  # the entry-point group providers are registered in
# Loops refuses any body value over 500 characters, its quotes counted
# (https://loops.so/docs/api-reference/intro), so a string keeps at most 498.
LOOPS_STRING_LIMIT = 498

Properties = dict[str, str | int | float | bool]


def loops_properties(values: Mapping[str, object]) -> Properties:
    """What Loops takes as event properties: scalars, strings not empty and cut to its limit;
    None and anything else left out."""
    properties: Properties = {}
    for key, value in values.items():
        if isinstance(value, str):
            if value.strip():
                properties[key] = value[:LOOPS_STRING_LIMIT]
        elif isinstance(value, bool | int | float):
            properties[key] = value
    return properties


class Rejected(Exception):
    """The request is not a valid webhook for this endpoint. ``str(exc)`` is shown to the
    sender (and the admin) as the reason, so it must say what to fix and never echo a secret."""


@dataclass(frozen=True, slots=True)
class Event:
    """One verified provider event: what the inbox needs to dedupe, filter and store it."""

    id: str  # the dedupe key per endpoint: Stripe's evt_..., Clerk's svix-id, a body hash;
    # printable ASCII (providers.fields.is_id): Loops gets it in its Idempotency-Key header
    type: str  # e.g. "invoice.paid"
    occurred_at: int  # provider's event time, unix seconds (last-writer-wins on contact fields)
    email: str | None
    user_id: str | None = None  # the platform's user id: the contact's userId in Loops
    deletion: bool = False  # the user or customer was deleted: the endpoint's on-delete applies
    # No email, but a platform customer id (Stripe's cus_...) whose email and names are looked
    # up at delivery, with the endpoint's API key for that platform; printable ASCII.
    lookup: str | None = None


@dataclass(frozen=True, slots=True)
class Details:
    """What a stored event tells Loops, read when it is delivered.

    Names are None when the event has none, so a missing name never clears one in Loops.
    ``properties`` are the Loops event properties: flat, camelCase keys, values that are
    str, int, float or bool, each within Loops' 500-character limit.
    """

    first_name: str | None = None
    last_name: str | None = None
    properties: dict[str, str | int | float | bool] = field(default_factory=dict)
    lookup: str | None = None  # the customer to look up, as Event.lookup of the same body
    # The customer this event shows as it is now (a Stripe customer.updated): a copy of it
    # looked up before is out of date from here on.
    renews: str | None = None


class Provider(Protocol):
    name: str  # "stripe": used in URLs, the CLI and the database
    label: str  # "Stripe": shown to people
    contact_source: str  # Loops `source` for contacts this provider creates, "Stripe webhook"
    event_types: Sequence[str]  # the event types an endpoint may accept, in display order

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
        """Raise Rejected unless ``body`` is signed by one of ``secrets``, recently. The
        signatures must be compared in constant time (see the module docstring)."""

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Event:
        """Read a verified request (header names in any case). Raise Rejected if it is not an
        event this provider knows; an event type it does not handle still parses, and is
        answered ``ignored``. This is on the ingest path: read only what :class:`Event`
        holds."""

    def details(self, body: bytes) -> Details:
        """Names and Loops properties of a body that :meth:`parse` accepted."""

    def secret_problem(self, secret: str) -> str | None:
        """What is wrong with a signing secret a person pasted (where to find the right
        one), or None when it has the provider's form."""

    def new_secret(self) -> str | None:
        """A strong secret for a new endpoint, shown once, where the receiver chooses it (a
        shared secret header); None where the platform makes the secret."""

    def redact(self, name: str, value: str) -> str | None:
        """How one of this provider's own headers is shown in the rejected-requests log: a
        signature cut to its scheme, a shared secret hidden, an event id or a timestamp as it
        is. None for any other header: the log then shows only its length and a hash prefix,
        unless it is a common one such as Content-Type (``bridge.inbox.redact``)."""

    def sample(
        self, event_type: str, email: str, secret: str, user_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A realistic signed test request for ``event_type``: (body, headers). It carries no
        names, so that a test event never renames a contact in Loops. ``user_id``: the user
        it is about, on a platform with user ids (the userId Loops already has for the
        contact, so that a test event never gives a contact another); None: one made up."""


@functools.cache
def _registered() -> dict[str, EntryPoint]:
    # Read once: get() is on the ingest path, and scanning the installed metadata is not free.
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


def names() -> tuple[str, ...]:
    return tuple(_registered())


@functools.cache
def get(name: str) -> Provider:
    registered = _registered()
    if name not in registered:
        known = ", ".join(registered) or "none (is loops-bridge installed? `pip install -e .`)"
        raise KeyError(f"unknown provider {name!r}; known providers: {known}")
    return registered[name].load()  # type: ignore[no-any-return]
