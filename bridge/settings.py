"""Settings, declared once.

Every setting is a row in ``DECLARED``: its environment variable, default and help text. That
one table feeds :class:`Settings`, ``loops-bridge settings`` and the README's settings table,
so a new setting is added here and nowhere else.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import platformdirs
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["DECLARED", "Settings", "load"]


@dataclass(frozen=True, slots=True)
class Declared:
    env: str
    default: str
    help: str
    cast: Callable[[str], Any] = str
    secret: bool = False  # never shown: not by `loops-bridge settings`, not in an error


def _positive_int(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise ValueError("must be a positive whole number")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < math.inf:
        raise ValueError("must be a positive number, such as 30 or 0.5")
    return number


def _admin(value: str) -> str:
    if value in ("on", "off") or (value.isdigit() and 0 < int(value) < 65536):
        return value
    raise ValueError("must be on, off or a port number")


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise ValueError("must be text or json")
    return value


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _addresses(value: str) -> str:
    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        if item != "*" and not _parses(ipaddress.ip_network, item):
            raise ValueError(
                f"{item!r} is not an IP address or network (such as 10.0.0.0/8), nor *"
            )
    return ",".join(items)


def _hosts(value: str) -> str:
    items = [item.strip().lower() for item in value.split(",") if item.strip()]
    for item in items:
        if (
            item != "*"
            and not re.fullmatch(r"[a-z0-9_.-]+", item)
            and not _parses(ipaddress.ip_address, item)
        ):
            raise ValueError(
                f"{item!r} is not a host name (such as admin.example.com, without scheme or "
                "port), nor *"
            )
    return ",".join(items)


def _url(value: str, schemes: tuple[str, ...]) -> str:
    """Empty, or a URL of one of ``schemes`` with a host. The message never repeats it: it
    may hold a secret."""
    if value and (urlsplit(value).scheme not in schemes or not urlsplit(value).hostname):
        raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host")
    return value


def _addresses_of_mail(value: str) -> str:
    for address in filter(None, (a.strip() for a in value.split(","))):
        if "@" not in address or " " in address:
            raise ValueError(f"{address[:80]!r} is not an e-mail address")
    return value


def _database_url(value: str) -> str:
    """The URL given, if it names a database the bridge runs on, else a SQLite file in the
    user's data folder: one database per user, wherever a command runs
    (https://platformdirs.readthedocs.io)."""
    if not value:
        return f"sqlite:///{platformdirs.user_data_path('loops-bridge') / 'bridge.db'}"
    use = "use sqlite:////path/to/bridge.db or postgresql://user:password@host/database"
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError(f"is not a database URL: {use}") from None
    backend, _, driver = url.drivername.partition("+")  # as written: no dialect loaded
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return value
    if backend not in ("postgresql", "postgres") or driver not in ("", "psycopg"):
        name = f"{backend}+{driver}" if driver else backend
        raise ValueError(f"names {name}, which the bridge does not run on: {use}")
    if importlib.util.find_spec("psycopg") is None:
        raise ValueError(
            "names PostgreSQL, but its driver is not installed: install the bridge with it, "
            "pip install 'loops-bridge[postgres]' (or pipx/uv the same way)"
        )
    return value


DECLARED: tuple[Declared, ...] = (
    Declared(
        "BRIDGE_DATABASE_URL",
        "",
        "Where the bridge keeps endpoints and deliveries, as a SQLAlchemy URL: "
        "sqlite:////var/lib/loops-bridge/bridge.db, or postgresql://user@host/db. Unset: a "
        "SQLite file in your user's data folder, the same from any working directory "
        "(~/.local/share/loops-bridge/bridge.db on Linux, ~/Library/Application "
        "Support/loops-bridge/bridge.db on macOS).",
        _database_url,
    ),
    Declared(
        "BRIDGE_LOOPS_API_URL",
        "https://app.loops.so/api/v1",
        "The Loops API base URL. Point it at `loops-bridge sandbox` "
        "(http://127.0.0.1:8025/api/v1) to try the wiring without a real Loops account.",
    ),
    Declared(
        "BRIDGE_STRIPE_API_URL",
        "https://api.stripe.com",
        "Where the Stripe API calls of `backfill`, `recover` and subscription events go "
        "(an endpoint's Stripe API key): Stripe itself, or an egress proxy in front of it.",
    ),
    Declared(
        "BRIDGE_PUBLIC_URL",
        "http://127.0.0.1:8000",
        "The address Stripe reaches the bridge on; endpoint URLs are built from it.",
    ),
    Declared("BRIDGE_HOST", "127.0.0.1", "Interface `serve` listens on (0.0.0.0 in Docker)."),
    Declared("BRIDGE_PORT", "8000", "Port `serve` listens on.", _positive_int),
    Declared(
        "BRIDGE_MAX_BODY_BYTES",
        "1048576",
        "Largest webhook body accepted, in bytes; larger requests get 413.",
        _positive_int,
    ),
    Declared(
        "BRIDGE_ADMIN_PASSWORD",
        "",
        "Password of the admin web app at /admin. When unset, the first start generates "
        "one, prints it once to the console and keeps only a slow hash of it.",
        secret=True,
    ),
    Declared(
        "BRIDGE_ADMIN",
        "on",
        "Where the admin web app (and /metrics) is served: `on` at /admin on BRIDGE_PORT; a "
        "port number to serve it only there (on BRIDGE_HOST), so BRIDGE_PORT answers only "
        "/webhooks/* and /healthz; `off` for no admin at all.",
        _admin,
    ),
    Declared(
        "BRIDGE_ALLOWED_HOSTS",
        "",
        "Host names the admin answers to besides those of BRIDGE_PUBLIC_URL and BRIDGE_HOST, "
        "localhost, 127.0.0.1 and ::1 (comma-separated; `*` for any). A request naming another "
        "host gets a 400 page, which defeats DNS rebinding.",
        _hosts,
    ),
    Declared(
        "BRIDGE_TRUSTED_PROXIES",
        "",
        "Your reverse proxies' addresses (IP addresses or networks, comma-separated): only "
        "their X-Forwarded-For and X-Forwarded-Proto are believed, on both ports. Empty: "
        "those headers are ignored, and a client is the address it connects from.",
        _addresses,
    ),
    Declared(
        "BRIDGE_ALERT_WEBHOOK_URL",
        "",
        "A Slack-compatible incoming webhook URL (Slack, Mattermost, Rocket.Chat, Discord's "
        ".../slack) that alerts are posted to: a refused key, a long outage, failed "
        "deliveries, a spike of refused requests. A secret: never shown.",
        lambda value: _url(value, ("https", "http")),
        secret=True,
    ),
    Declared(
        "BRIDGE_ALERT_EMAIL",
        "",
        "Addresses alerts are e-mailed to (comma-separated), through BRIDGE_SMTP_URL.",
        _addresses_of_mail,
    ),
    Declared(
        "BRIDGE_SMTP_URL",
        "",
        "The mail server for alerts: smtp://user:password@host:587 (STARTTLS, required when "
        "a password is given) or smtps://user:password@host:465. Its password is never shown.",
        lambda value: _url(value, ("smtp", "smtps")),
        secret=True,
    ),
    Declared(
        "BRIDGE_ALERT_EMAIL_FROM",
        "loops-bridge@localhost",
        "The sender of alert e-mails.",
    ),
    Declared(
        "BRIDGE_SECRET_KEY",
        "",
        "Key that encrypts Loops API keys and signing secrets in the database. When unset, "
        "the bridge creates secret.key in its data folder (owner-only) and uses that; keep a "
        "copy of it with your backups.",
        secret=True,
    ),
    Declared(
        "BRIDGE_LOOPS_RATE_LIMIT",
        "10",
        "Requests per second the bridge allows itself per Loops account (Loops' limit is 10).",
        _positive_int,
    ),
    Declared(
        "BRIDGE_RETRY_BASE_SECONDS",
        "5",
        "Wait before the first retry of a delivery Loops could not take; it doubles with each "
        "try, up to an hour, until the delivery is BRIDGE_MAX_AGE_HOURS old.",
        _positive_float,
    ),
    Declared(
        "BRIDGE_MAX_AGE_HOURS",
        "72",
        "How long a delivery is retried after it was queued before it is marked dead (72 h: "
        "as long as Stripe itself retries).",
        _positive_float,
    ),
    Declared(
        "BRIDGE_LEASE_SECONDS",
        "30",
        "How long a worker's claim on a delivery lasts unless renewed; the deliveries of a "
        "worker that died are taken up by another after at most this long.",
        _positive_float,
    ),
    Declared(
        "BRIDGE_RETENTION_DAYS",
        "30",
        "Days the raw payload of a delivered or ignored event is kept; then it is deleted and "
        "only the delivery's outcome and its Loops calls stay.",
        _positive_float,
    ),
    Declared(
        "BRIDGE_LOG_FORMAT",
        "text",
        "`text` for people, `json` for one JSON object per line (for log collectors).",
        _log_format,
    ),
    Declared(
        "BRIDGE_WORKER_CONCURRENCY",
        "16",
        "How many deliveries one worker process works on at once (across all accounts).",
        _positive_int,
    ),
)


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    loops_api_url: str
    stripe_api_url: str
    public_url: str
    host: str
    port: int
    max_body_bytes: int
    admin_password: str = field(repr=False)
    admin: str
    allowed_hosts: str
    trusted_proxies: str
    alert_webhook_url: str = field(repr=False)
    alert_email: str
    smtp_url: str = field(repr=False)
    alert_email_from: str
    secret_key: str = field(repr=False)
    loops_rate_limit: int
    retry_base_seconds: float
    max_age_hours: float
    lease_seconds: float
    retention_days: float
    log_format: str
    worker_concurrency: int

    def endpoint_url(self, endpoint_id: str) -> str:
        return f"{self.public_url.rstrip('/')}/webhooks/{endpoint_id}"


def _shown(raw: str) -> str:
    """A refused value as an error repeats it: a URL without its password, and anything
    that might hold one but is not plainly a URL with its password in the usual place (a
    libpq string, a password in the query, an unescaped "@"), not at all."""
    if "://" not in raw:  # a number, a word, host:port; a libpq string or user:pw@host not
        return "(not shown)" if any(sign in raw for sign in "@= ") else repr(raw)
    if raw.count("@") > 1:
        return "(not shown)"
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        return "(not shown)"
    if any("pass" in key.lower() or "secret" in key.lower() for key in url.query):
        return "(not shown)"
    return repr(url.render_as_string(hide_password=True))


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every declared setting from the environment, failing with the variable's name."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in DECLARED:
        raw = env.get(item.env, "").strip() or item.default
        try:
            values[item.env.removeprefix("BRIDGE_").lower()] = item.cast(raw)
        except ValueError as exc:
            shown = "(not shown)" if item.secret else _shown(raw)
            raise SettingsError(f"{item.env}={shown} is not valid: {exc}") from None
    return Settings(**values)
