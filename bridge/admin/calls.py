"""A delivery's Loops calls as its page shows them: the first few and the latest few, and
how many were made between them.

A delivery can be called many times: while its account's key is refused, a probe retries
the same delivery every 30 s, some 8,600 calls in 72 hours. Listing them all made a page of
megabytes. Three bounded queries on ``loops_calls``' ``delivery_id`` index read only what is
shown: the first :data:`SHOWN_FIRST` calls, the latest :data:`SHOWN_LATEST` after them, and
the number between (an index-only count).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from bridge.models import LoopsCall

__all__ = ["SHOWN_FIRST", "SHOWN_LATEST", "Calls", "read_calls"]

SHOWN_FIRST = 5
SHOWN_LATEST = 5


@dataclass(frozen=True, slots=True)
class Calls:
    """``len()`` is the number of calls made, shown or not."""

    first: list[LoopsCall]  # the first ones made, oldest first
    between: int  # made after ``first`` and before ``latest``: counted, not shown
    latest: list[LoopsCall]  # the latest ones, oldest first

    def __len__(self) -> int:
        return len(self.first) + self.between + len(self.latest)

    @property
    def shown(self) -> list[LoopsCall]:
        """Every call shown, oldest first; the ``between`` ones go after ``first``."""
        return self.first + self.latest


def read_calls(session: Session, delivery_id: int) -> Calls:
    """The calls of one delivery that its page shows, and the number of the others."""
    of_delivery = col(LoopsCall.delivery_id) == delivery_id
    first = list(
        session.exec(
            select(LoopsCall).where(of_delivery).order_by(col(LoopsCall.id)).limit(SHOWN_FIRST)
        )
    )
    if len(first) < SHOWN_FIRST:
        return Calls(first, 0, [])
    after_first = col(LoopsCall.id) > first[-1].id
    latest = list(
        session.exec(
            select(LoopsCall)
            .where(of_delivery, after_first)
            .order_by(col(LoopsCall.id).desc())
            .limit(SHOWN_LATEST)
        )
    )[::-1]
    if len(latest) < SHOWN_LATEST:
        return Calls(first, 0, latest)
    between = session.exec(
        select(func.count())
        .select_from(LoopsCall)
        .where(of_delivery, after_first, col(LoopsCall.id) < latest[0].id)
    ).one()
    return Calls(first, between, latest)
