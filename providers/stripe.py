"""Stripe: verify ``Stripe-Signature``, read a snapshot event into a plain :class:`Event`.

Subscription events (``customer.subscription.*``) carry only a customer id, and so may an
invoice (``invoice.upcoming`` of a customer without an email): such an event names the
customer to look up (``Event.lookup``, the object's ``customer``, ``cus_...``), and the bridge
reads the customer's email and name from Stripe at delivery, with the endpoint's Stripe API
key (:mod:`bridge.delivery`). Without a key on the endpoint, it is ignored, saying so.

Contact fields (the same for every event type):

============================== ========================================================
Event object                   email (trimmed, empty -> none) / name (split on the first
                               space into first and last name, missing -> none)
============================== ========================================================
customer                       ``email`` / ``name``
invoice                        ``customer_email`` / ``customer_name``
checkout.session               ``customer_details.email``, else ``customer_email`` /
                               ``customer_details.name``
subscription                   ``customer.email`` / ``customer.name`` when ``customer`` is
                               expanded (the admin's test events), else looked up
any, without an email          looked up: the ``email`` / ``name`` of the customer that
                               ``customer`` names (``cus_...``), read from Stripe
============================== ========================================================

Loops event properties. Flat, camelCase; a property whose Stripe field is missing or null is
left out; every string is cut to fit Loops' 500-character limit (quotes counted). Money is
in major units using the currency's exponent (USD 70000 -> ``700.0``, JPY 500 -> ``500``,
KWD 1234 -> ``1.234``), and ``*Formatted`` is the same amount as text (``"700.00 USD"``).
Times are ISO 8601 UTC strings (``"2026-11-27T13:00:00Z"``).

========================= ============================ =======================================
Property                  Event types                  Stripe field
========================= ============================ =======================================
stripeEventId             all                          ``id`` (evt_...)
stripeEventType           all                          ``type``
livemode                  all                          ``livemode`` (false: test mode)
customerId                customer.*                   ``data.object.id`` (cus_...)
invoiceId                 invoice.*                    ``id`` (in_...; upcoming_in_... on a preview)
customerId                invoice.*                    ``customer``
invoiceNumber             invoice.*                    ``number``
hostedInvoiceUrl          invoice.*                    ``hosted_invoice_url``
invoicePdf                invoice.*                    ``invoice_pdf``
billingReason             invoice.*                    ``billing_reason``
status                    invoice.*                    ``status``
currency                  invoice.*                    ``currency``, upper-case (``"USD"``)
amountDue                 invoice.*                    ``amount_due``
amountDueFormatted        invoice.*                    ``amount_due`` as text
amountPaid                invoice.*                    ``amount_paid``
amountPaidFormatted       invoice.*                    ``amount_paid`` as text
amountRemaining           invoice.*                    ``amount_remaining``
total                     invoice.*                    ``total``
subscriptionId            invoice.*                    ``parent.subscription_details.subscription``
                                                       (API 2025-03-31.basil and later), else
                                                       ``subscription`` (earlier versions)
attemptCount              invoice.*                    ``attempt_count``
nextPaymentAttempt        invoice.*                    ``next_payment_attempt``
periodStart               invoice.*                    ``period_start``
periodEnd                 invoice.*                    ``period_end``
description               invoice.*                    ``lines.data[0].description``
checkoutSessionId         checkout.session.*           ``id`` (cs_...)
customerId                checkout.session.*           ``customer``
mode                      checkout.session.*           ``mode`` (payment, subscription, setup)
paymentStatus             checkout.session.*           ``payment_status`` (paid, unpaid, ...)
currency                  checkout.session.*           ``currency``, upper-case
amountTotal               checkout.session.*           ``amount_total``
amountTotalFormatted      checkout.session.*           ``amount_total`` as text
subscriptionId            checkout.session.*           ``subscription``
subscriptionId            customer.subscription.*      ``id`` (sub_...)
customerId                customer.subscription.*      ``customer`` (cus_...)
status                    customer.subscription.*      ``status`` (trialing, active, past_due,
                                                       canceled, unpaid, incomplete, paused...)
priceId                   customer.subscription.*      ``items.data[0].price.id`` (price_...)
productId                 customer.subscription.*      ``items.data[0].price.product`` (prod_...)
interval                  customer.subscription.*      ``items.data[0].price.recurring.interval``
                                                       (day, week, month, year)
intervalCount             customer.subscription.*      ``...recurring.interval_count`` (3 with
                                                       month: every 3 months)
quantity                  customer.subscription.*      ``items.data[0].quantity``
currency                  customer.subscription.*      ``currency``, upper-case
amount                    customer.subscription.*      each interval's price before discounts and
                                                       tax: the sum over ``items.data`` of
                                                       ``price.unit_amount`` x ``quantity``; left
                                                       out when an item has no unit amount
                                                       (tiered or metered prices)
amountFormatted           customer.subscription.*      ``amount`` as text
trialEnd                  customer.subscription.*      ``trial_end``
cancelAtPeriodEnd         customer.subscription.*      ``cancel_at_period_end``
cancelAt                  customer.subscription.*      ``cancel_at``
cancellationReason        customer.subscription.*      ``cancellation_details.reason``
currentPeriodEnd          customer.subscription.*      ``current_period_end``; from API version
                                                       2025-03-31.basil on, Stripe moved it to
                                                       ``items.data[0].current_period_end``
========================= ============================ =======================================

Verification uses the ``stripe`` library's own check (v1 HMAC-SHA256 over ``f"{t}.{body}"``,
compared in constant time with :func:`hmac.compare_digest`), once per configured secret, so
an endpoint keeps working while its secret is rolled:
https://docs.stripe.com/webhooks#roll-endpoint-secrets. The timestamp must be within
:data:`TOLERANCE` (300 s) of this server's clock, either way: the library refuses only old
ones (a replay), and a signature from the future is refused here. Before any of that, a
header that is not ASCII, longer than :data:`MAX_HEADER_CHARS` or holding more than
:data:`MAX_SIGNATURES` ``v1=`` signatures is refused: Stripe sends one per signing secret.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from secrets import token_hex
from typing import Any

import orjson
import stripe

from providers import Details, Event, Rejected, loops_properties
from providers.fields import MAX_ID_CHARS
from providers.fields import dig as _dig
from providers.fields import is_id as _is_id
from providers.fields import is_int as _is_int
from providers.fields import is_name as _is_name
from providers.fields import object_kind as _object_kind
from providers.fields import split_name as _split_name
from providers.fields import text as _text

__all__ = ["currency_exponent", "format_amount", "major_units", "provider"]

TOLERANCE = stripe.Webhook.DEFAULT_TOLERANCE  # seconds; Stripe's documented default
MAX_SIGNATURES = 10  # v1= entries in one Stripe-Signature header
MAX_HEADER_CHARS = 2048  # room for them, a timestamp and as many v0= entries
# Longest event id and type kept: they are indexed columns, and Stripe's are ~30 characters.

# The API version the samples are rendered in (invoice subscription under `parent`).
SAMPLE_API_VERSION = "2025-03-31.basil"


# --- Why a request is refused. Shown to the sender and the admin; never holds a secret. ---

_NO_SECRET = (
    "This endpoint has no signing secret yet: paste the endpoint's signing secret (whsec_...) "
    "from Stripe into the bridge."
)
_NO_HEADER = (
    "The request has no Stripe-Signature header, so it cannot be verified as coming from "
    "Stripe. Send only Stripe webhooks to this URL, and check that no proxy drops the header."
)
_ID_RULE = (
    f"its id must be 1 to {MAX_ID_CHARS} printable ASCII characters, as Stripe's are "
    "(evt_1NvX...). Send the body exactly as Stripe sent it."
)
_NOT_UTF8 = (
    "The request body is not UTF-8 text, so it is not a Stripe event as Stripe sent it "
    "(a proxy may have re-encoded or compressed it)."
)
_MALFORMED = (
    "The Stripe-Signature header is malformed: expected 't=<unix time>,v1=<signature>'. "
    "Send the header exactly as Stripe sent it."
)
_NO_V1 = (
    "The Stripe-Signature header has no v1 signature (v0 and other schemes are ignored). "
    "Stripe signs every webhook with v1; check that the request really comes from Stripe."
)
_NO_MATCH = (
    "No signature in the Stripe-Signature header matches this endpoint's signing secret. "
    "Paste the signing secret (whsec_...) of this very Stripe endpoint: test-mode and "
    "live-mode secrets differ, and 'stripe listen' uses its own. A proxy that rewrites the "
    "body (even its whitespace) also breaks the signature."
)
_TOO_LONG = (
    f"The Stripe-Signature header is longer than {MAX_HEADER_CHARS} characters or holds more "
    f"than {MAX_SIGNATURES} v1 signatures. Stripe sends a timestamp and one v1 signature per "
    "signing secret of the endpoint (two while a secret is being rolled)."
)
_FUTURE = (
    f"The Stripe-Signature timestamp is more than {TOLERANCE} seconds in the future, so the "
    "request was refused: a signature is only accepted within that window of this server's "
    "clock. If Stripe sent it just now, this server's clock is behind: sync it (NTP)."
)
_STALE = (
    f"The Stripe-Signature timestamp is more than {TOLERANCE} seconds old, so the request was "
    "refused as a possible replay. If Stripe sent it just now, this server's clock is off: "
    "sync it (NTP). Stripe signs every retry afresh, so real retries are never too old."
)
_THIN_EVENT = (
    "This is a thin event (object 'v2.core.event'): it holds only a reference, not the "
    "customer or invoice. In the Stripe event destination for this endpoint, choose snapshot "
    "events (the classic payload style)."
)

_TOO_DEEP = (
    "The body is JSON nested more than 254 levels deep; a Stripe event is a few levels deep, "
    "so it is not a Stripe event."
)
_DUPLICATE_KEYS = (
    "The body has an object with the same key twice, so JSON readers may disagree on what it "
    "says. Stripe never sends that: send the event exactly as Stripe serialized it."
)

# stripe.SignatureVerificationError messages (stripe 16.x, stripe/_webhook.py) -> our reason.
_LIBRARY_REASONS = (
    ("Unable to extract timestamp", _MALFORMED),
    ("No signatures found with expected scheme", _NO_V1),
    ("No signatures found matching", _NO_MATCH),
    ("Timestamp outside the tolerance zone", _STALE),
)


def _reason(error: stripe.SignatureVerificationError) -> str:
    message = error.user_message or ""
    for prefix, reason in _LIBRARY_REASONS:
        if message.startswith(prefix):
            return reason
    return f"The Stripe signature check failed: {message}"


# --- Money: Stripe amounts are integers in the currency's minor unit. ---
# https://docs.stripe.com/currencies#zero-decimal and #three-decimal

_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in Stripe amounts of ``currency`` (``"usd"`` -> 2)."""
    code = currency.upper()
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def major_units(amount: int, currency: str) -> int | float:
    """``70000, "usd"`` -> ``700.0``; ``500, "jpy"`` -> ``500`` (an int)."""
    exponent = currency_exponent(currency)
    return amount if exponent == 0 else amount / 10**exponent


def format_amount(amount: int, currency: str) -> str:
    """``70000, "usd"`` -> ``"700.00 USD"``; ``500, "jpy"`` -> ``"500 JPY"``. Exact, no floats."""
    exponent = currency_exponent(currency)
    code = currency.upper()
    if exponent == 0:
        return f"{amount} {code}"
    whole, fraction = divmod(abs(amount), 10**exponent)
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole}.{fraction:0{exponent}d} {code}"


# --- Reading fields defensively: old API versions lack fields, webhooks may expand ids. ---


def _signed_at(header: str) -> int:
    """The ``t=`` of a header the stripe library has accepted, read exactly as the library
    reads it (``_get_timestamp_and_signatures``), so that the two cannot disagree."""
    items = [item.split("=", 2) for item in header.split(",")]
    return int(next(item[1] for item in items if item[0] == "t"))


def _id(value: Any) -> str | None:
    """An id field that is either ``"sub_..."`` or the expanded object ``{"id": "sub_..."}``."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _iso(timestamp: Any) -> str | None:
    if not _is_int(timestamp):
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def _currency(obj: dict[str, Any]) -> str | None:
    code = _text(obj.get("currency"))
    return code.upper() if code else None


def _money(obj: dict[str, Any], field: str, currency: str | None) -> tuple[Any, Any]:
    """(major units, formatted text) of ``obj[field]``, or (None, None) without a currency."""
    amount = obj.get(field)
    if currency is None or not _is_int(amount):
        return None, None
    return major_units(amount, currency), format_amount(amount, currency)


# --- The email, the one thing the ingest path needs, by kind of event object. ---


def _email(obj: dict[str, Any]) -> str | None:
    kind = obj.get("object")
    if kind == "invoice":
        return _text(obj.get("customer_email"))
    if kind == "checkout.session":
        return _text(_dig(obj, "customer_details", "email")) or _text(obj.get("customer_email"))
    if kind == "subscription":  # only when its customer is expanded, as in a sample
        return _text(_dig(obj, "customer", "email"))
    return _text(obj.get("email"))


_CUSTOMER_ID_FORM = re.compile(r"cus_[A-Za-z0-9]{1,250}")


def _lookup(obj: dict[str, Any], email: str | None) -> str | None:
    """The customer whose email is looked up at delivery: the ``customer`` of an object
    without an email (a customer object has none to look up). Only an id of Stripe's form,
    as it goes into a Stripe API path (``/v1/customers/{id}``)."""
    if email or obj.get("object") == "customer":
        return None
    customer = _id(obj.get("customer"))
    return customer if customer and _CUSTOMER_ID_FORM.fullmatch(customer) else None


def _refuse_repeated_keys(body: bytes, event: dict[str, Any]) -> None:
    """Refuse a body in which one object has the same key twice.

    Every reader here (orjson at ingest and delivery, json in the admin) keeps the last
    value, so the bridge reads such a body one way only; but it is not what Stripe sends
    (Stripe signs the bytes it serialized), and another reader may keep the first value. A
    second parse that counts keys costs four times orjson's parse, on every webhook. This
    counts colons instead: outside strings, JSON has one ':' per key and no other. orjson's
    compact rewrite of what it read has one per key it kept, plus the ones inside strings,
    which it never escapes. So more colons in the body than in the rewrite means a dropped
    key; as many means none, unless a string in the body spells a colon ``\\u003a`` (the
    rewrite has it as ':'). Only then, or with fewer, are the keys counted the slow way. On
    the 2-core development machine, for the 7 KB invoice.paid fixture, this costs 7 µs, or
    9 µs when the body has an escape such as ``\\u00d7`` (then ``\\u003`` is searched for);
    orjson's parse of it costs 10 µs.
    """
    try:
        rewritten = orjson.dumps(event)
    except orjson.JSONEncodeError:  # orjson writes at most 254 levels
        raise Rejected(_TOO_DEEP) from None
    colons, kept = body.count(b":"), rewritten.count(b":")
    if colons > kept:
        raise Rejected(_DUPLICATE_KEYS)
    escape = body.find(b"\\")  # memchr: most bodies have no escape at all
    if colons < kept or (escape >= 0 and body.find(b"\\u003", escape) >= 0):
        try:
            json.loads(body, object_pairs_hook=_unique_keys)
        except ValueError:
            raise Rejected(_DUPLICATE_KEYS) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("repeated key")
    return obj


def _load(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event and its ``data.object``, or Rejected saying why this is not an event."""
    try:
        event = orjson.loads(body)  # a third of json.loads' time: this is the hot path
    except orjson.JSONDecodeError as error:  # also raised for bytes that are not UTF-8
        if str(error).startswith("depth limit exceeded"):  # past 1024 levels
            raise Rejected(_TOO_DEEP) from None
        raise Rejected("The body is not JSON, so it is not a Stripe event.") from None
    if not isinstance(event, dict):
        raise Rejected("The body is JSON but not an object, so it is not a Stripe event.")
    kind = event.get("object")
    if kind == "v2.core.event":
        raise Rejected(_THIN_EVENT)
    # Events from 2012-era API versions have no "object" key at all.
    if kind not in ("event", None):
        # Named only when it reads as a type: a reason is shown and logged, a body never.
        what = f"a Stripe {named} object" if (named := _object_kind(kind)) else "an object"
        raise Rejected(
            f"The body is {what}, not an event. Send Stripe webhook events (object 'event') "
            "to this URL."
        )
    obj = _dig(event, "data", "object")
    missing = [
        name
        for name, present in (
            ("id", _is_id(event.get("id"))),
            ("type", _is_name(event.get("type"))),
            ("created", _is_int(event.get("created")) and 0 <= event["created"] < 2**53),
            ("data.object", isinstance(obj, dict)),
        )
        if not present
    ]
    if missing:
        raise Rejected(
            f"The Stripe event has no valid {', '.join(missing)}"
            + (f": {_ID_RULE}" if "id" in missing else ".")
        )
    return event, obj


# --- One reader per kind of event object, for delivery: (full name, Loops properties). ---

Reading = tuple[Any, dict[str, Any]]


def _read_customer(customer: dict[str, Any]) -> Reading:
    return customer.get("name"), {"customerId": _id(customer.get("id"))}


def _read_invoice(invoice: dict[str, Any]) -> Reading:
    currency = _currency(invoice)
    amount_due, amount_due_text = _money(invoice, "amount_due", currency)
    amount_paid, amount_paid_text = _money(invoice, "amount_paid", currency)
    subscription = _id(invoice.get("subscription")) or _id(
        _dig(invoice, "parent", "subscription_details", "subscription")
    )
    lines = _dig(invoice, "lines", "data")
    first_line = lines[0] if isinstance(lines, list) and lines else None
    properties = {
        "invoiceId": _id(invoice.get("id")),
        "customerId": _id(invoice.get("customer")),
        "invoiceNumber": invoice.get("number"),
        "hostedInvoiceUrl": invoice.get("hosted_invoice_url"),
        "invoicePdf": invoice.get("invoice_pdf"),
        "billingReason": invoice.get("billing_reason"),
        "status": invoice.get("status"),
        "currency": currency,
        "amountDue": amount_due,
        "amountDueFormatted": amount_due_text,
        "amountPaid": amount_paid,
        "amountPaidFormatted": amount_paid_text,
        "amountRemaining": _money(invoice, "amount_remaining", currency)[0],
        "total": _money(invoice, "total", currency)[0],
        "subscriptionId": subscription,
        "attemptCount": invoice.get("attempt_count"),
        "nextPaymentAttempt": _iso(invoice.get("next_payment_attempt")),
        "periodStart": _iso(invoice.get("period_start")),
        "periodEnd": _iso(invoice.get("period_end")),
        "description": _dig(first_line, "description"),
    }
    return invoice.get("customer_name"), properties


def _read_checkout_session(session: dict[str, Any]) -> Reading:
    currency = _currency(session)
    amount_total, amount_total_text = _money(session, "amount_total", currency)
    properties = {
        "checkoutSessionId": _id(session.get("id")),
        "customerId": _id(session.get("customer")),
        "mode": session.get("mode"),
        "paymentStatus": session.get("payment_status"),
        "currency": currency,
        "amountTotal": amount_total,
        "amountTotalFormatted": amount_total_text,
        "subscriptionId": _id(session.get("subscription")),
    }
    return _dig(session, "customer_details", "name"), properties


def _read_subscription(subscription: dict[str, Any]) -> Reading:
    items = _dig(subscription, "items", "data")
    items = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    first = items[0] if items else {}
    price = _price(first) or {}
    recurring = price.get("recurring") if isinstance(price.get("recurring"), dict) else price
    currency = _currency(subscription) or _currency(price)
    amount = amount_text = None
    total = [_item_amount(item) for item in items]
    if currency and total and all(part is not None for part in total):
        amount = major_units(sum(total), currency)  # type: ignore[arg-type]
        amount_text = format_amount(sum(total), currency)  # type: ignore[arg-type]
    period_end = subscription.get("current_period_end")
    if not _is_int(period_end):  # API 2025-03-31.basil and later: on each item
        period_end = first.get("current_period_end")
    properties = {
        "subscriptionId": _id(subscription.get("id")),
        "customerId": _id(subscription.get("customer")),
        "status": subscription.get("status"),
        "priceId": _id(price.get("id")),
        "productId": _id(price.get("product")),
        "interval": recurring.get("interval"),
        "intervalCount": _count(recurring.get("interval_count")),
        "quantity": _count(first.get("quantity")),
        "currency": currency,
        "amount": amount,
        "amountFormatted": amount_text,
        "trialEnd": _iso(subscription.get("trial_end")),
        "cancelAtPeriodEnd": subscription.get("cancel_at_period_end"),
        "cancelAt": _iso(subscription.get("cancel_at")),
        "cancellationReason": _dig(subscription, "cancellation_details", "reason"),
        "currentPeriodEnd": _iso(period_end),
    }
    return _dig(subscription, "customer", "name"), properties


def _item_amount(item: dict[str, Any]) -> int | None:
    """One subscription item's price per interval in minor units: None when it depends on
    usage (metered), on tiers (no unit amount), or the item has no quantity."""
    price = _price(item)
    if price is None:
        return None
    # A price has `unit_amount` and `recurring.usage_type`; the older plan, `amount` and
    # `usage_type`.
    unit = price.get("unit_amount") if "unit_amount" in price else price.get("amount")
    usage = _dig(price, "recurring", "usage_type") or price.get("usage_type")
    quantity = item.get("quantity")
    if usage == "metered" or not (_is_int(unit) and _is_int(quantity)):
        return None
    return unit * quantity


def _price(item: dict[str, Any]) -> dict[str, Any] | None:
    """A subscription item's price: ``price``, else ``plan``, the older form of the same
    price still sent beside it."""
    for price in (item.get("price"), item.get("plan")):
        if isinstance(price, dict):
            return price
    return None


def _count(value: Any) -> int | None:
    return value if _is_int(value) else None


def _read_other(obj: dict[str, Any]) -> Reading:
    return obj.get("name"), {}


# Keyed by the object's own `object` field rather than the event type's prefix, so that
# e.g. customer.subscription.updated (a subscription object) is not read as a customer.
_READERS: dict[str, Callable[[dict[str, Any]], Reading]] = {
    "customer": _read_customer,
    "invoice": _read_invoice,
    "checkout.session": _read_checkout_session,
    "subscription": _read_subscription,
}


# --- Samples: realistic snapshot events in the current shape, for "send a test event". ---

_CUSTOMER_ID = "cus_NffrFeUfNV2Hib"
_SUBSCRIPTION_ID = "sub_1MowQVLkdIwHu7ixeRlqHVzs"
_INVOICE_ID = "in_1MtHbELkdIwHu7ixl4OzzPMv"
_ACCOUNT = "acct_1MtHZpLkdIwHu7ix"
_DAY = 86_400


def _sample_customer(event_type: str, email: str, now: int) -> dict[str, Any]:
    return {
        "id": _CUSTOMER_ID,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": now,
        "currency": "usd",
        "default_source": None,
        "delinquent": False,
        "description": None,
        "email": email,
        "invoice_prefix": "0759376C",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,  # a test event never renames a contact in Loops
        "next_invoice_sequence": 2,
        "phone": None,
        "preferred_locales": ["en-US"],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def _sample_invoice(event_type: str, email: str, now: int) -> dict[str, Any]:
    paid = event_type in ("invoice.paid", "invoice.payment_succeeded")
    # invoice.upcoming carries a preview: id "upcoming_in_...", no number or links yet.
    upcoming = event_type == "invoice.upcoming"
    link = f"{_ACCOUNT}/test_YWNjdF8xTXRIWnBMa2RJd0h1N2l4LF9OZWZmcmVGZVVmTlYySGli0100"
    return {
        "id": f"upcoming_{_INVOICE_ID}" if upcoming else _INVOICE_ID,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe Shop",
        "amount_due": 2000,
        "amount_overpaid": 0,
        "amount_paid": 2000 if paid else 0,
        "amount_remaining": 0 if paid else 2000,
        "amount_shipping": 0,
        "attempt_count": 0 if upcoming else 1,
        "attempted": not upcoming,
        "auto_advance": not paid,
        "billing_reason": "upcoming" if upcoming else "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": now,
        "currency": "usd",
        "customer": _CUSTOMER_ID,
        "customer_email": email,
        "customer_name": None,
        "description": None,
        "due_date": None,
        "hosted_invoice_url": None if upcoming else f"https://invoice.stripe.com/i/{link}?s=ap",
        "invoice_pdf": None if upcoming else f"https://pay.stripe.com/invoice/{link}/pdf?s=ap",
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": "il_1MtHbELkdIwHu7ixvK9Ae3Y8",
                    "object": "line_item",
                    "amount": 2000,
                    "currency": "usd",
                    "description": "1 × Pro (at $20.00 / month)",
                    "livemode": False,
                    "metadata": {},
                    "parent": {
                        "type": "subscription_item_details",
                        "invoice_item_details": None,
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": _SUBSCRIPTION_ID,
                            "subscription_item": "si_NffrDlQ9mS2eVv",
                        },
                    },
                    "period": {"start": now, "end": now + 30 * _DAY},
                    "pricing": {
                        "type": "price_details",
                        "price_details": {
                            "price": "price_1MowQULkdIwHu7ixraBm864M",
                            "product": "prod_NbmFjaSNv9xoqH",
                        },
                        "unit_amount_decimal": "2000",
                    },
                    "quantity": 1,
                    "taxes": [],
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{_INVOICE_ID}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else now + 3 * _DAY,
        "number": None if upcoming else "0759376C-0002",
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": _SUBSCRIPTION_ID},
        },
        "period_end": now,
        "period_start": now - 30 * _DAY,
        "status": "draft" if upcoming else "paid" if paid else "open",
        "status_transitions": {
            "finalized_at": None if upcoming else now,
            "marked_uncollectible_at": None,
            "paid_at": now if paid else None,
            "voided_at": None,
        },
        "subtotal": 2000,
        "total": 2000,
        "webhooks_delivered_at": None,
    }


def _sample_checkout_session(event_type: str, email: str, now: int) -> dict[str, Any]:
    failed = event_type == "checkout.session.async_payment_failed"
    return {
        "id": "cs_test_a1Ygh5yYJq0cZ5nGSvNmR5GCVPnYtpA2KrsWPMSmBmxCvkMmCFqUSddZb3",
        "object": "checkout.session",
        "amount_subtotal": 2000,
        "amount_total": 2000,
        "cancel_url": "https://example.com/cancel",
        "created": now,
        "currency": "usd",
        "customer": _CUSTOMER_ID,
        "customer_creation": "always",
        "customer_details": {
            "address": {
                "city": None,
                "country": "US",
                "line1": None,
                "line2": None,
                "postal_code": "94103",
                "state": None,
            },
            "email": email,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": now + _DAY,
        "invoice": _INVOICE_ID,
        "livemode": False,
        "metadata": {},
        "mode": "subscription",
        "payment_method_types": ["card"],
        "payment_status": "unpaid" if failed else "paid",
        "status": "complete",
        "subscription": _SUBSCRIPTION_ID,
        "success_url": "https://example.com/success",
        "url": None,
    }


def _sample_subscription(event_type: str, email: str, now: int) -> dict[str, Any]:
    """Stripe's documented subscription object (https://docs.stripe.com/api/subscriptions/
    object), in the basil shape (the current period on the item). Its customer is expanded,
    with the address typed: Stripe's webhooks carry only the id, which the bridge looks up
    at delivery, but the sample's customer exists in no Stripe account, so a test event
    carries the email itself (and works on an endpoint without a Stripe API key)."""
    trialing = event_type == "customer.subscription.trial_will_end"
    canceled = event_type == "customer.subscription.deleted"
    start = now - 3 * _DAY if trialing else now
    period_end = start + 14 * _DAY if trialing else start + 30 * _DAY
    price = {
        "id": "price_1MowQULkdIwHu7ixraBm864M",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": start,
        "currency": "usd",
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": "prod_NbmFjaSNv9xoqH",
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": 14 if trialing else None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "type": "recurring",
        "unit_amount": 2000,
        "unit_amount_decimal": "2000",
    }
    return {
        "id": _SUBSCRIPTION_ID,
        "object": "subscription",
        "application": None,
        "automatic_tax": {"enabled": False, "liability": None},
        "billing_cycle_anchor": period_end if trialing else start,
        "cancel_at": None,
        # customer.subscription.updated: the customer asked to cancel at the period's end.
        "cancel_at_period_end": event_type == "customer.subscription.updated",
        "canceled_at": now if canceled else None,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested" if canceled else None,
        },
        "collection_method": "charge_automatically",
        "created": start,
        "currency": "usd",
        "customer": {**_sample_customer(event_type, email, start), "email": email},
        "days_until_due": None,
        "default_payment_method": None,
        "description": None,
        "discounts": [],
        "ended_at": now if canceled else None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_NffrDlQ9mS2eVv",
                    "object": "subscription_item",
                    "created": start,
                    "current_period_end": period_end,
                    "current_period_start": start,
                    "discounts": [],
                    "metadata": {},
                    "price": price,
                    "quantity": 1,
                    "subscription": _SUBSCRIPTION_ID,
                    "tax_rates": [],
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={_SUBSCRIPTION_ID}",
        },
        "latest_invoice": _INVOICE_ID,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "start_date": start,
        "status": "trialing" if trialing else "canceled" if canceled else "active",
        "test_clock": None,
        "trial_end": period_end if trialing else None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": start if trialing else None,
    }


_SAMPLE_BUILDERS: dict[str, Callable[[str, str, int], dict[str, Any]]] = {
    "customer": _sample_customer,
    "invoice": _sample_invoice,
    "checkout.session": _sample_checkout_session,
    "customer.subscription": _sample_subscription,
}
# What an `*.updated` sample's `data.previous_attributes` says changed.
_SAMPLE_CHANGES: dict[str, dict[str, Any]] = {
    "customer": {"preferred_locales": []},
    "customer.subscription": {"cancel_at_period_end": False},
}


class StripeProvider:
    name = "stripe"
    label = "Stripe"
    contact_source = "Stripe webhook"
    event_types = (
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.upcoming",
        "invoice.payment_succeeded",
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        # These carry only a customer id: the endpoint needs a Stripe API key to look up
        # the customer's email (see the module docstring).
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
    )
    # The types whose events carry no email, only a customer to look up: an endpoint that
    # accepts one needs a Stripe API key (bridge.registry refuses it without one).
    needs_api_key = tuple(t for t in event_types if t.startswith("customer.subscription."))

    def secret_problem(self, secret: str) -> str | None:
        if secret.startswith("whsec_") and len(secret) >= 16:
            return None
        where = "In Stripe: Developers → Webhooks → your endpoint → Signing secret → Reveal."
        if not secret.strip():
            return f"No signing secret was given: paste the endpoint's whsec_… secret. {where}"
        if secret.startswith("whsec_"):
            return (
                f"That signing secret is {len(secret)} characters long, too short to be "
                f"Stripe's (about 38): it looks cut short when it was copied. {where}"
            )
        return f"That is not a Stripe signing secret, which starts with whsec_. {where}"

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
        # Blank secrets cannot sign anything; the stripe library would refuse them anyway.
        usable = [secret for secret in secrets if secret.strip()]
        if not usable:
            raise Rejected(_NO_SECRET)
        header = headers.get("stripe-signature")
        if not header:
            raise Rejected(_NO_HEADER)
        if len(header) > MAX_HEADER_CHARS or header.count("v1=") > MAX_SIGNATURES:
            raise Rejected(_TOO_LONG)
        if not header.isascii():  # hmac.compare_digest raises TypeError on other str
            raise Rejected(_MALFORMED)
        try:
            payload = body.decode("utf-8")  # once, not once per secret inside the library
        except UnicodeDecodeError:
            raise Rejected(_NOT_UTF8) from None
        for secret in usable:
            try:
                stripe.WebhookSignature.verify_header(payload, header, secret, TOLERANCE)
            except stripe.SignatureVerificationError as error:
                reason = _reason(error)
                # Only "no match" depends on the secret; every other failure is the header's.
                if reason != _NO_MATCH:
                    raise Rejected(reason) from None
            else:
                if _signed_at(header) > time.time() + TOLERANCE:
                    raise Rejected(_FUTURE)
                return
        raise Rejected(_NO_MATCH)

    def new_secret(self) -> str | None:
        return None  # Stripe makes the signing secret

    def redact(self, name: str, value: str) -> str | None:
        """``Stripe-Signature``: the time stays, each signature shows only its scheme."""
        if name.lower() != "stripe-signature":
            return None
        return ",".join(
            part if part.startswith("t=") or "=" not in part else part.split("=", 1)[0] + "=…"
            for part in value.split(",")
        )

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Event:
        event, obj = _load(body)
        _refuse_repeated_keys(body, event)
        email = _email(obj)
        if email and (len(email) > 320 or not email.isprintable()):
            raise Rejected(
                "The Stripe event's email is not an email address: it is longer than 320 "
                "characters or holds control characters."
            )
        return Event(
            id=event["id"],
            type=event["type"],
            occurred_at=event["created"],
            email=email,
            deletion=event["type"] == "customer.deleted",
            lookup=_lookup(obj, email),
        )

    def details(self, body: bytes) -> Details:
        event, obj = _load(body)
        full_name, properties = _READERS.get(str(obj.get("object")), _read_other)(obj)
        first_name, last_name = _split_name(full_name)
        livemode = event.get("livemode")
        return Details(
            first_name=first_name,
            last_name=last_name,
            lookup=_lookup(obj, _email(obj)),
            renews=_id(obj.get("id")) if obj.get("object") == "customer" else None,
            properties=loops_properties(
                {
                    "stripeEventId": event["id"],
                    "stripeEventType": event["type"],
                    "livemode": livemode if isinstance(livemode, bool) else None,
                    **properties,
                }
            ),
        )

    def sample(
        self, event_type: str, email: str, secret: str, user_id: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """``user_id`` is unused: the bridge matches a Stripe customer by email in Loops."""
        if event_type not in self.event_types:
            raise ValueError(
                f"Stripe has no sample for {event_type!r}; known: {', '.join(self.event_types)}"
            )
        now = int(time.time())
        kind = event_type.rsplit(".", 1)[0]  # "invoice.payment_failed" -> "invoice"
        data: dict[str, Any] = {"object": _SAMPLE_BUILDERS[kind](event_type, email, now)}
        if event_type.endswith(".updated"):
            data["previous_attributes"] = _SAMPLE_CHANGES[kind]
        event = {
            "id": f"evt_{token_hex(12)}",
            "object": "event",
            "api_version": SAMPLE_API_VERSION,
            "created": now,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        payload = json.dumps(event, indent=2)  # ASCII with \u escapes, as Stripe sends it
        signature = stripe.WebhookSignature.generate_signature_header(payload, secret)
        return payload.encode("utf-8"), {
            "Stripe-Signature": signature,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }


provider = StripeProvider()
