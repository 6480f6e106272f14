"""Reading a platform's JSON safely: the small helpers every provider needs, in one place.

A webhook body is the sender's to shape, so every field is checked for what it claims to be
before it is used: a value of the wrong type reads as missing rather than raising.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from providers import Rejected

__all__ = [
    "MAX_ID_CHARS",
    "BodyReasons",
    "dig",
    "is_id",
    "is_int",
    "is_name",
    "load_object",
    "object_kind",
    "refuse_repeated_keys",
    "split_name",
    "text",
]

MAX_ID_CHARS = 255  # an id or type longer than this is not one the bridge stores
_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")  # customer, checkout.session


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def text(value: Any) -> str | None:
    """A string with its outer spaces removed; None for an empty one or anything else."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_name(value: Any) -> bool:
    """An id or type fit to be stored and indexed: not empty, not over MAX_ID_CHARS, and
    printable (PostgreSQL refuses a NUL in text)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def is_id(value: Any) -> bool:
    """An event id fit to dedupe on and to send: a name in ASCII, as an HTTP header (Loops'
    ``Idempotency-Key``) can carry it. Stripe's and Svix's ids are."""
    return is_name(value) and value.isascii()


def object_kind(value: Any) -> str | None:
    """A body's ``object`` field as a reason may name it: a type such as ``customer`` or
    ``checkout.session``. None for anything else, which a reason must not repeat: it may be
    part of the body (an object, a customer's data), and bodies are never kept or shown."""
    if isinstance(value, str) and len(value) <= 40 and _KIND.fullmatch(value):
        return value
    return None


def split_name(full_name: Any) -> tuple[str | None, str | None]:
    """``"Jenny Rosen"`` -> ``("Jenny", "Rosen")``. Missing stays None, so it never clears a
    name in Loops."""
    words = (text(full_name) or "").split(maxsplit=1)
    return (words[0] if words else None), (words[1] if len(words) > 1 else None)


@dataclass(frozen=True, slots=True)
class BodyReasons:
    """What a provider says, in its own words, about a body that is not one of its events."""

    not_json: str
    not_object: str
    too_deep: str
    repeated_keys: str


def load_object(body: bytes, reasons: BodyReasons) -> dict[str, Any]:
    """The body's JSON object, read strictly (orjson: UTF-8, no lone surrogates, no NaN),
    at most 254 levels deep (what orjson writes back, so the admin can show it); Rejected
    otherwise."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:  # also for bytes that are not UTF-8
        deep = str(error).startswith("depth limit exceeded")  # past 1024 levels
        raise Rejected(reasons.too_deep if deep else reasons.not_json) from None
    if not isinstance(value, dict):
        raise Rejected(reasons.not_object)
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:  # orjson writes at most 254 levels
        raise Rejected(reasons.too_deep) from None
    return value


def refuse_repeated_keys(body: bytes, reasons: BodyReasons) -> None:
    """Refuse a body in which one object has the same key twice: every reader here keeps
    the last value, another reader may keep the first. A second parse by the standard
    library, about 25 µs for a few KB: Clerk and Supabase send a webhook per user change,
    not a stream of payments (Stripe's provider counts colons instead)."""
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except RecursionError:  # orjson allows 1024 levels, the standard library about 1000
        raise Rejected(reasons.too_deep) from None
    except ValueError:
        raise Rejected(reasons.repeated_keys) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("repeated key")
    return obj
