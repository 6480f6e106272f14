"""Signing in to the admin: one password, server-side sessions, guessing bounded by work.

- The password comes from ``BRIDGE_ADMIN_PASSWORD``. Unset on first start, one is generated
  and printed once to the console. Either way only a scrypt hash is stored
  (https://www.rfc-editor.org/rfc/rfc7914), about 60 ms and 16 MiB to compute. A sign-in
  is checked against ``BRIDGE_ADMIN_PASSWORD`` itself when it is set (a constant-time
  compare: the process has it anyway), and against the hash only for a generated password.
- Whether ``BRIDGE_ADMIN_PASSWORD`` still matches the stored hash is checked once per
  process, when the admin is first used, rather than when the app is made. When it does not
  (the password was changed), the new hash replaces the old one and every session ends.
- A session is a random cookie value; the database keeps only its SHA-256 and an expiry,
  so signing out or expiry ends it for good and a copied database reveals no session.
  "Sign out everywhere" ends them all.
- Guessing is bounded by the work it may cause, not by making it wait (:class:`Budget`):
  at most :data:`CHECKS_AT_ONCE` password checks run at once in the whole process, each in
  its own thread of a pool that small, so at most that many 16 MiB scrypt buffers exist.
  A sign-in past that, or past a budget of wrong passwords (per client, and overall), is
  refused at once with the seconds to wait, never queued. So however many connections an
  attacker opens, at most :data:`OVERALL_BUDGET` guesses a minute are checked.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import math
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from bridge.models import AdminPassword, AdminSession

__all__ = [
    "COOKIE",
    "SESSION_SECONDS",
    "Budget",
    "Guard",
    "Refused",
    "hash_password",
    "password_matches",
]

log = logging.getLogger("bridge.admin")

COOKIE = "loops_bridge_session"
SESSION_SECONDS = 12 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}

CHECKS_AT_ONCE = 2  # password checks running at once, in the whole process
CLIENT_BUDGET, CLIENT_WINDOW = 10, 600.0  # wrong passwords per client per 10 minutes
OVERALL_BUDGET, OVERALL_WINDOW = 30, 60.0  # wrong passwords overall per minute

# A slot is taken on the event loop, so that a sign-in past the limit is refused at once,
# and given back by the checking thread when it is done, even if its request went away.
_SLOTS = threading.BoundedSemaphore(CHECKS_AT_ONCE)
# A pool of its own: each thread that runs scrypt keeps its 16 MiB in its malloc arena,
# so checks spread over a large pool would keep 16 MiB in each of its threads.
_CHECKER = ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="admin-password")


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT, dklen=32)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def password_matches(password: str, stored: str) -> bool:
    try:
        _, salt, _digest = stored.split("$")
        expected = hash_password(password, base64.b64decode(salt))
    except ValueError:
        return False
    return hmac.compare_digest(expected, stored)


@functools.lru_cache(maxsize=8)
def _is_hash_of(stored: str, configured: str) -> bool:
    """Whether the stored hash is of BRIDGE_ADMIN_PASSWORD, worked out once per process for
    each pair (a scrypt each time otherwise: every admin app made in the process asks). Never
    used for a guess: only for the password the process was given."""
    return password_matches(configured, stored)


def ensure_password(engine: Engine, configured: str) -> None:
    """Make the stored hash match ``BRIDGE_ADMIN_PASSWORD``, or generate a password. A
    changed password ends every session."""
    with Session(engine) as session:
        row = session.get(AdminPassword, 1)
        if configured:
            if row is None or not _is_hash_of(row.hash, configured):
                session.merge(
                    AdminPassword(id=1, hash=hash_password(configured), created_at=time.time())
                )
                ended = session.exec(delete(AdminSession)).rowcount  # type: ignore[call-overload]
                session.commit()
                if row is not None:
                    log.warning(
                        "admin: BRIDGE_ADMIN_PASSWORD has changed, so every session has ended (%d)",
                        ended,
                    )
            return
        if row is not None:
            return
        generated = secrets.token_urlsafe(15)
        session.add(AdminPassword(id=1, hash=hash_password(generated), created_at=time.time()))
        session.commit()
    # Printed, not logged: this is the one time the password is shown, to the operator.
    print(
        "\n  loops-bridge admin password (shown once, only a hash is kept): "
        f"{generated}\n  Set BRIDGE_ADMIN_PASSWORD to choose your own.\n",
        file=sys.stderr,
        flush=True,
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Refused(NamedTuple):
    """A sign-in refused without checking its password: try again after ``seconds``.
    ``who`` is over budget: ``client``, ``everyone``, or ``busy`` when enough checks run."""

    seconds: int
    who: str


@dataclass
class Budget:
    """The wrong passwords a sign-in may still cost: :data:`CLIENT_BUDGET` per client and
    :data:`OVERALL_BUDGET` for all clients together, each over a sliding window.

    A check is counted as wrong from when it starts (:meth:`take`) until its password proves
    right (:meth:`give_back`), so checks running at once cannot overdraw the budget. The
    clients are remembered in the order of their last wrong password and forgotten once
    it is out of the window, so there are never more of them than wrong passwords fit in
    that window (300): new addresses cannot push out an old one, nor grow the table."""

    clock: Callable[[], float] = time.monotonic
    _clients: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _everyone: deque[float] = field(default_factory=deque)

    def __len__(self) -> int:
        """How many clients are remembered."""
        return len(self._clients)

    def take(self, client: str) -> float | Refused:
        """One check for ``client``, counted as wrong (a token for :meth:`give_back`); or
        why there is none left."""
        now = self.clock()
        _forget(self._everyone, now - OVERALL_WINDOW)
        while self._clients:  # the oldest first: stop at the first still in the window
            oldest = next(iter(self._clients))
            if _forget(self._clients[oldest], now - CLIENT_WINDOW):
                break
            del self._clients[oldest]
        mine = self._clients.get(client, deque())
        if len(_forget(mine, now - CLIENT_WINDOW)) >= CLIENT_BUDGET:
            return Refused(math.ceil(mine[0] + CLIENT_WINDOW - now), "client")
        if len(self._everyone) >= OVERALL_BUDGET:
            return Refused(math.ceil(self._everyone[0] + OVERALL_WINDOW - now), "everyone")
        mine.append(now)
        self._clients[client] = mine
        self._clients.move_to_end(client)
        self._everyone.append(now)
        return now

    def give_back(self, client: str, token: float) -> None:
        """The check ``token`` was not a wrong password: forget it."""
        mine = self._clients.get(client, deque())
        for times in (self._everyone, mine):
            if token in times:
                times.remove(token)
        if not mine:
            self._clients.pop(client, None)

    def spent(self, client: str) -> tuple[int, int]:
        """Wrong passwords counted now: ``client``'s and everyone's."""
        return len(self._clients.get(client, ())), len(self._everyone)


def _forget(times: deque[float], before: float) -> deque[float]:
    while times and times[0] <= before:
        times.popleft()
    return times


@dataclass
class Guard:
    """Password checks and sessions. ``configured``: ``BRIDGE_ADMIN_PASSWORD``."""

    engine: Engine
    configured: str = field(default="", repr=False)
    budget: Budget = field(default_factory=Budget)
    _ensured: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ensure(self) -> None:
        """Once (a process has one admin): make the stored hash match BRIDGE_ADMIN_PASSWORD
        (a scrypt check) or generate a password, before any password or session is read."""
        with self._lock:
            if not self._ensured:
                ensure_password(self.engine, self.configured)
                self._ensured = True

    async def sign_in(self, client: str, password: str) -> bool | Refused:
        """Whether ``password`` is right; or, without checking it, why not now."""
        token = self.budget.take(client)
        if isinstance(token, Refused):
            return token
        if not _SLOTS.acquire(blocking=False):
            self.budget.give_back(client, token)
            return Refused(1, "busy")
        right = await asyncio.get_running_loop().run_in_executor(_CHECKER, self._matches, password)
        if right:
            self.budget.give_back(client, token)
            return True
        mine, everyone = self.budget.spent(client)
        if mine == CLIENT_BUDGET:
            log.warning(
                "admin sign-in: %d wrong passwords from %s in 10 minutes; its sign-ins are "
                "refused until they are older",
                mine,
                client,
            )
        if everyone == OVERALL_BUDGET:
            log.warning(
                "admin sign-in: %d wrong passwords in the last minute; every sign-in is refused "
                "until they are older (open sessions keep working). Someone may be guessing "
                "the admin password",
                everyone,
            )
        return False

    def _matches(self, password: str) -> bool:
        try:
            self.ensure()
            if self.configured:  # the stored hash is of it (ensure): no scrypt per guess
                return hmac.compare_digest(password.encode(), self.configured.encode())
            with Session(self.engine) as session:  # a generated password: only its hash
                row = session.get(AdminPassword, 1)
            return row is not None and password_matches(password, row.hash)
        finally:
            _SLOTS.release()

    def open_session(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        with Session(self.engine) as session:
            session.exec(delete(AdminSession).where(AdminSession.expires_at < now))  # type: ignore[call-overload]
            session.add(
                AdminSession(
                    token_hash=_token_hash(token), created_at=now, expires_at=now + SESSION_SECONDS
                )
            )
            session.commit()
        return token

    def session_valid(self, token: str | None) -> bool:
        if not token:
            return False
        self.ensure()
        with Session(self.engine) as session:
            row = session.exec(
                select(AdminSession).where(AdminSession.token_hash == _token_hash(token))
            ).first()
        return row is not None and row.expires_at > time.time()

    def close_session(self, token: str | None) -> None:
        if not token:
            return
        with Session(self.engine) as session:
            session.exec(delete(AdminSession).where(AdminSession.token_hash == _token_hash(token)))  # type: ignore[call-overload]
            session.commit()

    def close_every_session(self) -> int:
        """Sign out everywhere; how many sessions ended."""
        with Session(self.engine) as session:
            ended: int = session.exec(delete(AdminSession)).rowcount  # type: ignore[call-overload]
            session.commit()
        log.warning("admin: signed out everywhere, so every session has ended (%d)", ended)
        return ended
