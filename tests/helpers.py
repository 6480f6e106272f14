"""Shared test helpers: the real Stripe fixtures, Stripe's signing scheme, a database as a
build from before migrations left it, and the admin's pages read by the ids of their parts.

Signatures are made here with the standard library, independently of the `stripe` package
the bridge verifies with, exactly as Stripe documents them:
``v1 = hex(HMAC-SHA256(key=secret, msg=f"{t}." + raw_body))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bridge import db

# Real Stripe payloads, kept in the repository; tests/fixtures/README.md says where from.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stripe"


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def fixture_json(relative: str) -> dict:
    return json.loads(fixture_bytes(relative))


def stripe_signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


def signed_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Stripe-Signature": stripe_signature(body, secret, timestamp),
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }


def invoice_endpoint(engine, secret: str) -> str:  # type: ignore[no-untyped-def]
    """A Loops account "acme" and a Stripe endpoint for invoice.paid signed with ``secret``;
    the endpoint's id."""
    from bridge import registry

    registry.add_account(engine, "acme", "key")
    return registry.create_endpoint(
        engine,
        name="e",
        account="acme",
        provider="stripe",
        event_types=["invoice.paid"],
        signing_secret=secret,
    )


# -- a database from before migrations ---------------------------------------------------------

# The rows create_all_at_814cde7() stores, in plain text as that version stored them.
OLD_API_KEY = "loops_key_dbTest_5c4b3a29"
OLD_SIGNING_SECRET = "whsec_dbTestSecretFFFFFFFFFFFFFFFFFF"
OLD_ENDPOINT = "Hq3vL9xTz0bW5mYc2aRk8Q"

# What ``SQLModel.metadata.create_all`` made from bridge/models.py as of commit 814cde7,
# before migrations; {serial} and {blob} are the only words that differ between
# SQLite (INTEGER, BLOB) and PostgreSQL (SERIAL, BYTEA).
CREATE_ALL_AT_814CDE7 = """
CREATE TABLE admin_password (
    id INTEGER NOT NULL,
    hash VARCHAR NOT NULL,
    created_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE admin_sessions (
    token_hash VARCHAR NOT NULL,
    created_at FLOAT NOT NULL,
    expires_at FLOAT NOT NULL,
    PRIMARY KEY (token_hash)
);
CREATE TABLE connections (
    id {serial} NOT NULL,
    name VARCHAR NOT NULL,
    api_key VARCHAR NOT NULL,
    created_at FLOAT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (name)
);
CREATE TABLE contacts (
    connection_id INTEGER NOT NULL,
    email VARCHAR NOT NULL,
    created_at FLOAT NOT NULL,
    PRIMARY KEY (connection_id, email),
    FOREIGN KEY(connection_id) REFERENCES connections (id)
);
CREATE TABLE endpoints (
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    connection_id INTEGER NOT NULL,
    provider VARCHAR NOT NULL,
    event_types VARCHAR NOT NULL,
    user_group VARCHAR,
    loops_event VARCHAR,
    sync_names BOOLEAN NOT NULL,
    paused BOOLEAN NOT NULL,
    created_at FLOAT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(connection_id) REFERENCES connections (id)
);
CREATE INDEX ix_endpoints_connection_id ON endpoints (connection_id);
CREATE TABLE deliveries (
    id {serial} NOT NULL,
    endpoint_id VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    occurred_at INTEGER NOT NULL,
    email VARCHAR,
    payload {blob},
    status VARCHAR NOT NULL,
    reason TEXT,
    attempts INTEGER NOT NULL,
    idempotency_key VARCHAR,
    received_at FLOAT NOT NULL,
    queued_at FLOAT,
    next_attempt_at FLOAT,
    finished_at FLOAT,
    PRIMARY KEY (id),
    CONSTRAINT uq_delivery_event UNIQUE (endpoint_id, event_id),
    FOREIGN KEY(endpoint_id) REFERENCES endpoints (id)
);
CREATE INDEX ix_delivery_due ON deliveries (status, next_attempt_at);
CREATE INDEX ix_delivery_email_id ON deliveries (lower(email), id);
CREATE INDEX ix_delivery_endpoint_id ON deliveries (endpoint_id, id);
CREATE INDEX ix_delivery_status_id ON deliveries (status, id);
CREATE INDEX ix_delivery_status_received ON deliveries (status, received_at);
CREATE INDEX ix_delivery_type_id ON deliveries (event_type, id);
CREATE TABLE rejections (
    id {serial} NOT NULL,
    endpoint_id VARCHAR NOT NULL,
    at FLOAT NOT NULL,
    status_code INTEGER NOT NULL,
    reason TEXT,
    headers TEXT,
    PRIMARY KEY (id),
    FOREIGN KEY(endpoint_id) REFERENCES endpoints (id)
);
CREATE INDEX ix_rejections_endpoint_id ON rejections (endpoint_id);
CREATE TABLE secrets (
    id {serial} NOT NULL,
    endpoint_id VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    created_at FLOAT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(endpoint_id) REFERENCES endpoints (id)
);
CREATE INDEX ix_secrets_endpoint_id ON secrets (endpoint_id);
CREATE TABLE loops_calls (
    id {serial} NOT NULL,
    delivery_id INTEGER NOT NULL,
    method VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    request_body TEXT,
    status_code INTEGER,
    response_body TEXT,
    started_at FLOAT NOT NULL,
    duration_ms FLOAT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(delivery_id) REFERENCES deliveries (id)
);
CREATE INDEX ix_loops_calls_delivery_id ON loops_calls (delivery_id);
CREATE INDEX ix_loops_calls_started_at ON loops_calls (started_at);
"""


def create_all_at_814cde7(engine: Engine) -> None:
    """A database as a build from before migrations left it, with rows in it."""
    words = {"serial": "INTEGER", "blob": "BLOB"}
    if engine.dialect.name == "postgresql":
        words = {"serial": "SERIAL", "blob": "BYTEA"}
    with engine.begin() as conn:
        for statement in CREATE_ALL_AT_814CDE7.format(**words).split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        conn.execute(
            text("INSERT INTO connections (name, api_key, created_at) VALUES ('acme', :k, 1)"),
            {"k": OLD_API_KEY},
        )
        conn.execute(
            text(
                "INSERT INTO endpoints (id, name, connection_id, provider, event_types, "
                "user_group, loops_event, sync_names, paused, created_at) VALUES "
                "(:id, 'Stripe live', 1, 'stripe', 'invoice.paid', 'customers', "
                "'successfulPayment', :yes, :no, 2)"
            ),
            {"id": OLD_ENDPOINT, "yes": True, "no": False},
        )
        conn.execute(
            text("INSERT INTO secrets (endpoint_id, value, created_at) VALUES (:id, :s, 2)"),
            {"id": OLD_ENDPOINT, "s": OLD_SIGNING_SECRET},
        )
        for n, status in enumerate(("delivered", "queued", "failed"), start=1):
            conn.execute(
                text(
                    "INSERT INTO deliveries (endpoint_id, event_id, event_type, occurred_at, "
                    "email, payload, status, reason, attempts, received_at, queued_at) VALUES "
                    "(:id, :event, 'invoice.paid', 1700000000, :email, :payload, :status, "
                    ":reason, 1, :at, :at)"
                ),
                {
                    "id": OLD_ENDPOINT,
                    "event": f"evt_{n}",
                    "email": f"Jenny{n}@Example.com",
                    "payload": b'{"id": "evt"}',
                    "status": status,
                    "reason": f"reason {n}",
                    "at": 1700000000 + n,
                },
            )
        conn.execute(
            text(
                "INSERT INTO loops_calls (delivery_id, method, path, request_body, status_code, "
                "response_body, started_at, duration_ms) VALUES "
                "(1, 'POST', '/contacts/create', '{}', 200, '{\"success\": true}', 1, 12.5)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO contacts (connection_id, email, created_at) "
                "VALUES (1, 'jenny1@example.com', 3)"
            )
        )


def alembic(engine: Engine, action, revision: str) -> None:  # type: ignore[no-untyped-def]
    """Run alembic's ``upgrade``/``downgrade``/``stamp`` to ``revision`` on ``engine``."""
    with engine.connect() as conn:
        config = db.alembic_config()
        config.attributes["connection"] = conn
        action(config, revision)
        conn.commit()


# -- admin pages, and rows as the bridge leaves them --------------------------------------------

_VOID = {"input", "br", "meta", "link", "img", "hr"}


class Page(HTMLParser):
    """An admin page: its elements that have an id (their attributes, and their text as
    ``text``), its source, and its text."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__()
        self.status_code = response.status_code
        self.source = response.text
        self.text = html.unescape(response.text)
        self.by_id: dict[str, dict[str, str]] = {}
        self._open: list[str | None] = []
        self.feed(response.text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if found.get("id"):
            self.by_id[found["id"]] = {**found, "text": ""}
        if tag not in _VOID:
            self._open.append(found.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in filter(None, self._open):
            self.by_id[element]["text"] += data

    def __getitem__(self, element_id: str) -> dict[str, str]:
        return self.by_id[element_id]

    def row(self, containing: str) -> str:
        """The text of the table row that contains ``containing``."""
        (row,) = [r for r in self.source.split("<tr>") if containing in r]
        return html.unescape(re.sub(r"<[^>]+>", " ", row.split("</tr>")[0]))

    def actions(self, pattern: str) -> list[str]:
        """The form actions on the page matching ``pattern``, in page order."""
        return re.findall(rf'action="({pattern})"', self.source)


def words(text: str) -> str:
    """``text`` with every run of white space (line breaks, no-break spaces) as one space."""
    return " ".join(text.split())


def account_state(engine: Engine, account_id: int, **values: Any) -> None:
    """Write an account's ``account_states`` row, as a delivery worker would."""
    from bridge.models import AccountState

    with Session(engine) as session:
        session.merge(AccountState(account_id=account_id, **values))
        session.commit()


def stored_delivery(engine: Engine, endpoint_id: str, **values: Any) -> int:
    """A delivery row as the inbox and the worker leave it; queued and due by default."""
    from bridge.models import QUEUED, Delivery

    now = time.time()
    row: dict[str, Any] = {
        "event_id": f"evt_{time.monotonic_ns()}",
        "event_type": "invoice.paid",
        "occurred_at": int(now),
        "email": "jo@example.com",
        "payload": b'{"id": "evt_stored"}',
        "status": QUEUED,
        "received_at": now,
        "queued_at": now,
        "next_attempt_at": now,
        **values,
    }
    with Session(engine) as session:
        delivery = Delivery(endpoint_id=endpoint_id, **row)
        session.add(delivery)
        session.commit()
        return delivery.id  # type: ignore[return-value]


def stored_endpoint(engine: Engine, account: str, name: str = "Stripe live") -> str:
    """A Stripe endpoint for invoice.paid without a signing secret; its id."""
    from bridge import registry

    return registry.create_endpoint(
        engine, name=name, account=account, provider="stripe", event_types=["invoice.paid"]
    )


def svix_headers(
    body: bytes, secret: str, timestamp: int | None = None, msg_id: str | None = None
) -> dict[str, str]:
    """The headers Clerk sends, signed as Svix signs (Standard Webhooks), with the standard
    library: ``v1,`` + base64(HMAC-SHA256(key=base64-decoded part of ``whsec_...``,
    msg=f"{svix-id}.{svix-timestamp}." + raw_body)).
    https://docs.svix.com/receiving/verifying-payloads/how-manual"""
    t = int(time.time()) if timestamp is None else timestamp
    msg_id = msg_id or f"msg_{time.time_ns():027d}"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest()
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(t),
        "svix-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


@dataclass(frozen=True)
class Read:
    """What the bridge reads of one request: at ingest (parse) and at delivery (details)."""

    id: str
    type: str
    occurred_at: int
    email: str | None
    user_id: str | None
    deletion: bool
    first_name: str | None
    last_name: str | None
    properties: dict
    lookup: str | None = None  # the customer whose email is looked up at delivery
    renews: str | None = None  # the customer whose looked-up copy it makes out of date


def read_with(provider: Any, body: bytes, headers: Mapping[str, str] | None = None) -> Read:
    """Parse and read ``body`` as ``provider`` does, and check its Loops properties are what
    Loops takes: flat camelCase keys, scalars, strings not empty and within 500 characters
    with their quotes."""
    event, details = provider.parse(body, headers or {}), provider.details(body)
    for key, value in details.properties.items():
        assert key.isascii() and key.isalnum() and key[0].islower(), key
        assert isinstance(value, str | int | float | bool), key
        assert not isinstance(value, str) or 0 < len(value.strip()) <= len(value) <= 498, key
    assert details.lookup == event.lookup  # delivery looks up the customer ingest saw
    return Read(**{**asdict(details), **asdict(event)})


EVERY_TYPE_KEY = "rk_test_51EveryTypeKeyNotChecked000zz99"  # never sent to Stripe


def without_key_types(provider: Any) -> list[str]:
    """The provider's event types that an endpoint without an API key may accept."""
    needing = getattr(provider, "needs_api_key", ())
    return [t for t in provider.event_types if t not in needing]


def every_event_type(engine: Engine, endpoint_id: str) -> None:
    """Give the endpoint every event type of its provider, as an admin does who first sets
    the endpoint's API key (unchecked here) for the types that need one, then ticks them."""
    from sqlmodel import Session

    import providers
    from bridge import registry
    from bridge.models import Endpoint

    with Session(engine) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        assert endpoint is not None
        provider = providers.get(endpoint.provider)
    if getattr(provider, "needs_api_key", ()):
        registry.set_stripe_key(engine, endpoint_id, EVERY_TYPE_KEY)
    with Session(engine) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        endpoint.event_types = ",".join(provider.event_types)
        session.add(endpoint)
        session.commit()
