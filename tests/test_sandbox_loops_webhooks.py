"""The sandbox playing Loops' own webhooks (Loops -> the bridge): what it posts, in which
order, signed how, at what pace, and how it retries.

The sandbox posts through ``httpx.ASGITransport`` to a small Starlette app of the test's own
(or to the bridge's app), all on one event loop. Time is a fake clock that the sandbox's
injected ``sleep`` moves, so pacing and backoff take no wall-clock time and are asserted on
the clock's readings.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge import sandbox
from bridge.sandbox import WEBHOOK_RETRY_DELAYS, LoopsWebhook, create_app

API_KEY = "sk_test_alpha_000000000001a2b"
OTHER_API_KEY = "sk_test_beta_0000000000009c8d"
SECRET = "whsec_uVJT73gFghLmUR3ZParbYPXLPTqUGzPV"
OTHER_SECRET = "whsec_c2FuZGJveG90aGVyc2VjcmV0MDAwMDAwMDA"
URL = "http://bridge.test/loops-webhooks/lw_sandboxtesttoken0000000000c0de"
LOOPS = {"successfulPayment": "Payment received"}
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "loops"


class FakeClock:
    """The sandbox's clock, moved only by the sandbox's own waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Receiver:
    """Where the posts land: it keeps each request and answers ``statuses`` in turn, then
    200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[httpx.Headers, bytes]] = []
        self.app = Starlette(
            routes=[Route("/loops-webhooks/{token}", self.endpoint, methods=["POST"])]
        )

    async def endpoint(self, request: Request) -> JSONResponse:
        self.received.append((httpx.Headers(request.headers.raw), await request.body()))
        status = self.statuses.pop(0) if self.statuses else 200
        return JSONResponse({"received": status == 200}, status)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


class World:
    """The sandbox, its fake clock and a receiver, with the sandbox's API at hand."""

    def __init__(self, receiver: Receiver | None = None, **app: Any) -> None:
        self.clock = FakeClock()
        self.receiver = receiver or Receiver()
        app.setdefault("webhook_transport", httpx.ASGITransport(app=self.receiver.app))
        self.app = create_app(rate_limit=1000, clock=self.clock, sleep=self.clock.sleep, **app)
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://sandbox",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )

    async def configure(self, **config: Any) -> httpx.Response:
        body = {"url": URL, "secret": SECRET, "loops": LOOPS, **config}
        answer = await self.api.post("/_sandbox/loops-webhook", json=body)
        assert answer.status_code == 200, answer.text
        return answer

    async def send_event(
        self, email: str, event_name: str = "successfulPayment", **body: Any
    ) -> httpx.Response:
        answer = await self.api.post(
            "/api/v1/events/send", json={"email": email, "eventName": event_name, **body}
        )
        assert answer.status_code == 200, answer.text
        return answer

    async def posted(self, count: int, **params: str) -> list[dict[str, Any]]:
        """The sandbox's records, once ``count`` of them are settled (delivered or failed)."""
        for _ in range(100_000):
            records = (await self.api.get("/_sandbox/loops-webhooks", params=params)).json()
            settled = [r for r in records if r["status"] != "queued"]
            if len(settled) >= count:
                return records
            await asyncio.sleep(0)
        raise AssertionError(f"the sandbox did not settle {count} posts: {records}")


def run(scenario: Callable[[World], Awaitable[None]], **world: Any) -> World:
    """Run ``scenario`` on a fresh world, on one event loop."""

    async def main() -> World:
        made = World(**world)
        async with made.api:
            await scenario(made)
        return made

    return asyncio.run(main())


def names(records: list[dict[str, Any]]) -> list[str]:
    return [r["eventName"] for r in records]


# -- what is posted, signed how ---------------------------------------------------------------


def test_a_loop_email_is_sent_then_delivered_after_the_api_answer() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com", userId="user_42")
        assert world.receiver.received == []  # answered first; posted afterwards

        records = await world.posted(2)
        assert names(records) == ["loop.email.sent", "email.delivered"]
        assert [r["status"] for r in records] == ["delivered", "delivered"]
        (contact,) = (await world.api.get("/_sandbox/contacts")).json()
        sent, delivered = world.receiver.bodies()
        identity = {"id": contact["id"], "email": "ada@example.com", "userId": "user_42"}
        assert sent == {
            "eventName": "loop.email.sent",
            "eventTime": sent["eventTime"],
            "webhookSchemaVersion": "1.0.0",
            "contactIdentity": identity,
            "loopId": sent["loopId"],
            "loopName": "Payment received",
            "email": sent["email"],
        }
        assert sent["email"]["subject"] == "Payment received"
        assert sent["email"]["id"] != sent["email"]["emailMessageId"]
        assert delivered == {
            "eventName": "email.delivered",
            "eventTime": delivered["eventTime"],
            "webhookSchemaVersion": "1.0.0",
            "sourceType": "loop",
            "loopId": sent["loopId"],
            "email": sent["email"],
            "contactIdentity": identity,
        }
        assert [r["payload"] for r in records] == [sent, delivered]

    run(scenario)


def test_each_post_is_signed_as_standard_webhooks_signs() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com")
        records = await world.posted(2)
        ids = []
        for (headers, body), record in zip(world.receiver.received, records, strict=True):
            assert Webhook(SECRET).verify(body, dict(headers)) == record["payload"]
            with pytest.raises(WebhookVerificationError):
                Webhook(OTHER_SECRET).verify(body, dict(headers))
            assert headers["webhook-id"] == record["webhookId"]
            assert headers["webhook-id"].startswith("msg_")
            assert headers["content-type"] == "application/json"
            (attempt,) = record["attempts"]
            assert headers["webhook-timestamp"] == str(attempt["timestamp"])
            assert json.loads(body)["eventTime"] <= attempt["timestamp"]
            ids.append(headers["webhook-id"])
        assert len(set(ids)) == 2

    run(scenario)


def test_event_time_is_the_sandbox_clock_as_unix_time() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com")
        (first, _) = await world.posted(2)
        world.clock.now += 3600
        await world.send_event("grace@example.com")
        records = await world.posted(4)
        assert records[2]["payload"]["eventTime"] - first["payload"]["eventTime"] in (3600, 3601)

    run(scenario)


def test_the_payloads_have_the_fixtures_shapes() -> None:
    """The same keys as tests/fixtures/loops (built from Loops' docs and Go SDK), but for
    ``mailingLists``, which Loops includes only for an email sent to mailing lists, and the
    source's id (a fixture's email may come from a campaign or a transactional email)."""

    def keys(payload: dict[str, Any]) -> set[str]:
        sources = {"campaignId", "loopId", "transactionalId"}
        source = {"source id"} if sources & set(payload) else set()
        return set(payload) - sources - {"mailingLists"} | source

    async def scenario(world: World) -> None:
        await world.configure(contactEvents=True)
        await world.send_event("bounce@example.com")
        await world.send_event("complaint@example.com")
        await world.send_event("softbounce@example.com")
        await world.api.post("/_sandbox/loops-webhook/test")
        records = await world.posted(12)
        assert len(set(names(records))) == 8
        for record in records:
            fixture = json.loads((FIXTURES / f"{record['eventName']}.json").read_text())
            assert keys(record["payload"]) == keys(fixture), record["eventName"]
            for part in ("contactIdentity", "email"):
                if part in fixture:
                    assert set(record["payload"][part]) == set(fixture[part])

    run(scenario)


# -- what each address makes happen -------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("bounce@example.com", ["email.hardBounced", "contact.unsubscribed"]),
        ("bounce+42@example.com", ["email.hardBounced", "contact.unsubscribed"]),
        ("softbounce@example.com", ["email.softBounced"]),
        ("complaint@example.com", ["email.delivered", "email.spamReported"]),
        ("Complaint+x@Example.com", ["email.delivered", "email.spamReported"]),
        ("bouncer@example.com", ["email.delivered"]),
    ],
)
def test_the_address_decides_what_happens_to_the_email(email: str, expected: list[str]) -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event(email)
        records = await world.posted(1 + len(expected))
        assert names(records) == ["loop.email.sent", *expected]
        sent = records[0]["payload"]
        for record in records[1:]:
            assert record["payload"]["contactIdentity"] == sent["contactIdentity"]
            if record["eventName"].startswith("email."):
                assert record["payload"]["email"] == sent["email"]
                assert record["payload"]["sourceType"] == "loop"

    run(scenario)


def test_a_hard_bounce_unsubscribes_the_contact_and_ends_its_loop_emails() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("bounce@example.com")
        await world.posted(3)
        (contact,) = (await world.api.get("/_sandbox/contacts")).json()
        assert contact["subscribed"] is False
        await world.send_event("bounce@example.com")  # Loops sends no loop email now
        await world.send_event("ada@example.com")
        records = await world.posted(5)
        assert names(records)[3:] == ["loop.email.sent", "email.delivered"]
        assert records[3]["payload"]["contactIdentity"]["email"] == "ada@example.com"

    run(scenario)


def test_only_configured_loops_send_and_contact_events_are_off_by_default() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com", event_name="somethingElse")
        await world.api.post("/api/v1/contacts/create", json={"email": "grace@example.com"})
        await world.send_event("ada@example.com")
        records = await world.posted(2)
        assert names(records) == ["loop.email.sent", "email.delivered"]

    run(scenario)


def test_contact_events_when_enabled() -> None:
    async def scenario(world: World) -> None:
        await world.configure(contactEvents=True)
        await world.api.post(
            "/api/v1/contacts/create", json={"email": "grace@example.com", "firstName": "Grace"}
        )
        await world.send_event("ada@example.com")  # creates ada, then her loop email
        await world.api.post("/api/v1/contacts/delete", json={"email": "grace@example.com"})
        records = await world.posted(6)
        assert names(records) == [
            "contact.created",
            "contact.created",
            "loop.email.sent",
            "email.delivered",
            "contact.unsubscribed",
            "contact.deleted",
        ]
        created = records[0]["payload"]
        assert created["contact"]["firstName"] == "Grace"
        assert created["contact"]["subscribed"] is True
        assert created["contactIdentity"] == {
            "id": created["contact"]["id"],
            "email": "grace@example.com",
            "userId": None,
        }
        assert records[4]["payload"]["contactIdentity"] == created["contactIdentity"]

    run(scenario)


def test_nothing_is_posted_without_a_configuration_or_for_a_refused_call() -> None:
    async def scenario(world: World) -> None:
        await world.send_event("ada@example.com")
        await world.configure()
        refused = await world.api.post(
            "/api/v1/events/send", json={"email": "nope", "eventName": "successfulPayment"}
        )
        assert refused.status_code == 400
        await world.api.post("/_sandbox/loops-webhook/test")
        records = await world.posted(1)
        assert names(records) == ["testing.testEvent"]
        assert records[0]["payload"]["message"] == "test"
        assert "contactIdentity" not in records[0]["payload"]

    run(scenario)


# -- pace and retries -------------------------------------------------------------------------


def test_at_most_ten_posts_a_second() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        for number in range(30):
            await world.send_event(f"user{number}@example.com")
        records = await world.posted(60)
        starts = sorted(a["at"] for r in records for a in r["attempts"])
        assert len(starts) == 60
        assert all(b - a >= 0.1 for a, b in itertools.pairwise(starts))
        busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
        assert busiest == 10
        assert starts[-1] - starts[0] >= 5.9  # sixty posts take six seconds of the clock

    run(scenario)


def test_a_failed_post_is_retried_with_backoff_and_keeps_its_id() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com")
        records = await world.posted(2)
        sent, delivered = records
        assert [a["status"] for a in sent["attempts"]] == [500, 503, 200]
        assert sent["status"] == "delivered"
        assert [a["status"] for a in delivered["attempts"]] == [200]
        ids = [h["webhook-id"] for h, _ in world.receiver.received]
        assert ids == [sent["webhookId"]] * 3 + [delivered["webhookId"]]
        at = [a["at"] for a in sent["attempts"]]
        assert at[1] - at[0] >= WEBHOOK_RETRY_DELAYS[0]
        assert at[2] - at[1] >= WEBHOOK_RETRY_DELAYS[1]
        assert delivered["attempts"][0]["at"] > at[2]  # the order holds through retries
        assert sent["attempts"][0]["response"] == '{"received":false}'

    run(scenario, receiver=Receiver([500, 503]))


def test_a_post_that_keeps_failing_is_given_up_and_the_next_goes_on() -> None:
    attempts = 1 + len(WEBHOOK_RETRY_DELAYS)

    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com")
        records = await world.posted(2)
        assert [r["status"] for r in records] == ["failed", "delivered"]
        assert [a["status"] for a in records[0]["attempts"]] == [500] * attempts
        assert world.clock.slept.count(WEBHOOK_RETRY_DELAYS[-1]) == 1

    run(scenario, receiver=Receiver([500] * attempts))


def test_no_answer_at_all_is_retried() -> None:
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200)

    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com")
        sent, _ = await world.posted(2)
        first, second = sent["attempts"]
        assert first["status"] is None and first["error"].startswith("ConnectError")
        assert second["status"] == 200

    run(scenario, webhook_transport=httpx.MockTransport(answer))


# -- configuration ----------------------------------------------------------------------------


def test_configuration_is_shown_without_its_secrets() -> None:
    async def scenario(world: World) -> None:
        answer = await world.configure()
        shown = answer.json()["webhook"]
        assert shown == {
            "url": "http://bridge.test/loops-webhooks/…c0de",
            "secret": "whsec_…GzPV",
            "loops": LOOPS,
            "contactEvents": False,
        }
        texts = [answer.text, (await world.api.get("/_sandbox/loops-webhook")).text]
        texts.append((await world.api.get("/")).text)
        await world.send_event("ada@example.com")
        await world.posted(2)
        texts.append((await world.api.get("/_sandbox/loops-webhooks")).text)
        for text in texts:
            assert SECRET not in text and SECRET[6:20] not in text
            assert "lw_sandboxtesttoken" not in text

    run(scenario)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"secret": "not-a-secret"}, "secret must be a signing secret"),
        ({"secret": "whsec_!!!!not base64!!!!"}, "secret must be a signing secret"),
        ({"url": "ftp://bridge.test/x"}, "url must be"),
        ({"url": 42}, "url must be"),
        ({"loops": {"successfulPayment": ""}}, "loops must map"),
        ({"loops": ["successfulPayment"]}, "loops must map"),
        ({"contactEvents": "yes"}, "contactEvents must be"),
        ({"key": "short"}, "key must be"),
    ],
)
def test_a_wrong_configuration_is_refused_with_the_reason(
    change: dict[str, Any], problem: str
) -> None:
    async def scenario(world: World) -> None:
        body = {"url": URL, "secret": SECRET, "loops": LOOPS, **change}
        answer = await world.api.post("/_sandbox/loops-webhook", json=body)
        assert answer.status_code == 400
        assert problem in answer.json()["message"]
        assert "!!!!" not in answer.text
        assert (await world.api.get("/_sandbox/loops-webhook")).json() == {"webhook": None}

    run(scenario)


def test_a_key_can_have_its_own_configuration() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.configure(secret=OTHER_SECRET, key=OTHER_API_KEY, loops={"signup": "Hello"})
        shown = (await world.api.get("/_sandbox/loops-webhook")).json()
        assert shown["webhook"]["secret"] == "whsec_…GzPV"
        assert shown["byKey"]["…9c8d"]["loops"] == {"signup": "Hello"}

        other = {"Authorization": f"Bearer {OTHER_API_KEY}"}
        body = {"email": "ada@example.com", "eventName": "signup"}
        await world.api.post("/api/v1/events/send", json=body, headers=other)
        await world.send_event("grace@example.com")
        await world.posted(4)
        mine = await world.posted(2, key="…1a2b")
        theirs = await world.posted(2, key="…9c8d")
        assert names(mine) == names(theirs) == ["loop.email.sent", "email.delivered"]
        assert theirs[0]["payload"]["loopName"] == "Hello"
        for headers, body_ in world.receiver.received:
            email = json.loads(body_)["contactIdentity"]["email"]
            secret = OTHER_SECRET if email == "ada@example.com" else SECRET
            Webhook(secret).verify(body_, dict(headers))

        cleared = await world.api.delete("/_sandbox/loops-webhook", params={"key": "…9c8d"})
        assert "byKey" not in cleared.json()
        assert (await world.api.delete("/_sandbox/loops-webhook")).json() == {"webhook": None}

    run(scenario)


def test_reset_forgets_the_posts_but_keeps_the_configuration() -> None:
    async def scenario(world: World) -> None:
        await world.configure()
        await world.send_event("ada@example.com")
        await world.posted(2)
        await world.api.post("/_sandbox/reset")
        assert (await world.api.get("/_sandbox/loops-webhooks")).json() == []
        assert (await world.api.get("/_sandbox/loops-webhook")).json()["webhook"]

    run(scenario)


def test_a_configuration_given_at_creation_and_the_positional_signature() -> None:
    async def scenario(world: World) -> None:
        await world.send_event("ada@example.com")
        assert names(await world.posted(2)) == ["loop.email.sent", "email.delivered"]

    webhook = LoopsWebhook.from_options(URL, SECRET, ["successfulPayment=Payment received"])
    run(scenario, loops_webhook=webhook)
    # The positional form (API keys, rate limit, clock) still makes a working sandbox.
    app = sandbox.create_app(None, 10, FakeClock())

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            return await client.get("/")

    assert asyncio.run(ask()).status_code == 200


@pytest.mark.parametrize(
    "loops", [["successfulPayment"], ["=Payment received"], ["successfulPayment= "]]
)
def test_loop_options_are_checked(loops: list[str]) -> None:
    with pytest.raises(ValueError, match="--loop takes"):
        LoopsWebhook.from_options(URL, SECRET, loops)


def test_the_cli_refuses_half_a_configuration(tmp_path: Path) -> None:
    from tests.harness import run_cli, settings_env

    env = settings_env(tmp_path)
    done = run_cli(env, "sandbox", "--loop", "successfulPayment=Paid", check=False)
    assert done.returncode == 2
    assert "--loops-webhook-url and --loops-webhook-secret" in done.stderr
    done = run_cli(
        env,
        "sandbox",
        "--loops-webhook-url",
        URL,
        "--loops-webhook-secret",
        "whsec_!!!",
        check=False,
    )
    assert done.returncode == 2
    assert "secret must be a signing secret" in done.stderr
    assert "!!!" not in done.stderr


# -- the whole loop, through the bridge -------------------------------------------------------

STRIPE_SECRET = "whsec_sandboxLoopsStripeSecretEEEEEEEE"


def test_the_whole_loop_runs_through_the_bridge(tmp_path: Path) -> None:
    """Stripe -> the bridge -> the sandbox's events/send -> the sandbox's Loops webhooks ->
    the bridge's /loops-webhooks/{token}: stored, and linked to the delivery that caused it."""
    import sqlalchemy as sa

    from bridge import registry
    from bridge.models import LoopsEvent
    from tests.harness import Harness, stripe_event

    with Harness(tmp_path) as h:
        endpoint = h.endpoint("invoice.paid", secret=STRIPE_SECRET, loops_event="successfulPayment")
        registry.add_loops_webhook_secret(h.engine, "acme", SECRET)
        url = registry.loops_webhook_url(h.engine, h.settings, "acme")
        h.sandbox_app.state.sandbox.webhook_transport = httpx.ASGITransport(app=h.app)
        config = {"url": url, "secret": SECRET, "loops": LOOPS}
        assert h.run(h.loops.post("/_sandbox/loops-webhook", json=config)).status_code == 200

        body = stripe_event(
            "captured-test-mode/invoice.paid.event.json",
            "evt_loop_1",
            customer_email="ada@example.com",
        )
        h.webhook(endpoint, body, STRIPE_SECRET)
        (delivery,) = h.settled(1)

        def stored() -> list[dict[str, Any]] | None:
            with h.engine.connect() as conn:
                rows = conn.execute(sa.select(LoopsEvent).order_by(LoopsEvent.id)).mappings()  # type: ignore[arg-type]
                found = [dict(row) for row in rows]
            return found if len(found) >= 2 else None

        rows = h.until(stored, what="the sandbox's Loops webhooks to reach the bridge")
        assert [r["event_name"] for r in rows] == ["loop.email.sent", "email.delivered"]
        assert {r["email"] for r in rows} == {"ada@example.com"}
        assert {r["delivery_id"] for r in rows} == {delivery["id"]}
        assert rows[0]["source_name"] == "Payment received"

        def settled() -> list[dict[str, Any]] | None:
            records = h.loops_get("loops-webhooks")
            return records if all(r["status"] != "queued" for r in records) else None

        records = h.until(settled, what="the sandbox to record the bridge's answers")
        assert [r["webhookId"] for r in records] == [r["webhook_id"] for r in rows]
        assert [a["status"] for r in records for a in r["attempts"]] == [200, 200]
