"""bridge/loops.py: the verdict on each of Loops' answers (held to the table in the module's
docstring), and ``LoopsClient`` reading what Loops says: through ``httpx.MockTransport``
playing Loops' answers (../shared/reference/loops-api.md), a loopback socket where a real
transport is the point, and the sandbox app through ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bridge import loops, sandbox
from bridge.loops import Answer, LoopsClient, Verdict, judge

BASE_URL = "http://loops.test/api/v1"
KEY = "loops_key_acme_00001234"
CONTACT = {"email": "ada@example.com", "firstName": "Ada"}
EVENT = {"email": "ada@example.com", "eventName": "successfulPayment"}

Handler = Callable[[httpx.Request], httpx.Response]

# What each class of status means, as the docstring of bridge/loops.py tells it.
VERDICTS = [
    (200, Verdict.DONE),
    (201, Verdict.DONE),
    (204, Verdict.DONE),
    (299, Verdict.DONE),
    (409, Verdict.ALREADY),
    (429, Verdict.RETRY_AFTER),
    (500, Verdict.HOLD),
    (502, Verdict.HOLD),
    (503, Verdict.HOLD),
    (599, Verdict.HOLD),
    (408, Verdict.HOLD),
    (None, Verdict.HOLD),
    (401, Verdict.KEY_REFUSED),
    (403, Verdict.KEY_REFUSED),
    (400, Verdict.GIVE_UP),
    (404, Verdict.GIVE_UP),
    (405, Verdict.GIVE_UP),
    (410, Verdict.GIVE_UP),
    (413, Verdict.GIVE_UP),
    (422, Verdict.GIVE_UP),
    (451, Verdict.GIVE_UP),
]


@pytest.mark.parametrize(("status", "verdict"), VERDICTS, ids=lambda v: str(v))
def test_judge_gives_the_verdict_of_each_status(status: int | None, verdict: Verdict) -> None:
    assert judge(status) is verdict


def test_only_done_and_already_count_as_delivered() -> None:
    assert {v for v in Verdict if v.delivered} == {Verdict.DONE, Verdict.ALREADY}


def docstring_table() -> list[tuple[str, Verdict]]:
    """(the first column's text, the verdict) of each row of bridge/loops.py's table."""
    lines = (loops.__doc__ or "").splitlines()
    header = next(i for i, line in enumerate(lines) if "Loops answers" in line)
    verdict_at = lines[header].index("verdict")
    delivery_at = lines[header].index("the delivery")
    rows: list[tuple[str, Verdict]] = []
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        answers, verdict = line[:verdict_at].strip(), line[verdict_at:delivery_at].strip()
        if verdict:
            rows.append((answers, Verdict[verdict]))
        elif rows:  # a row's first column goes on over several lines
            rows[-1] = (f"{rows[-1][0]} {answers}".strip(), rows[-1][1])
    return rows


def test_the_docstring_table_names_every_verdict_once() -> None:
    assert sorted(v.name for _, v in docstring_table()) == sorted(v.name for v in Verdict)


def test_the_docstring_table_says_what_judge_does() -> None:
    table = docstring_table()
    named = {int(s) for answers, _ in table for s in re.findall(r"\b[1-5]\d\d\b", answers)}
    checked: set[int | None] = set()
    for answers, verdict in table:
        statuses: set[int | None] = {int(s) for s in re.findall(r"\b[1-5]\d\d\b", answers)}
        for other, digit in re.findall(r"(other )?\b([1-5])xx\b", answers):
            whole_class = set(range(int(digit) * 100, int(digit) * 100 + 100))
            statuses |= whole_class - named if other else whole_class
        if "timeout" in answers or "network" in answers:
            statuses.add(None)
        assert statuses, f"no status found in the row {answers!r}"
        for status in statuses:
            assert judge(status) is verdict, (status, answers)
        assert not statuses & checked, f"a status in two rows: {answers!r}"
        checked |= statuses
    assert set(range(200, 300)) | set(range(400, 600)) | {None} <= checked


# --- LoopsClient, with Loops' answers played by httpx.MockTransport ------------------------


def call(handler: Handler, method: Callable[[LoopsClient], Awaitable[Answer]]) -> Answer:
    async def run() -> Answer:
        client = LoopsClient(BASE_URL, transport=httpx.MockTransport(handler))
        try:
            return await method(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def answering(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def create(client: LoopsClient) -> Awaitable[Answer]:
    return client.create_contact(KEY, CONTACT)


def test_a_success_is_done_and_the_request_is_as_loops_documents_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True})

    answer = call(handler, lambda c: c.send_event(KEY, EVENT, "evt_1"))
    assert (answer.verdict, answer.status_code, answer.message) == (Verdict.DONE, 200, "OK")
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", f"{BASE_URL}/events/send")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["idempotency-key"] == "evt_1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == EVENT
    assert (answer.method, answer.path, json.loads(answer.request_body)) == (
        "POST",
        "/events/send",
        EVENT,
    )
    assert answer.response_body == '{"success":true}'


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("2", 2.0), ("0.5", 0.5), (None, None), ("Wed, 21 Oct 2026 07:28:00 GMT", None)],
)
def test_retry_after_is_read_when_loops_gives_it_in_seconds(
    retry_after: str | None, seconds: float | None
) -> None:
    headers = {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    body = {"success": False, "message": "Rate limit exceeded."}
    answer = call(answering(429, body, headers), create)
    assert answer.verdict is Verdict.RETRY_AFTER
    assert answer.retry_after == seconds
    assert answer.rate_limit == 10


@pytest.mark.parametrize(
    ("header", "limit"), [("25", 25), ("0", None), ("ten", None), (None, None)]
)
def test_the_reported_rate_limit_is_read(header: str | None, limit: int | None) -> None:
    headers = {} if header is None else {"x-ratelimit-limit": header}
    answer = call(answering(200, {"success": True, "id": "c1"}, headers), create)
    assert answer.rate_limit == limit


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"success": False, "message": "Invalid email address"},
            "Loops answered 400: Invalid email address",
        ),
        (  # the deprecated "error" key, alone
            {"success": False, "error": "Some body key or value is longer than allowable"},
            "Loops answered 400: Some body key or value is longer than allowable",
        ),
        ("<html>Bad   request\n</html>", "Loops answered 400: <html>Bad request </html>"),
        ("", "Loops answered 400"),
    ],
    ids=["message", "error", "not-json", "empty"],
)
def test_loops_own_message_is_kept_when_it_gives_up(body: Any, message: str) -> None:
    answer = call(answering(400, body), create)
    assert (answer.verdict, answer.status_code, answer.message) == (
        Verdict.GIVE_UP,
        400,
        message,
    )


def test_a_refused_key_says_so_in_loops_words() -> None:
    body = {"success": False, "message": "Invalid API key", "error": "Invalid API key"}
    answer = call(answering(401, body), lambda c: c.check_key(KEY))
    assert (answer.verdict, answer.status_code) == (Verdict.KEY_REFUSED, 401)
    assert answer.message == "Loops answered 401: Invalid API key"


@pytest.mark.parametrize(
    ("error", "verdict", "says"),
    [
        (httpx.ReadTimeout("read timed out"), Verdict.HOLD, "Loops did not answer: timed out"),
        (httpx.ConnectTimeout("connect timed out"), Verdict.HOLD, "timed out"),
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            Verdict.HOLD,
            "could not reach Loops (ConnectError: [Errno 111] Connection refused)",
        ),
        (httpx.RemoteProtocolError("peer closed connection"), Verdict.HOLD, "could not reach"),
    ],
    ids=["read-timeout", "connect-timeout", "refused", "closed"],
)
def test_no_answer_holds_with_a_readable_reason(
    error: Exception, verdict: Verdict, says: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    answer = call(handler, create)
    assert (answer.verdict, answer.status_code, answer.response_body) == (verdict, None, "")
    assert answer.message.startswith("Loops did not answer: ")
    assert says in answer.message
    assert answer.retry_after is None and answer.rate_limit is None


def test_an_idempotency_key_outside_ascii_gives_up_without_sending() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True})

    answer = call(handler, lambda c: c.send_event(KEY, EVENT, "evt_é中"))
    assert seen == []
    assert (answer.verdict, answer.status_code) == (Verdict.GIVE_UP, None)
    assert "a header of the request holds a character an HTTP header cannot carry" in (
        answer.message
    )
    assert "Replace the key" not in answer.message
    assert "é" not in answer.message and "中" not in answer.message


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**EVENT, "eventProperties": {"at": object()}}, "(TypeError: Object of type object"),
        ({**EVENT, "amount": 10**5000}, "(ValueError: Exceeds the limit"),
    ],
    ids=["not-json", "too-long-a-number"],
)
def test_a_request_that_cannot_be_built_gives_up_with_the_reason(body: dict, says: str) -> None:
    """Whatever the error, the same request would fail the same way on every try."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True})

    answer = call(handler, lambda c: c.send_event(KEY, body, "evt_1"))
    assert seen == []
    assert (answer.verdict, answer.status_code) == (Verdict.GIVE_UP, None)
    assert answer.message.startswith("Loops did not answer: the request could not be made ")
    assert says in answer.message


class _Listener(asyncio.Protocol):
    """A loopback socket that takes connections and keeps whatever bytes arrive."""

    def __init__(self, received: bytearray, connections: list[asyncio.BaseTransport]) -> None:
        self.received = received
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.append(transport)

    def data_received(self, data: bytes) -> None:
        self.received += data


@pytest.mark.parametrize(
    "api_key",
    ["loops_key_acme\n00001234", "loops_key_acme\r\nX-Evil: 1", "loops_key_acmé_00001234"],
    ids=["line-break", "header-injection", "not-ascii"],
)
def test_a_key_http_cannot_carry_is_refused_and_never_repeated(api_key: str) -> None:
    """Through a real transport to a loopback socket: HTTP itself refuses the header (a
    MockTransport would take a line break), and nothing reaches the socket."""
    received = bytearray()
    connections: list[asyncio.BaseTransport] = []

    async def run() -> Answer:
        loop = asyncio.get_running_loop()
        listener = functools.partial(_Listener, received, connections)
        server = await loop.create_server(listener, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = LoopsClient(f"http://127.0.0.1:{port}/api/v1")
        try:
            return await client.create_contact(api_key, CONTACT)
        finally:
            await client.aclose()
            for connection in connections:
                connection.close()
            server.close()
            await server.wait_closed()

    answer = asyncio.run(run())
    assert (answer.verdict, answer.status_code) == (Verdict.KEY_REFUSED, None)
    assert "the Loops API key holds a character an HTTP header cannot carry" in answer.message
    assert answer.message.endswith("Replace the key")
    for part in re.split(r"[\r\n]+", api_key):
        assert part not in answer.message
    assert b"acme" not in received


# --- LoopsClient against the sandbox app, in-process ----------------------------------------


def test_against_the_sandbox_done_already_and_retry_after() -> None:
    now = [1000.0]
    app = sandbox.create_app(rate_limit=3, clock=lambda: now[0])

    async def run() -> list[Answer]:
        client = LoopsClient(BASE_URL, transport=httpx.ASGITransport(app=app))
        try:
            first = await client.create_contact(KEY, CONTACT)
            again = await client.create_contact(KEY, CONTACT)
            event = await client.send_event(KEY, EVENT, "evt_1")
            over = await client.send_event(KEY, EVENT, "evt_2")  # a 4th request within 1 s
            now[0] += 1.0
            later = await client.send_event(KEY, EVENT, "evt_2")
            repeat = await client.send_event(KEY, EVENT, "evt_2")
            return [first, again, event, over, later, repeat]
        finally:
            await client.aclose()

    first, again, event, over, later, repeat = asyncio.run(run())
    assert (first.verdict, first.status_code, first.rate_limit) == (Verdict.DONE, 200, 3)
    assert (again.verdict, again.status_code) == (Verdict.ALREADY, 409)
    assert again.message == "Loops answered 409: Email or userId already exists"
    assert event.verdict is Verdict.DONE
    assert (over.verdict, over.status_code) == (Verdict.RETRY_AFTER, 429)
    assert over.rate_limit == 3
    assert over.retry_after is None  # the sandbox sends none (Loops documents none)
    assert later.verdict is Verdict.DONE
    assert (repeat.verdict, repeat.status_code) == (Verdict.ALREADY, 409)
    assert repeat.message == "Loops answered 409: Idempotency key has been used"
