"""Signing in to the admin: one password, server-side sessions, slowed-down guessing.

- The password comes from ``BRIDGE_ADMIN_PASSWORD``. Unset on first start, one is generated
  and printed once to the console. Either way only a scrypt hash is stored
  (https://www.rfc-editor.org/rfc/rfc7914), and checking it takes a tenth of a second.
- A session is a random cookie value; the database keeps only its SHA-256 and an expiry,
  so signing out or expiry ends it for good and a copied database reveals no session.
- Wrong passwords are slowed down per client and across all clients; the slow-down is
  logged, so an operator sees a guessing attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from bridge.models import AdminPassword, AdminSession

__all__ = ["COOKIE", "SESSION_SECONDS", "Guard", "hash_password", "password_matches"]

log = logging.getLogger("bridge.admin")

COOKIE = "loops_bridge_session"
SESSION_SECONDS = 12 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


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


def ensure_password(engine: Engine, configured: str) -> None:
    """Make the stored hash match ``BRIDGE_ADMIN_PASSWORD``, or generate a password."""
    with Session(engine) as session:
        row = session.get(AdminPassword, 1)
        if configured:
            if row is None or not password_matches(configured, row.hash):
                session.merge(
                    AdminPassword(id=1, hash=hash_password(configured), created_at=time.time())
                )
                session.commit()
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


@dataclass
class Guard:
    """Password checks and sessions, with the memory of recent failures."""

    engine: Engine
    per_client_free: int = 5  # wrong passwords before a client is slowed down
    global_free: int = 50  # wrong passwords per 10 minutes, all clients together
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _all_failures: deque[float] = field(default_factory=deque)

    def delay_for(self, client: str) -> float:
        """Seconds to hold a sign-in attempt from ``client`` before checking it."""
        now = time.time()
        mine = self._recent(self._failures.get(client, deque()), now)
        everyone = self._recent(self._all_failures, now)
        delay = 0.0
        if len(mine) >= self.per_client_free:
            delay = min(30.0, 2.0 ** (len(mine) - self.per_client_free))
        if len(everyone) >= self.global_free:
            delay = max(delay, 2.0)
        return delay

    @staticmethod
    def _recent(times: deque[float], now: float) -> deque[float]:
        while times and times[0] < now - 600:
            times.popleft()
        return times

    def check_password(self, client: str, password: str) -> bool:
        with Session(self.engine) as session:
            row = session.get(AdminPassword, 1)
        if row is not None and password_matches(password, row.hash):
            self._failures.pop(client, None)
            return True
        now = time.time()
        mine = self._failures.setdefault(client, deque())
        mine.append(now)
        self._all_failures.append(now)
        if len(self._failures) > 10_000:
            self._failures.clear()
        if len(mine) >= self.per_client_free:
            log.warning(
                "admin sign-in: %d wrong passwords from %s in 10 minutes; slowing it down",
                len(mine),
                client,
            )
        if len(self._all_failures) >= self.global_free:
            log.warning(
                "admin sign-in: %d wrong passwords overall in 10 minutes", len(self._all_failures)
            )
        return False

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
