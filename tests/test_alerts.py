"""Alerts (bridge/alerts.py): a refused key, failed deliveries and refused requests reach a
person once, by a Slack-compatible webhook and by e-mail through a real SMTP server on
loopback. The problems come about the real way: the Loops sandbox refusing a key, the
inbox recording refused requests."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes

import httpx
import pytest
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge import alerts
from bridge.inbox import Inbox
from bridge.models import FAILED
from bridge.settings import SettingsError, load
from tests import leaks
from tests.harness import Harness, stripe_event
from tests.helpers import stored_delivery

SECRET = "whsec_alertsTestSecretAAAAAAAAAAAAAAA"
ADMIN = "https://bridge.example.com"
CUSTOMER = "constructed/customer.created.event.json"


class Chat:
    """A Slack-style incoming webhook: keeps what it is sent, answers ``status``."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.status = 200

        async def hook(request: Request) -> JSONResponse:
            if self.status == 200:
                self.texts.append((await request.json())["text"])
            return JSONResponse({"ok": self.status == 200}, self.status)

        self.transport = httpx.ASGITransport(
            app=Starlette(routes=[Route("/services/T0/B0/hooksecret", hook, methods=["POST"])])
        )


class Mailbox:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"

    def __init__(self) -> None:
        self.messages: list = []


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = Controller(box, hostname="127.0.0.1", port=port)
    server.start()
    yield box, port
    server.stop()


HOOK = "https://hooks.slack.test/services/T0/B0/hooksecret"
leaks.environment({"BRIDGE_ALERT_WEBHOOK_URL": HOOK})


def notifier(chat: Chat, smtp_port: int | None = None) -> alerts.Notifier:
    return alerts.Notifier(
        webhook_url=HOOK,
        email_to="ops@example.com" if smtp_port else "",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}" if smtp_port else "",
        admin_url=ADMIN,
        transport=chat.transport,
    )


def test_a_refused_key_is_told_once_by_chat_and_mail_with_the_page_to_fix_it(tmp_path, mailbox):
    box, port = mailbox
    chat = Chat()
    with Harness(tmp_path, sandbox_keys=["loops_key_good_9999"]) as h:
        account_id = h.account("acme", "loops_key_revoked_0001")
        endpoint = h.endpoint("customer.created", secret=SECRET)
        h.webhook(endpoint, stripe_event(CUSTOMER, "evt_alert_1", email="ada@example.com"), SECRET)
        h.until(lambda: any(d["reason"] for d in h.deliveries()), what="the key to be refused")

        sent = h.run(alerts.check(h.engine, notifier(chat, port), time.time()))
        assert [a.subject for a in sent] == ["Loops refuses the API key of the account 'acme'"]
        (text,) = chat.texts
        assert "Paste a working key" in text and f"{ADMIN}/admin/accounts/{account_id}" in text
        ((to, mail),) = box.messages
        assert to == ["ops@example.com"]
        assert mail["Subject"] == "[loops-bridge] Loops refuses the API key of the account 'acme'"
        assert f"{ADMIN}/admin/accounts/{account_id}" in mail.get_payload()

        # The problem goes on: no second alert for it, however often it is checked.
        for _ in range(3):
            assert h.run(alerts.check(h.engine, notifier(chat, port), time.time())) == []
        assert len(chat.texts) == 1 and len(box.messages) == 1


def test_failed_deliveries_make_one_alert_per_endpoint_and_day(tmp_path):
    chat = Chat()
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint(secret=SECRET, name="Stripe live")
        now = time.time()
        for reason in ("Loops answered 400: Invalid email.", "Loops answered 400: Bad name."):
            stored_delivery(h.engine, endpoint, status=FAILED, finished_at=now, reason=reason)
        (alert,) = h.run(alerts.check(h.engine, notifier(chat), now))
        assert alert.subject == "Deliveries failed on the endpoint 'Stripe live'"
        (text,) = chat.texts
        assert "2 deliveries of the endpoint 'Stripe live' failed today" in text
        assert "Bad name." in text  # the latest reason
        assert f"/admin/deliveries?endpoint={endpoint}&status=failed" in text
        stored_delivery(h.engine, endpoint, status=FAILED, finished_at=now, reason="again")
        assert h.run(alerts.check(h.engine, notifier(chat), now)) == []
        tomorrow = now + 86400
        stored_delivery(h.engine, endpoint, status=FAILED, finished_at=tomorrow, reason="x")
        assert len(h.run(alerts.check(h.engine, notifier(chat), tomorrow))) == 1


def test_a_spike_of_refused_requests_is_told_and_a_failed_send_is_tried_again(tmp_path):
    chat = Chat()
    with Harness(tmp_path, worker=False) as h:
        endpoint = h.endpoint(secret=SECRET, name="Stripe live")
        inbox = Inbox(h.engine)
        for _ in range(alerts.REJECTIONS_SPIKE - 1):
            inbox.record_rejection(endpoint, 400, "no signature matches", {})
        assert h.run(alerts.check(h.engine, notifier(chat), time.time())) == []
        inbox.record_rejection(endpoint, 400, "no signature matches", {})

        chat.status = 500  # the chat is down: nothing is marked as told
        assert h.run(alerts.check(h.engine, notifier(chat), time.time())) == []
        chat.status = 200
        (alert,) = h.run(alerts.check(h.engine, notifier(chat), time.time()))
        assert alert.subject == "The endpoint 'Stripe live' is refusing webhooks"
        assert "signing secret" in chat.texts[0] and f"/admin/endpoints/{endpoint}" in chat.texts[0]


def test_a_password_is_never_sent_to_a_mail_server_without_starttls(mailbox):
    """An SMTP server that offers no STARTTLS (or a network that strips it from the
    server's greeting): the alert is not sent, rather than the password in clear text."""
    box, port = mailbox  # aiosmtpd without a TLS context offers no STARTTLS
    password = "Sup3rSecretSmtpPassw0rd"
    leaks.environment({"BRIDGE_SMTP_URL": f"smtp://alerts:{password}@127.0.0.1:{port}"})
    mailer = alerts.Notifier(
        email_to="ops@example.com", smtp_url=f"smtp://alerts:{password}@127.0.0.1:{port}"
    )
    with pytest.raises(alerts.AlertNotSent) as refused:
        asyncio.run(mailer.send(alerts.Alert("key", "subject", "text", "/admin/")))
    assert str(refused.value) == (
        f"e-mail through 127.0.0.1:{port}: the server offered no STARTTLS, so the password was "
        "not sent in clear text: give BRIDGE_SMTP_URL a server that offers it, or an smtps:// URL"
    )
    assert box.messages == [] and password not in str(refused.value)


def test_the_settings_name_the_channels_and_where_the_links_point():
    assert not alerts.Notifier.from_settings(load({})).enabled  # no channel: no alerts
    mail_only = load({"BRIDGE_ALERT_EMAIL": "ops@example.com"})
    assert not alerts.Notifier.from_settings(mail_only).enabled  # no SMTP server to send by
    own_port = load({"BRIDGE_ALERT_WEBHOOK_URL": HOOK, "BRIDGE_ADMIN": "8001"})
    notifier = alerts.Notifier.from_settings(own_port)
    assert notifier.enabled and notifier.admin_url == "http://127.0.0.1:8001"
    on = load({"BRIDGE_ALERT_WEBHOOK_URL": HOOK, "BRIDGE_PUBLIC_URL": ADMIN})
    assert alerts.Notifier.from_settings(on).admin_url == ADMIN


def test_a_wrong_alert_setting_is_refused_without_showing_it():
    with pytest.raises(SettingsError) as refused:
        load({"BRIDGE_SMTP_URL": "smtp.example.com:587 user:hunter2-smtp-password"})
    assert str(refused.value) == (
        "BRIDGE_SMTP_URL=(not shown) is not valid: must be a smtp:// or smtps:// URL with a host"
    )
