"""Shared test helpers: the real Stripe fixtures and Stripe's signing scheme.

Signatures are made here with the standard library, independently of the `stripe` package
the bridge verifies with, exactly as Stripe documents them:
``v1 = hex(HMAC-SHA256(key=secret, msg=f"{t}." + raw_body))``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

# CI and developers keep shared/ beside the checkout (../shared/stripe-fixtures).
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "stripe-fixtures"


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

    registry.add_connection(engine, "acme", "key")
    return registry.create_endpoint(
        engine,
        name="e",
        connection="acme",
        provider="stripe",
        event_types=["invoice.paid"],
        signing_secret=secret,
    )
