"""The tables. One row type per thing a person would name.

    Account      a Loops account: a name, its API key and its own rate limit
    Endpoint     one webhook URL: which provider, which event types, what to do in Loops
    Secret       a provider signing secret of an endpoint (several during secret rolling)
    Delivery     one accepted provider event and its way to Loops
    LoopsCall    every HTTP call made to Loops for a delivery: request, answer, time
    Contact      a contact the bridge knows exists in a Loops account, and the provider
                 event time of the names it last wrote there (last writer wins)
    AccountState how one Loops account is doing, shared by every worker: its pace (next free
                 request slot), a hold after 429, and a problem (outage, refused key) with
                 the time of its next probe
    Backfill     an endpoint's import of the customers its platform already has: the cursor
                 and the counts (bridge/backfill.py)
    LoopsEvent   an event Loops itself reported by webhook (an email sent, delivered, bounced,
                 a contact unsubscribed...), linked to its contact and the delivery behind it
    LoopsWebhookSecret  a signing secret of an account's Loops webhook
    Rejection    a refused webhook request (bad signature...), headers only, bounded per endpoint
    AdminSession a signed-in admin browser

A delivery moves through few, explicit states::

    received --(filtered out)--> ignored
        \\--> queued --(Loops done)--> delivered
                 \\--(Loops refuses it: 400/404...)--> failed
                 \\--(still not delivered 3 days after it was queued)--> dead
                 \\--(429/5xx/timeout, or the account's key refused)--> queued again, later

A queued delivery being worked on is *claimed*: ``claimed_by`` names the worker and
``lease_until`` says until when; a worker that dies loses its claims when they lapse.

Times are unix seconds (float), the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint, func
from sqlalchemy import false as sa_false
from sqlmodel import Field, SQLModel

from bridge.vault import EncryptedString

# Every id column is an SQL INTEGER, and PostgreSQL's holds no more than this: a number
# outside it is no row's id (and a query naming it would fail, not find nothing).
ID_RANGE = range(-(2**31), 2**31)


def row_id(value: str | None) -> int | None:
    """The id a URL's path or a command names; None when it is not one an id column can
    hold (not ASCII digits, or past :data:`ID_RANGE`): no row has it."""
    if not (value and len(value) <= 10 and value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number in ID_RANGE else None


QUEUED, DELIVERED, IGNORED, FAILED, DEAD = "queued", "delivered", "ignored", "failed", "dead"
ON_DELETE = ("unsubscribe", "delete", "ignore")  # what a deletion does to the Loops contact
STATUSES = (QUEUED, DELIVERED, IGNORED, FAILED, DEAD)


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    __table_args__ = (Index("ix_accounts_loops_webhook_token", "loops_webhook_token", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    api_key: str = Field(sa_type=EncryptedString)  # encrypted at rest: see bridge/vault.py
    rate_limit: int | None = None  # requests/second; None: BRIDGE_LOOPS_RATE_LIMIT
    # The last part of the account's Loops webhook URL, /loops-webhooks/{token}: 128 random
    # bits, made when the URL is first shown.
    loops_webhook_token: str | None = None
    # The latest Loops webhook this account refused, for its page: when (unix time) and
    # "400: reason". Each refusal is in the log too.
    loops_webhook_refused_at: float | None = None
    loops_webhook_refused: str | None = Field(default=None, sa_column=Column(Text))
    created_at: float


class Endpoint(SQLModel, table=True):
    __tablename__ = "endpoints"

    id: str = Field(primary_key=True)  # 128 random bits, url-safe: it is the webhook URL
    name: str
    account_id: int = Field(foreign_key="accounts.id", index=True)
    provider: str
    event_types: str  # comma-separated, in the provider's order
    user_group: str | None = None  # userGroup for contacts this endpoint creates
    loops_event: str | None = None  # eventName for every accepted type; None: see loops_events
    # JSON {event type: eventName}: a Loops event per type, before loops_event
    loops_events: str | None = Field(default=None, sa_column=Column(Text))
    mailing_lists: str | None = None  # comma-separated Loops list ids new contacts join
    on_delete: str = Field(
        default="unsubscribe", sa_column_kwargs={"server_default": "unsubscribe"}
    )
    sync_names: bool = True
    # A Stripe API key (restricted, read-only is best) for backfill, recover and the
    # customer lookups of subscription events; encrypted at rest, see bridge/vault.py.
    stripe_api_key: str | None = Field(default=None, sa_type=EncryptedString)
    paused: bool = False  # paused: webhooks are still accepted and kept, nothing goes to Loops
    created_at: float

    def accepted_types(self) -> list[str]:
        return [t for t in self.event_types.split(",") if t]


class Secret(SQLModel, table=True):
    __tablename__ = "secrets"

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str = Field(foreign_key="endpoints.id", index=True)
    value: str = Field(sa_type=EncryptedString)  # encrypted at rest: see bridge/vault.py
    created_at: float


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_delivery_event"),
        # A claim reads each endpoint's due deliveries from it, imports last (bridge/queue.py).
        Index("ix_delivery_due", "endpoint_id", "status", "backfill", "next_attempt_at"),
        # The admin's delivery log, newest first (by id) within each filter, and its
        # overview (per status, by time received). See bridge/admin/deliveries.py.
        Index("ix_delivery_endpoint_id", "endpoint_id", "id"),
        Index("ix_delivery_status_id", "status", "id"),
        Index("ix_delivery_type_id", "event_type", "id"),
        Index("ix_delivery_status_received", "status", "received_at"),
        Index("ix_delivery_claimed_by", "claimed_by"),
        Index("ix_delivery_user_id", "user_id", "id"),  # Loops' webhooks, by userId
    )

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str = Field(foreign_key="endpoints.id")
    event_id: str  # the provider's event id (Stripe evt_...)
    event_type: str
    occurred_at: int  # the provider's event time
    email: str | None = None
    user_id: str | None = None  # the platform's user id (Clerk, Supabase): Loops' userId
    # The platform's customer whose email is looked up at delivery (an event naming only a
    # Stripe customer): until its email is known, the delivery is that customer's.
    lookup: str | None = None
    deletion: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    # Made by an import of existing customers: it creates the contact, never sends a Loops
    # event, and goes after every other due delivery of its account.
    backfill: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary))  # raw body
    status: str
    reason: str | None = Field(default=None, sa_column=Column(Text))  # why it is in this state
    # What it came to before an admin retried it or sent it again, oldest first, one line
    # each: "delivered at 2026-12-03 10:42:07 UTC after 1 attempt: contact created".
    earlier_outcomes: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    idempotency_key: str | None = None  # None: derived from endpoint and event ids
    received_at: float
    queued_at: float | None = None  # when it was last queued; tries stop 3 days after
    next_attempt_at: float | None = None
    finished_at: float | None = None
    claimed_by: str | None = None  # the worker delivering it now
    lease_until: float | None = None  # the claim lapses then unless the worker renews it


# Email filter of the delivery log: exact but case-insensitive, newest first.
Index(
    "ix_delivery_email_id",
    func.lower(Delivery.__table__.c.email),  # type: ignore[attr-defined]
    Delivery.__table__.c.id,  # type: ignore[attr-defined]
)


class LoopsCall(SQLModel, table=True):
    __tablename__ = "loops_calls"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="deliveries.id", index=True)
    method: str
    path: str
    request_body: str = Field(sa_column=Column(Text))
    status_code: int | None = None  # None: no answer (timeout, connection error)
    response_body: str = Field(default="", sa_column=Column(Text))
    started_at: float = Field(index=True)  # the overview's recent request rate
    duration_ms: float


class Contact(SQLModel, table=True):
    __tablename__ = "contacts"

    account_id: int = Field(foreign_key="accounts.id", primary_key=True)
    identity: str = Field(primary_key=True)  # the userId, else the lowercased email
    created_at: float
    names_at: int | None = None  # provider event time of the names last sent to Loops
    # Provider event time of the email last sent with the contact's userId: an older event
    # leaves the email alone.
    email_at: int | None = None
    # Provider event time of the deletion that took the contact out of Loops: an event no
    # newer is not sent (it would create the contact again). None: not deleted.
    deleted_at: int | None = None


class AccountState(SQLModel, table=True):
    __tablename__ = "account_states"

    account_id: int = Field(foreign_key="accounts.id", primary_key=True)
    next_slot: float = 0.0  # unix time of the account's next free request slot
    held_until: float | None = None  # no delivery starts before (429, outage, refused key)
    problem: str | None = Field(default=None, sa_column=Column(Text))  # for the admin
    problem_kind: str | None = None  # "outage" or "key"; None: healthy
    problem_since: float | None = None
    failures: int = 0  # probes failed in a row
    loops_limit: int | None = None  # x-ratelimit-limit as Loops last reported it


class LoopsWebhookSecret(SQLModel, table=True):
    __tablename__ = "loops_webhook_secrets"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id", index=True)
    value: str = Field(sa_type=EncryptedString)  # whsec_...: encrypted at rest
    created_at: float


class LoopsEvent(SQLModel, table=True):
    """One event Loops reported by webhook. The body follows BRIDGE_RETENTION_DAYS; the row
    stays as the contact's timeline entry."""

    __tablename__ = "loops_events"
    __table_args__ = (
        UniqueConstraint("account_id", "webhook_id", name="uq_loops_event_webhook"),
        Index("ix_loops_events_contact", "account_id", "email", "event_time"),
        Index("ix_loops_events_user", "account_id", "user_id", "event_time"),  # its timeline
        Index("ix_loops_events_email_id", "account_id", "email_id"),
        Index("ix_loops_events_received", "event_name", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id")
    webhook_id: str  # Webhook-Id: the dedupe key
    event_name: str  # Loops' eventName: "email.delivered"
    event_time: int  # Loops' eventTime, unix seconds
    received_at: float
    contact_id: str | None = None  # contactIdentity.id
    email: str | None = None  # contactIdentity.email, lowercased
    user_id: str | None = None  # contactIdentity.userId
    source_type: str | None = None  # campaign | loop | transactional
    source_id: str | None = None  # campaignId / loopId / transactionalId
    source_name: str | None = Field(default=None, sa_column=Column(Text))  # loopName...
    email_id: str | None = None  # email.id: ties email.delivered... to its *.email.sent
    email_message_id: str | None = None  # email.emailMessageId
    subject: str | None = Field(default=None, sa_column=Column(Text))
    delivery_id: int | None = Field(default=None, foreign_key="deliveries.id", index=True)
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary))  # raw body


class Rejection(SQLModel, table=True):
    __tablename__ = "rejections"

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str = Field(foreign_key="endpoints.id", index=True)
    at: float
    status_code: int
    reason: str = Field(sa_column=Column(Text))
    headers: str = Field(sa_column=Column(Text))  # JSON, secrets redacted; never the body


class Backfill(SQLModel, table=True):
    """An endpoint's import of the customers its platform already has (bridge/backfill.py).
    The cursor and counts are written with the deliveries of each page, so a crash loses
    nothing and imports nothing twice."""

    __tablename__ = "backfills"

    endpoint_id: str = Field(foreign_key="endpoints.id", primary_key=True)
    state: str  # running | done | cancelled | interrupted (the process stopped mid-way)
    cursor: str | None = None  # the last customer read: the next page starts after it
    customers: int = 0  # read from the platform
    queued: int = 0  # handed to the account's queue, to be created in Loops
    skipped: int = 0  # deleted, or without an email
    known: int = 0  # already in Loops as far as the bridge knows: no call made
    runs: int = 0  # times it was started or continued
    runner: str | None = None  # host:pid:run of the run going on (or that last ran)
    problem: str | None = Field(default=None, sa_column=Column(Text))  # why it stopped
    started_at: float
    updated_at: float  # the last page written: a running import that stops updating died
    finished_at: float | None = None


class UnsupportedEvent(SQLModel, table=True):
    """Events of a type the endpoint's provider does not handle: counted, not stored."""

    __tablename__ = "unsupported_events"

    endpoint_id: str = Field(foreign_key="endpoints.id", primary_key=True)
    event_type: str = Field(primary_key=True)
    count: int
    first_at: float
    last_at: float


class AlertSent(SQLModel, table=True):
    """A problem an alert went out for (bridge/alerts.py): one alert per key."""

    __tablename__ = "alerts_sent"

    key: str = Field(primary_key=True)
    sent_at: float
    subject: str = Field(sa_column=Column(Text))


class AdminSession(SQLModel, table=True):
    __tablename__ = "admin_sessions"

    token_hash: str = Field(primary_key=True)  # sha256 of the cookie value
    created_at: float
    expires_at: float


class AdminPassword(SQLModel, table=True):
    __tablename__ = "admin_password"

    id: int = Field(default=1, primary_key=True)
    hash: str  # scrypt, see bridge/admin/auth.py
    created_at: float
