"""Generated requests against ``POST /webhooks/{id}`` (hypothesis), and what must hold:

- never a 5xx, whatever the path, method, headers and body;
- nothing is stored unless the request is validly signed (checked here with the standard
  library, independently of the stripe package the bridge verifies with);
- a validly signed event sent N times, in any order and concurrently, each copy signed
  afresh as Stripe signs its retries, is stored exactly once: one "queued" (or "ignored"),
  then "duplicate" with the same delivery id;
- an unknown endpoint id and a malformed one get the very same answer, whatever the method.

The app runs in-process (httpx's ASGI transport) on one event loop kept for the whole module,
so thousands of cases take seconds. Profiles: the default one (``make test``) runs a few
thousand cases; ``HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_webhooks_fuzz.py``
runs a hundred times as many.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from bridge import db, registry
from bridge.app import create_app
from bridge.settings import load
from tests.helpers import fixture_bytes, signed_headers, stripe_signature

# Cases per test. The default profile: 3 x 250, plus 100 signed events sent 1 to 6 times each,
# 850 cases in about 8 s; HYPOTHESIS_PROFILE=long for the deep run. Only this module loads a
# profile, so it sets the default one.
settings.register_profile(
    "default",
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=80_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
EXAMPLES = settings().max_examples
REPEATS = max(100, EXAMPLES // 5)  # each case stores an event: fewer of them

SECRET = "whsec_fuzzTestSecretZZZZZZZZZZZZZZZZZ"
OTHER_SECRET = "whsec_fuzzOtherSecretYYYYYYYYYYYYYYYY"
LIMIT = 32_768
FIXTURES = [
    fixture_bytes("captured-test-mode/invoice.paid.event.json"),
    fixture_bytes("constructed/customer.created.event.json"),
    fixture_bytes("constructed/customer.updated.event.json"),
    fixture_bytes("stripe-java/customer_created.event.json"),
]
UNKNOWN = "ep_" + "Q" * 22


class Bridge:
    """The app in-process, on an event loop of its own that lives as long as the module."""

    def __init__(self, tmp: Path) -> None:
        settings_ = load(
            {
                "BRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'fuzz.db'}",
                "BRIDGE_MAX_BODY_BYTES": str(LIMIT),
            }
        )
        self.engine = db.connect(settings_.database_url)
        registry.add_account(self.engine, "acme", "key")
        self.endpoint = registry.create_endpoint(
            self.engine,
            name="fuzzed",
            account="acme",
            provider="stripe",
            event_types=["invoice.paid", "customer.created", "customer.updated"],
            signing_secret=SECRET,
        )
        self.app = create_app(settings_, self.engine, run_worker=False)
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://bridge")

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    def deliveries(self, event_id: str | None = None) -> int:
        query = "SELECT count(*) FROM deliveries"
        with self.engine.connect() as conn:
            if event_id is None:
                return conn.execute(text(query)).scalar_one()
            query += " WHERE event_id = :e"
            return conn.execute(text(query), {"e": event_id}).scalar_one()

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.app.state.inbox.drain())
        assert not asyncio.all_tasks(self.loop)  # the inbox keeps no task while idle
        self.run(self.loop.shutdown_default_executor())
        self.loop.close()
        self.engine.dispose()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    running = Bridge(tmp_path_factory.mktemp("fuzz"))
    yield running
    running.close()


def validly_signed(body: bytes, header: str | None) -> bool:
    """Stripe's scheme, read leniently: any ``t=`` and any ``v1=`` that is the HMAC of
    ``f"{t}." + body`` with the endpoint's secret, within 300 s of now. Leniency here only
    widens what the test allows to be stored."""
    if not header:
        return False
    items = [item.partition("=") for item in header.split(",")]
    for key, _, t in items:
        if key.strip() != "t":
            continue
        try:
            signed_at = int(t)
        except ValueError:
            continue
        if abs(signed_at - time.time()) > 310 or abs(signed_at) > 10**12:
            continue
        expected = hmac.new(SECRET.encode(), f"{signed_at}.".encode() + body, hashlib.sha256)
        if any(v.strip() == expected.hexdigest() for k, _, v in items if k.strip() == "v1"):
            return True
    return False


# --- strategies ----------------------------------------------------------------------------

now = int(time.time())
timestamps = st.one_of(
    st.integers(now - 400, now + 400),
    st.integers(-(2**70), 2**70),
    st.sampled_from(["", "x", "1e9", "+1", " 1", "1_000", "٣", "9" * 5000]),
)
hexes = st.one_of(st.text("0123456789abcdef", min_size=0, max_size=70), st.text(max_size=70))


@st.composite
def signature_headers(draw: st.DrawFn, body: bytes) -> str | None:
    kind = draw(
        st.sampled_from(
            ["absent", "junk", "shaped", "shaped", "shaped", "other body", "other secret"]
        )
    )
    if kind == "absent":
        return None
    if kind == "junk":
        return draw(st.text(max_size=300))
    if kind == "shaped":
        t = draw(timestamps)
        parts = [f"t={t}"] + [
            f"{draw(st.sampled_from(['v1', 'v1', 'v1', 'v0', 'V1', ' v1', 't']))}={h}"
            for h in draw(st.lists(hexes, max_size=14))
        ]
        draw(st.randoms()).shuffle(parts)
        return ",".join(parts)
    # A real signature, but not for these bytes or not with this endpoint's secret.
    t = draw(st.integers(now - 200, now + 200))
    if kind == "other body":
        return stripe_signature(body + b" ", SECRET, t)
    return stripe_signature(body, OTHER_SECRET, t)


def mutated(body: bytes, rnd: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rnd.randint(1, 4)):
        how = rnd.randrange(4)
        at = rnd.randrange(len(data) + 1)
        if how == 0 and data:
            data[min(at, len(data) - 1)] = rnd.randrange(256)
        elif how == 1:
            data[at:at] = rnd.choice(
                [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\xff", b"\x00"]
            )
        elif how == 2:
            del data[at : at + rnd.randint(1, 50)]
        else:
            data[at:at] = data[rnd.randrange(len(data) + 1) :][: rnd.randint(1, 80)]
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["fixture", "mutated", "bytes", "json", "deep", "big"]))
    fixture = draw(st.sampled_from(FIXTURES))
    if kind == "fixture":
        return fixture
    if kind == "mutated":
        return mutated(fixture, draw(st.randoms()))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(200, 3000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    return b"x" * draw(st.integers(LIMIT - 10, LIMIT + 10))


header_names = st.sampled_from(
    [
        "content-encoding",
        "content-length",
        "content-type",
        "transfer-encoding",
        "x-junk",
        "stripe-signature",
    ]
) | st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
header_values = st.binary(max_size=100) | st.sampled_from(
    [b"gzip", b"identity", b"0", b"-1", b" 12", b"1e3", b"99999999999999999999", b"9" * 5000]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, list[tuple[bytes, bytes]]]:
    # Mostly POSTs to the real endpoint: that is where the work, and the risk, is.
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    endpoint = draw(st.sampled_from(["KNOWN"] * 6 + [UNKNOWN, "", "a/b", "ep_%2F..%2F", "TEXT"]))
    if endpoint == "TEXT":
        endpoint = draw(st.text("ABCDEFabcdef0123456789_-/.%!", max_size=40))
    body = draw(bodies())
    headers = [
        (n.encode(), v)
        for n, v in draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    ]
    signature = draw(signature_headers(body))
    if signature is not None:
        headers.append((b"stripe-signature", signature.encode("utf-8", "surrogatepass")))
    if draw(st.booleans()) and len(headers) < 6:
        headers.append((b"x-padding", b"a" * draw(st.integers(0, 20_000))))
    return method, endpoint, body, headers


def post(bridge: Bridge, method: str, endpoint: str, body: bytes, headers: list) -> httpx.Response:
    path = "/webhooks/" + (bridge.endpoint if endpoint == "KNOWN" else endpoint)
    request = bridge.client.build_request(method, path, content=body)
    # Past httpx's own header handling: exactly these bytes reach the app.
    request.headers = httpx.Headers(
        [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"] + headers
    )
    return bridge.run(bridge.client.send(request))


# --- properties ----------------------------------------------------------------------------


@given(requests())
def test_never_a_5xx_and_nothing_stored_without_a_valid_signature(bridge, request_):
    method, endpoint, body, headers = request_
    before = bridge.deliveries()
    response = post(bridge, method, endpoint, body, headers)
    assert response.status_code < 500, response.text
    signed = any(
        validly_signed(body, value.decode("latin-1"))
        for name, value in headers
        if name == b"stripe-signature"
    )
    if not signed:
        assert bridge.deliveries() == before, (response.status_code, response.text)
        assert response.status_code != 200


@given(st.sampled_from(FIXTURES), st.randoms(), st.data())
def test_signed_but_mangled_bodies_never_5xx_and_are_stored_only_when_accepted(
    bridge, fixture, rnd, data
):
    """With a valid signature, what parse() sees: only the secret's holder can send this."""
    body = data.draw(st.one_of(st.just(mutated(fixture, rnd)), bodies()))
    before = bridge.deliveries()
    response = post(
        bridge,
        "POST",
        "KNOWN",
        body,
        [(k.lower().encode(), v.encode()) for k, v in signed_headers(body, SECRET).items()],
    )
    assert response.status_code < 500, response.text
    stored = bridge.deliveries() - before
    answer = response.json()
    # A delivery id in a 200 means it was stored; a type the bridge does not handle is
    # answered "ignored" without one: counted, not stored.
    if response.status_code == 200 and answer["status"] in ("queued", "ignored"):
        assert stored == (1 if "id" in answer else 0), answer
        assert "id" in answer or "does not handle" in answer["reason"]
    else:
        assert stored == 0, answer


@given(
    st.sampled_from(["ep_" + "Z" * 22, "ep_" + "z" * 22, "", "x/y", "%00", "ep_" + "Z" * 300]),
    st.sampled_from(["POST", "GET", "PUT", "HEAD"]),
    bodies(),
)
def test_an_unknown_id_answers_like_a_malformed_one(bridge, endpoint, method, body):
    reference = post(bridge, method, UNKNOWN, b"{}", [])
    response = post(bridge, method, endpoint, body, [])
    assert (response.status_code, response.headers.raw, response.content) == (
        reference.status_code,
        reference.headers.raw,
        reference.content,
    )


@settings(max_examples=REPEATS)
@given(
    st.sampled_from(FIXTURES[:3]),
    st.lists(st.integers(-290, 290), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_a_signed_event_is_stored_exactly_once_however_it_is_retried(
    bridge, fixture, offsets, concurrently, rolled
):
    event = json.loads(fixture)
    old_id = event["id"]
    event_id = f"evt_fuzz_{uuid.uuid4().hex}"  # new each run, shrinking included
    body = fixture.replace(json.dumps(old_id).encode(), json.dumps(event_id).encode(), 1)
    now_ = int(time.time())

    def headers(offset: int) -> list[tuple[bytes, bytes]]:
        signature = stripe_signature(body, SECRET, now_ + offset)
        if rolled:  # while a secret is being rolled, Stripe signs with both
            signature += "," + stripe_signature(body, OTHER_SECRET, now_ + offset).split(",")[1]
        return [(b"stripe-signature", signature.encode()), (b"content-type", b"application/json")]

    async def send_all() -> list[httpx.Response]:
        sends = [
            bridge.client.post(f"/webhooks/{bridge.endpoint}", content=body, headers=headers(o))
            for o in offsets
        ]
        if concurrently:
            return list(await asyncio.gather(*sends))
        return [await s for s in sends]

    answers = [r.json() for r in bridge.run(send_all())]
    statuses = sorted(a["status"] for a in answers)
    first = [a for a in answers if a["status"] != "duplicate"]
    assert len(first) == 1 and first[0]["status"] in ("queued", "ignored"), answers
    if not concurrently:
        assert answers[0] == first[0]
    assert statuses.count("duplicate") == len(offsets) - 1
    assert {a["id"] for a in answers} == {first[0]["id"]}
    assert bridge.deliveries(event_id) == 1
