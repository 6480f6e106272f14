"""Alerts: a problem that needs a person reaches them once, rather than waiting to be seen.

Every :data:`CHECK_SECONDS` the serving process looks for these problems in the database:

    key        Loops refuses an account's API key: its deliveries wait for a new one
    outage     Loops has not answered an account for OUTAGE_AFTER seconds
    failed     deliveries of an endpoint failed or died (one alert per endpoint per day)
    rejected   an endpoint refused REJECTIONS_SPIKE requests within REJECTIONS_WINDOW
               (a wrong signing secret, a proxy that changes the body): one per day

Each problem has a key (the account's problem and when it began, or the endpoint and the
day), and an alert goes out for a key once: the key is written to ``alerts_sent`` before
the alert is sent, so several processes on one database send it once between them. A
sending that fails is forgotten, and tried again at the next check.

Where alerts go (both, if both are set): BRIDGE_ALERT_WEBHOOK_URL, a Slack-compatible
incoming webhook (a JSON ``{"text": ...}`` POST: Slack, Mattermost, Rocket.Chat, Discord's
``/slack`` URLs), and e-mail to BRIDGE_ALERT_EMAIL through BRIDGE_SMTP_URL. Each alert
says what happened, what to do, and links to the admin page that shows it.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import anyio.to_thread
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bridge import accounts, db
from bridge.models import (
    DEAD,
    FAILED,
    Account,
    AccountState,
    AlertSent,
    Delivery,
    Endpoint,
    Rejection,
)
from bridge.settings import Settings

__all__ = ["Alert", "Notifier", "check", "problems", "watch"]

log = logging.getLogger("bridge.alerts")

CHECK_SECONDS = 60.0
OUTAGE_AFTER = 600.0  # a short outage ends by itself; one this long is worth a message
REJECTIONS_SPIKE = 10
REJECTIONS_WINDOW = 600.0
SEND_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Alert:
    key: str  # the problem: an alert goes out once per key
    subject: str
    text: str
    path: str  # of the admin page that shows it, e.g. /admin/accounts/3


def problems(engine: Engine, now: float) -> list[Alert]:
    """The problems the database shows at ``now``."""
    found: list[Alert] = []
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    with engine.connect() as conn:
        for name, account_id, kind, since, problem in conn.execute(
            sa.select(
                Account.name,
                Account.id,
                AccountState.problem_kind,
                AccountState.problem_since,
                AccountState.problem,
            )
            .join(AccountState, AccountState.account_id == Account.id)
            .where(AccountState.problem_kind.is_not(None))  # type: ignore[union-attr]
        ):
            since = since or now
            path = f"/admin/accounts/{account_id}"
            if kind == accounts.KEY:
                found.append(
                    Alert(
                        f"account {account_id} key {since:.0f}",
                        f"Loops refuses the API key of the account {name!r}",
                        f"Loops refuses the API key of the Loops account {name!r}, so its "
                        "deliveries wait. Paste a working key on the account's page (Loops: "
                        f"Settings → API); they then resume at once. Loops said: {problem}",
                        path,
                    )
                )
            elif kind == accounts.OUTAGE and now - since >= OUTAGE_AFTER:
                minutes = (now - since) // 60
                found.append(
                    Alert(
                        f"account {account_id} outage {since:.0f}",
                        f"Loops has not answered for {minutes:.0f} minutes ({name!r})",
                        f"Loops has not answered the Loops account {name!r} for {minutes:.0f} "
                        "minutes; its deliveries wait, and resume by themselves when Loops "
                        f"answers again. Check https://status.loops.so. Last problem: {problem}",
                        path,
                    )
                )
        start_of_day = now - now % 86400
        for endpoint_id, name, count, latest in conn.execute(
            sa.select(
                Endpoint.id,
                Endpoint.name,
                sa.func.count(),
                sa.func.max(Delivery.id),
            )
            .join(Delivery, Delivery.endpoint_id == Endpoint.id)
            .where(
                Delivery.status.in_([FAILED, DEAD]),  # type: ignore[attr-defined]
                Delivery.finished_at >= start_of_day,  # type: ignore[operator]
            )
            .group_by(Endpoint.id, Endpoint.name)
        ):
            reason = conn.execute(
                sa.select(Delivery.reason).where(Delivery.id == latest)
            ).scalar_one()
            found.append(
                Alert(
                    f"endpoint {endpoint_id} failed {day}",
                    f"Deliveries failed on the endpoint {name!r}",
                    f"{_count(count, 'delivery', 'deliveries')} of the endpoint {name!r} "
                    f"failed today and will not be retried. The latest: {reason} Open them "
                    "to see each call to Loops, then retry or send them again.",
                    f"/admin/deliveries?endpoint={endpoint_id}&status=failed",
                )
            )
        for endpoint_id, name, count in conn.execute(
            sa.select(Endpoint.id, Endpoint.name, sa.func.count())
            .join(Rejection, Rejection.endpoint_id == Endpoint.id)
            .where(Rejection.at >= now - REJECTIONS_WINDOW)
            .group_by(Endpoint.id, Endpoint.name)
            .having(sa.func.count() >= REJECTIONS_SPIKE)
        ):
            found.append(
                Alert(
                    f"endpoint {endpoint_id} rejected {day}",
                    f"The endpoint {name!r} is refusing webhooks",
                    f"The endpoint {name!r} refused {count} requests in the last "
                    f"{REJECTIONS_WINDOW / 60:.0f} minutes, so the platform's events are not "
                    "reaching Loops. The usual cause is a signing secret that does not match "
                    "the platform's; the page lists each refusal and its reason.",
                    f"/admin/endpoints/{endpoint_id}",
                )
            )
    return found


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class Notifier:
    """Sends an alert to the channels that are set. ``transport``: for the webhook's HTTP
    client (tests)."""

    def __init__(
        self,
        *,
        webhook_url: str = "",
        email_to: str = "",
        smtp_url: str = "",
        email_from: str = "",
        admin_url: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.email_to = [a.strip() for a in email_to.split(",") if a.strip()]
        self.smtp_url = smtp_url
        self.email_from = email_from or "loops-bridge@localhost"
        self.admin_url = admin_url.rstrip("/")
        self._transport = transport

    @classmethod
    def from_settings(
        cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> Notifier:
        """The channels the settings name, with links to where the admin is served."""
        if settings.admin == "on":
            admin_url = settings.public_url
        elif settings.admin.isdigit():  # its own port, on BRIDGE_HOST
            host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
            admin_url = f"http://{host}:{settings.admin}"
        else:
            admin_url = ""  # no admin: the alert names the page all the same
        return cls(
            webhook_url=settings.alert_webhook_url,
            email_to=settings.alert_email,
            smtp_url=settings.smtp_url,
            email_from=settings.alert_email_from,
            admin_url=admin_url,
            transport=transport,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or (self.email_to and self.smtp_url))

    async def send(self, alert: Alert) -> None:
        """Raises :class:`AlertNotSent` with the reason, if any channel failed."""
        link = f"{self.admin_url}{alert.path}" if self.admin_url else alert.path
        body = f"{alert.text}\n\n{link}"
        failed = []
        if self.webhook_url:
            try:
                await self._post(f"*{alert.subject}*\n{body}")
            except AlertNotSent as exc:
                failed.append(f"the webhook at {_host(self.webhook_url)}: {exc}")
            except httpx.HTTPError as exc:  # its message may quote the URL, whose path is secret
                failed.append(f"the webhook at {_host(self.webhook_url)}: {type(exc).__name__}")
        if self.email_to and self.smtp_url:
            try:
                await anyio.to_thread.run_sync(self._mail, alert.subject, body)
            except (OSError, smtplib.SMTPException) as exc:
                failed.append(f"e-mail through {_host(self.smtp_url)}: {_reason(exc)}")
        if failed:
            raise AlertNotSent("; ".join(failed))

    async def _post(self, text: str) -> None:
        async with httpx.AsyncClient(transport=self._transport, timeout=SEND_TIMEOUT) as client:
            answer = await client.post(self.webhook_url, json={"text": text})
        if answer.status_code >= 300:
            raise AlertNotSent(f"answered {answer.status_code}")

    def _mail(self, subject: str, body: str) -> None:
        url = urlsplit(self.smtp_url)
        message = EmailMessage()
        message["Subject"] = f"[loops-bridge] {subject}"
        message["From"] = self.email_from
        message["To"] = ", ".join(self.email_to)
        message.set_content(body)
        tls = ssl.create_default_context()
        if url.scheme == "smtps":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                url.hostname or "", url.port or 465, timeout=SEND_TIMEOUT, context=tls
            )
        else:
            smtp = smtplib.SMTP(url.hostname or "", url.port or 587, timeout=SEND_TIMEOUT)
        with smtp:
            smtp.ehlo()  # what the server offers: has_extn knows nothing before it
            if url.scheme == "smtp" and smtp.has_extn("starttls"):
                smtp.starttls(context=tls)
            elif url.scheme == "smtp" and url.username:
                raise smtplib.SMTPNotSupportedError(
                    "the server offered no STARTTLS, so the password was not sent in clear "
                    "text: give BRIDGE_SMTP_URL a server that offers it, or an smtps:// URL"
                )
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)


class AlertNotSent(Exception):
    pass


def _host(url: str) -> str:
    """Where a URL points, without its path or credentials (a webhook URL's path is its
    secret)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _reason(exc: Exception) -> str:
    return str(exc).partition("\n")[0] or type(exc).__name__


async def check(engine: Engine, notifier: Notifier, now: float) -> list[Alert]:
    """Send an alert for each problem not alerted yet; the alerts sent."""
    sent = []
    for alert in await anyio.to_thread.run_sync(problems, engine, now):
        if not await anyio.to_thread.run_sync(_claim, engine, alert, now):
            continue  # sent before, by this process or another
        try:
            await notifier.send(alert)
        except AlertNotSent as exc:
            await anyio.to_thread.run_sync(_forget, engine, alert.key)
            log.warning("could not send the alert %r (tried again later): %s", alert.subject, exc)
            continue
        log.info("alert sent: %s", alert.subject)
        sent.append(alert)
    return sent


def _claim(engine: Engine, alert: Alert, now: float) -> bool:
    table = AlertSent.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        inserted = conn.execute(
            db.insert(engine, table)
            .values(key=alert.key, sent_at=now, subject=alert.subject)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        return inserted.rowcount == 1


def _forget(engine: Engine, key: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(AlertSent).where(AlertSent.key == key))  # type: ignore[arg-type]


async def watch(
    engine: Engine,
    notifier: Notifier,
    *,
    every: float = CHECK_SECONDS,
    clock: Callable[[], float] = time.time,
) -> None:
    """Check every ``every`` seconds until cancelled."""
    while True:
        try:
            await check(engine, notifier, clock())
        except Exception as exc:  # the database is down: try again at the next check
            log.warning("could not check for problems to alert on: %s", _reason(exc))
        await asyncio.sleep(every)
