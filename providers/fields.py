"""Reading a platform's JSON safely: the small helpers every provider needs, in one place.

A webhook body is the sender's to shape, so every field is checked for what it claims to be
before it is used: a value of the wrong type reads as missing rather than raising.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_ID_CHARS", "dig", "is_int", "is_name", "split_name", "text"]

MAX_ID_CHARS = 255  # an id or type longer than this is not one the bridge stores


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


def split_name(full_name: Any) -> tuple[str | None, str | None]:
    """``"Jenny Rosen"`` -> ``("Jenny", "Rosen")``. Missing stays None, so it never clears a
    name in Loops."""
    words = (text(full_name) or "").split(maxsplit=1)
    return (words[0] if words else None), (words[1] if len(words) > 1 else None)
