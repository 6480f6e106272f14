"""Hostile requests to ``POST /webhooks/{id}``: each gets a clear 4xx with a reason the sender
can act on, and leaves nothing stored.

The app runs in a real uvicorn server on loopback, in a thread, configured as
``loops-bridge serve`` configures it, so what the HTTP server itself does with chunked
bodies, lying Content-Lengths and huge headers is part of what is tested. Raw sockets send
what no well-behaved client would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from bridge import db, registry, webhooks
from bridge.app import create_app
from bridge.settings import load
from tests.helpers import fixture_bytes, invoice_endpoint, signed_headers, stripe_signature
from tests.servers import wait_until

SECRET = "whsec_hostileTestSecretKKKKKKKKKKKKK"
INVOICE = fixture_bytes("captured-test-mode/invoice.paid.event.json")
LIMIT = 65_536  # BRIDGE_MAX_BODY_BYTES of the server under test


class Server:
    """The bridge's public app in uvicorn on 127.0.0.1, in a thread of the test process."""

    def __init__(self, tmp: Path) -> None:
        settings = load(
            {
                "BRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'hostile.db'}",
                "BRIDGE_MAX_BODY_BYTES": str(LIMIT),
            }
        )
        self.engine = db.connect(settings.database_url)
        self.endpoint = invoice_endpoint(self.engine, SECRET)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(settings, self.engine, run_worker=False)
        config = uvicorn.Config(app, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]})
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def post(self, body: bytes, headers: dict[str, str], endpoint: str = "") -> httpx.Response:
        return self.client.post(
            f"/webhooks/{endpoint or self.endpoint}", content=body, headers=headers
        )

    def raw(self, request: bytes, wait: float = 10) -> bytes:
        """Send ``request`` on a new connection and read the answer until it is complete,
        the server closes the connection, or ``wait`` seconds pass."""
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.settimeout(wait)
            sock.sendall(request)
            answer = b""
            try:
                while chunk := sock.recv(65_536):
                    answer += chunk
                    if _complete(answer):
                        break
            except TimeoutError:
                pass
            return answer

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()

    def stop(self) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.engine.dispose()


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    return bool(separator and found and len(body) >= int(found.group(1)))


def request_bytes(
    path: str, body: bytes, headers: dict[str, str], method: str = "POST", length: bool = True
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bridge", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def json_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


@pytest.fixture
def nothing_stored(server: Server) -> Iterator[None]:
    before = server.count("deliveries")
    yield
    assert server.count("deliveries") == before


def with_id(event_id: str, body: bytes = INVOICE) -> bytes:
    """The fixture with another event id, byte for byte otherwise."""
    return body.replace(b'"evt_1PBXo9RxqlZt79sDnw7dd5cs"', json.dumps(event_id).encode(), 1)


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["status"] == "rejected"
    for word in words:
        assert word in answer["reason"], answer["reason"]
    return answer["reason"]


# --- the body: size, length, encoding -------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(server):
    headers = signed_headers(b"", SECRET) | {"Content-Length": str(LIMIT + 1)}
    answer = server.raw(request_bytes(f"/webhooks/{server.endpoint}", b"", headers, length=False))
    assert status_of(answer) == 413
    assert "BRIDGE_MAX_BODY_BYTES (65536)" in json_of(answer)["reason"]


@pytest.mark.usefixtures("nothing_stored")
def test_a_chunked_body_over_the_limit_is_refused_while_it_is_still_arriving(server):
    """No Content-Length: the answer comes once the limit is passed, while the sender has
    not finished (the final chunk is never sent), so the body is never whole in memory."""
    headers = signed_headers(b"", SECRET) | {"Transfer-Encoding": "chunked"}
    head = request_bytes(f"/webhooks/{server.endpoint}", b"", headers, length=False)
    piece = b"x" * 16_384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(LIMIT // len(piece) + 1))
    answer = server.raw(head + chunks, wait=5)
    assert status_of(answer) == 413
    assert "BRIDGE_MAX_BODY_BYTES" in json_of(answer)["reason"]


def test_a_chunked_body_under_the_limit_is_accepted(server):
    body = with_id("evt_hostile_chunked")
    headers = signed_headers(body, SECRET) | {"Transfer-Encoding": "chunked"}
    half = len(body) // 2
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    before = server.count("deliveries")
    answer = server.raw(
        request_bytes(f"/webhooks/{server.endpoint}", chunked + b"0\r\n\r\n", headers, length=False)
    )
    assert status_of(answer) == 200 and json_of(answer)["status"] == "queued"
    assert server.count("deliveries") == before + 1


@pytest.mark.usefixtures("nothing_stored")
def test_a_json_body_over_the_limit_is_refused(server):
    body = json.dumps({"id": "evt_huge", "padding": "x" * LIMIT}).encode()
    refused(server.post(body, signed_headers(body, SECRET)), 413, "BRIDGE_MAX_BODY_BYTES")


@pytest.mark.usefixtures("nothing_stored")
def test_a_content_length_shorter_than_the_body_cuts_the_body_and_breaks_the_signature(server):
    body = with_id("evt_hostile_short_length")
    headers = signed_headers(body, SECRET) | {"Content-Length": str(len(body) - 100)}
    answer = server.raw(request_bytes(f"/webhooks/{server.endpoint}", body, headers, length=False))
    assert status_of(answer) == 400
    assert "No signature in the Stripe-Signature header matches" in json_of(answer)["reason"]


@pytest.mark.usefixtures("nothing_stored")
def test_a_content_length_longer_than_the_body_times_out_with_408(server, monkeypatch):
    monkeypatch.setattr(webhooks, "BODY_SECONDS", 0.5)
    body = with_id("evt_hostile_long_length")
    headers = signed_headers(body, SECRET) | {"Content-Length": str(len(body) + 100)}
    started = time.monotonic()
    answer = server.raw(request_bytes(f"/webhooks/{server.endpoint}", body, headers, length=False))
    assert status_of(answer) == 408
    assert "did not arrive within 0.5 seconds" in json_of(answer)["reason"]
    assert time.monotonic() - started < 5


@pytest.mark.usefixtures("nothing_stored")
def test_a_sender_that_stalls_before_the_body_times_out_with_408(server, monkeypatch):
    monkeypatch.setattr(webhooks, "BODY_SECONDS", 0.5)
    headers = signed_headers(INVOICE, SECRET) | {"Content-Length": str(len(INVOICE))}
    request = request_bytes(f"/webhooks/{server.endpoint}", b"", headers, length=False)
    answer = server.raw(request)  # and the body never comes
    assert status_of(answer) == 408


@pytest.mark.usefixtures("nothing_stored")
def test_a_post_without_content_length_or_chunks_has_an_empty_body(server):
    """HTTP/1.1 reads no body then; the bytes after the head are taken for a next request."""
    answer = server.raw(
        request_bytes(
            f"/webhooks/{server.endpoint}", INVOICE, signed_headers(INVOICE, SECRET), length=False
        )
    )
    assert status_of(answer) == 400
    assert "No signature" in json_of(answer)["reason"]


@pytest.mark.usefixtures("nothing_stored")
def test_a_content_length_that_is_not_a_number_is_refused_by_the_server(server):
    headers = signed_headers(INVOICE, SECRET) | {"Content-Length": "7k"}
    answer = server.raw(
        request_bytes(f"/webhooks/{server.endpoint}", INVOICE, headers, length=False)
    )
    assert status_of(answer) == 400  # uvicorn's "Invalid HTTP request received.", not ours


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity"])
def test_a_compressed_body_is_refused_with_415(server, encoding):
    body = gzip.compress(with_id("evt_hostile_gzip"))
    headers = signed_headers(body, SECRET) | {"Content-Encoding": encoding}  # even signed
    refused(server.post(body, headers), 415, "Content-Encoding", "uncompressed")


def test_content_encoding_identity_is_no_encoding(server):
    body = with_id("evt_hostile_identity")
    headers = signed_headers(body, SECRET) | {"Content-Encoding": "identity"}
    assert server.post(body, headers).json()["status"] == "queued"


# --- the body: what it says ---------------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_a_body_that_is_not_utf8_is_refused(server):
    body = INVOICE.replace(b"test12", b"t\xe9st12")  # Latin-1 é
    refused(server.post(body, signed_headers(body, SECRET)), 400, "not UTF-8")


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("depth", [300, 1024, 5000])
def test_deeply_nested_json_is_refused(server, depth):
    nested = b"[" * depth + b"]" * depth
    body = with_id("evt_hostile_deep").replace(b'"metadata": {}', b'"metadata": ' + nested, 1)
    assert body != with_id("evt_hostile_deep")
    refused(server.post(body, signed_headers(body, SECRET)), 400, "nested more than 254 levels")


@pytest.mark.usefixtures("nothing_stored")
def test_a_json_array_is_refused(server):
    body = b"[" + INVOICE + b"]"
    refused(server.post(body, signed_headers(body, SECRET)), 400, "not an object")


@pytest.mark.usefixtures("nothing_stored")
def test_huge_json_under_the_limit_that_is_no_event_is_refused(server):
    body = json.dumps({str(i): i for i in range(4000)}).encode()
    assert len(body) < LIMIT
    refused(server.post(body, signed_headers(body, SECRET)), 400, "no valid id, type, created")


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize(
    ("where", "old", "new"),
    [
        ("event id", b'"id": "evt_1PBX', b'"id": "evt_other", "id": "evt_1PBX'),
        ("event id, escaped", b'"id": "evt_1PBX', b'"id": "evt_other", "\\u0069d": "evt_1PBX'),
        ("type", b'"type": "invoice.paid"', b'"type": "customer.created", "type": "invoice.paid"'),
        ("created", b'"created": 1714549347', b'"created": 1, "created": 1714549347'),
        ("data", b'"data": {', b'"data": {"object": {}}, "data": {'),
        (
            "email",
            b'"customer_email": "test12@email.com"',
            b'"customer_email": "victim@example.com", "customer_email": "test12@email.com"',
        ),
        (
            "email, and a colon spelled \\u003a",
            b'"customer_email": "test12@email.com"',
            b'"customer_email": "a@b.c", "customer_email": "test12@email.com", "n": "\\u003a"',
        ),
        ("metadata", b'"metadata": {}', b'"metadata": {"a": "1", "a": "2"}'),
    ],
)
def test_a_repeated_key_is_refused(server, where, old, new):
    body = INVOICE.replace(old, new, 1)
    assert new in body, where
    refused(server.post(body, signed_headers(body, SECRET)), 400, "same key twice")


# --- the headers ----------------------------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("size", [16_384, 65_536, 1_000_000])
def test_header_values_of_many_kilobytes_are_refused_with_431(server, size):
    body = with_id("evt_hostile_big_header")
    headers = signed_headers(body, SECRET) | {"X-Padding": "a" * size}
    answer = server.raw(request_bytes(f"/webhooks/{server.endpoint}", body, headers))
    assert status_of(answer) == 431
    assert "larger than 16384 bytes" in json_of(answer)["reason"]


@pytest.mark.usefixtures("nothing_stored")
def test_thousands_of_small_headers_are_refused_with_431(server):
    body = with_id("evt_hostile_many_headers")
    headers = signed_headers(body, SECRET) | {f"X-{i}": "a" for i in range(3000)}
    answer = server.raw(request_bytes(f"/webhooks/{server.endpoint}", body, headers))
    assert status_of(answer) == 431


@pytest.mark.usefixtures("nothing_stored")
def test_a_signature_header_of_several_kilobytes_is_refused(server):
    body = with_id("evt_hostile_long_signature")
    signature = stripe_signature(body, SECRET) + ",v0=" + "0" * 6000
    headers = signed_headers(body, SECRET) | {"Stripe-Signature": signature}
    refused(server.post(body, headers), 400, "longer than 2048 characters")


@pytest.mark.usefixtures("nothing_stored")
def test_more_than_ten_v1_signatures_are_refused_even_with_a_valid_one(server):
    body = with_id("evt_hostile_many_v1")
    valid = stripe_signature(body, SECRET)
    signature = valid + "".join(f",v1={i:064x}" for i in range(10))
    refused(server.post(body, {"Stripe-Signature": signature}), 400, "more than 10 v1")


@pytest.mark.usefixtures("nothing_stored")
def test_a_signature_header_that_is_not_ascii_is_refused_not_a_500(server):
    """hmac.compare_digest raises TypeError for a non-ASCII str: that must not be a 503."""
    body = with_id("evt_hostile_latin1")
    t = int(time.time())
    headers = {"Stripe-Signature": f"t={t},v1={'é' * 64}"}
    answer = server.raw(request_bytes(f"/webhooks/{server.endpoint}", body, headers))
    assert status_of(answer) == 400
    assert "malformed" in json_of(answer)["reason"]


# --- time: the future, the past, replays ------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("ahead", [301, 3600, 10**9])
def test_a_signature_from_the_future_is_refused(server, ahead):
    body = with_id("evt_hostile_future")
    headers = signed_headers(body, SECRET, timestamp=int(time.time()) + ahead)
    refused(server.post(body, headers), 400, "more than 300 seconds in the future")


@pytest.mark.usefixtures("nothing_stored")
def test_a_replay_of_an_old_valid_request_is_refused(server):
    body = with_id("evt_hostile_old")
    headers = signed_headers(body, SECRET, timestamp=int(time.time()) - 3600)
    refused(server.post(body, headers), 400, "more than 300 seconds old", "replay")


def test_a_replay_within_the_window_is_a_duplicate_and_stores_nothing_new(server):
    body = with_id("evt_hostile_replayed")
    headers = signed_headers(body, SECRET, timestamp=int(time.time()) - 60)
    first = server.post(body, headers).json()
    before = server.count("deliveries")
    again = [server.post(body, headers).json() for _ in range(3)]
    assert first["status"] == "queued"
    assert [a["status"] for a in again] == ["duplicate"] * 3
    assert {a["id"] for a in again} == {first["id"]}
    assert server.count("deliveries") == before


# --- endpoint ids -----------------------------------------------------------------------------


def test_endpoint_ids_carry_128_random_bits_in_the_shape_the_receiver_looks_up():
    ids = {registry.new_endpoint_id() for _ in range(2000)}
    assert len(ids) == 2000
    for endpoint_id in ids:
        assert webhooks._ENDPOINT_ID.fullmatch(endpoint_id), endpoint_id
        assert endpoint_id.startswith("ep_") and len(endpoint_id) == 3 + 22  # 16 bytes


MALFORMED = [
    "",
    "ep_" + "A" * 23,  # one too long
    "ep_" + "A" * 21,  # one too short
    "ep_" + "A" * 500,
    "ep_AAAAAAAAAAAAAAAAAAAA!!",
    "ep_AAAAAAAAAAAAAAAAAAAA%00",
    "ep_AAAAAAAAAAAAAAAAAAAA%C3%A9",
    "ep_AAAAAAAAAAAAAAAAAAAAAA/",
    "ep_AAAAAAAAAAAAAAAAAAAAAA/extra",
    "a/b/c",
    "..%2F..%2Fadmin",
    "%20",
]
METHODS = ["POST", "GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"", answer)


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("method", METHODS)
def test_an_unknown_id_answers_byte_for_byte_like_a_malformed_one(server, method):
    body = with_id("evt_hostile_probe")
    headers = signed_headers(body, SECRET)
    unknown = "ep_" + "B" * 22
    assert webhooks._ENDPOINT_ID.fullmatch(unknown)

    def answer(endpoint_id: str) -> bytes:
        request = request_bytes(f"/webhooks/{endpoint_id}", body, headers, method=method)
        return without_date(server.raw(request))

    expected = answer(unknown)
    assert status_of(expected) == (404 if method == "POST" else 405)
    for malformed in MALFORMED:
        assert answer(malformed) == expected, malformed
    if method != "POST":  # for the other methods, a known id answers the same too
        assert answer(server.endpoint) == expected


def test_in_process_the_answers_are_identical_too(tmp_path):
    """Without a server adding its own headers: status, headers and body, exactly."""
    settings = load({"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'probe.db'}"})
    app = create_app(settings, db.connect(settings.database_url), run_worker=False)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            for method in METHODS:
                answers = set()
                for endpoint_id in ["ep_" + "C" * 22, "C" * 22, *MALFORMED]:
                    response = await client.request(
                        method, f"/webhooks/{endpoint_id}", content=b"{}"
                    )
                    answers.add(
                        (response.status_code, tuple(response.headers.raw), response.content)
                    )
                assert len(answers) == 1, (method, answers)
        await app.state.inbox.drain()

    asyncio.run(run())


# --- a flood of refused requests ----------------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_a_flood_of_refused_requests_is_recorded_a_few_times_a_second(server, caplog):
    """Each refusal is logged and kept for the admin; in a flood, only a few a second are,
    and the log line of the next one tells how many were not."""
    endpoint = registry.create_endpoint(
        server.engine,
        name="flooded",
        account="acme",
        provider="stripe",
        event_types=["invoice.paid"],
        signing_secret=SECRET,
    )
    body = with_id("evt_hostile_flood")
    headers = {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"}
    caplog.set_level(logging.INFO, logger="bridge.webhooks")
    started = time.monotonic()
    for _ in range(60):
        refused(server.post(body, headers, endpoint), 400, "No signature")
    seconds = time.monotonic() - started
    time.sleep(1.1)
    refused(server.post(body, headers, endpoint), 400, "No signature")  # the next second

    def lines() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(f"endpoint {endpoint} refused")
        ]

    def recorded() -> int:
        with server.engine.connect() as conn:
            query = text("SELECT count(*) FROM rejections WHERE endpoint_id = :e")
            return conn.execute(query, {"e": endpoint}).scalar_one()

    def told() -> int:
        return sum(int(m.group(1)) for line in lines() if (m := re.search(r"\((\d+) more", line)))

    # Recorded after the answer: wait for the last one, which tells of those not recorded.
    wait_until(lambda: told() + len(lines()) == 61, what="the refusals to be logged")
    wait_until(lambda: recorded() == len(lines()), what="the refusals to be recorded")
    most = webhooks.REFUSALS_RECORDED_PER_SECOND * (int(seconds) + 3)
    assert 2 <= recorded() <= most, (recorded(), seconds)
