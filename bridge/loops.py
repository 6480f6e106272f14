"""The Loops API client: every call the bridge makes to Loops, and what each answer means.

https://loops.so/docs/api-reference — the contract is summarised in
``../shared/reference/loops-api.md``. One httpx client serves every Loops account; the API
key travels with each call. :func:`judge` is the one place that turns an answer into a
:class:`Verdict`, and the verdict is all the rest of the bridge looks at; :func:`key_refusal`
is the check of a key before it is saved. What each verdict does (the delivery:
bridge.delivery; the account: bridge.accounts)::

    Loops answers               verdict      the delivery                  the account
    2xx                         DONE         delivered                     healthy
    409                         ALREADY      delivered (contact exists,    healthy
                                             or the event was sent)
    429                         RETRY_AFTER  queued, after Loops' wait     rate-limited for
                                             (1 s if it does not say)      that wait
    5xx, 408, timeout, network  HOLD         queued, backoff               outage: held,
                                                                           probed 1 s .. 20 s
    401, 403, or a key HTTP     KEY_REFUSED  queued, paused with the       key refused: held,
    cannot carry                             account                       probed every 30 s
    400, 404, other 4xx, or a   GIVE_UP      failed, with Loops' message   healthy
    request that cannot be                   or why it could not be made
    built, whatever the error
    (an Idempotency-Key
    outside ASCII)
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

__all__ = ["Answer", "LoopsClient", "Verdict", "judge", "key_refusal"]


class Verdict(enum.Enum):
    DONE = "done"
    ALREADY = "already"
    RETRY_AFTER = "retry_after"
    HOLD = "hold"
    KEY_REFUSED = "key_refused"
    GIVE_UP = "give_up"

    @property
    def delivered(self) -> bool:
        """Loops has what the call asked for."""
        return self in (Verdict.DONE, Verdict.ALREADY)


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status_code: int | None  # None: Loops never answered (timeout, connection refused)
    message: str  # what happened, for a person: Loops' own message where it gave one
    method: str
    path: str
    request_body: str
    response_body: str
    started_at: float
    duration_ms: float
    retry_after: float | None = None  # seconds, when Loops said how long to wait
    rate_limit: int | None = None  # x-ratelimit-limit: the account's requests per second


def _loops_message(status: int, text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("reason")
            if isinstance(value, str) and value:
                return f"Loops answered {status}: {value}"
    snippet = " ".join(text.split())[:200]
    return f"Loops answered {status}" + (f": {snippet}" if snippet else "")


def _unsendable(api_key: str, exc: Exception) -> tuple[Verdict, str]:
    """The verdict on a request that could not be built or sent as it is, and why, for a
    person. A header that holds a character HTTP cannot carry is named, never quoted (the
    library's message quotes it). A key stored before keys were checked pauses the account
    until it is replaced; anything else (an Idempotency-Key made from an event id outside
    ASCII, a body that is not JSON) cannot be sent however often it is tried."""
    kind = type(exc).__name__
    if isinstance(exc, UnicodeEncodeError | httpx.LocalProtocolError):
        if not api_key.isascii() or not api_key.isprintable():
            what, verdict, fix = "the Loops API key", Verdict.KEY_REFUSED, ". Replace the key"
        else:
            what, verdict, fix = "a header of the request", Verdict.GIVE_UP, ""
        return verdict, (
            f"the request could not be sent ({kind}): {what} holds a character an HTTP header "
            f"cannot carry, such as a line break or a letter outside ASCII{fix}"
        )
    said = str(exc).strip().partition("\n")[0][:200]
    return Verdict.GIVE_UP, f"the request could not be made ({kind}{': ' if said else ''}{said})"


def judge(status: int | None) -> Verdict:
    """The verdict on an HTTP status; None is no answer at all (timeout, network)."""
    if status is None or status == 408 or status >= 500:
        return Verdict.HOLD
    if 200 <= status < 300:
        return Verdict.DONE
    if status == 409:
        return Verdict.ALREADY
    if status == 429:
        return Verdict.RETRY_AFTER
    if status in (401, 403):
        return Verdict.KEY_REFUSED
    return Verdict.GIVE_UP


class LoopsClient:
    """``transport``: where requests go; by default the network. Tests pass
    ``httpx.ASGITransport(app=sandbox)`` to call the Loops sandbox in-process."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=5.0),
            headers={"User-Agent": "loops-bridge/0.1", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        api_key: str,
        method: str,
        path: str,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        request_body, started, clock = "", time.time(), time.perf_counter()
        try:
            if body is not None:
                request_body = json.dumps(body, separators=(",", ":"))
            request = self._http.build_request(
                method,
                path.lstrip("/"),
                content=request_body or None,
                headers={"Authorization": f"Bearer {api_key}", **(headers or {})},
            )
        except Exception as exc:  # whatever it is, no later try would build it either
            verdict, reason = _unsendable(api_key, exc)
            return self._no_answer(method, path, request_body, started, clock, reason, verdict)
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException:
            return self._no_answer(method, path, request_body, started, clock, "timed out")
        except httpx.LocalProtocolError as exc:  # h11 refuses a header as it writes it
            verdict, reason = _unsendable(api_key, exc)
            return self._no_answer(method, path, request_body, started, clock, reason, verdict)
        except httpx.TransportError as exc:
            reason = f"could not reach Loops ({type(exc).__name__}: {exc})"
            return self._no_answer(method, path, request_body, started, clock, reason)
        status, text = response.status_code, response.text
        retry_after = response.headers.get("retry-after", "")
        rate_limit = response.headers.get("x-ratelimit-limit", "")
        return Answer(
            verdict=judge(status),
            status_code=status,
            message="OK" if 200 <= status < 300 else _loops_message(status, text),
            method=method,
            path=path,
            request_body=request_body,
            response_body=text[:10_000],
            started_at=started,
            duration_ms=(time.perf_counter() - clock) * 1000,
            retry_after=float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None,
            rate_limit=int(rate_limit) if rate_limit.isdigit() and int(rate_limit) > 0 else None,
        )

    @staticmethod
    def _no_answer(
        method: str,
        path: str,
        request_body: str,
        started: float,
        clock: float,
        reason: str,
        verdict: Verdict = Verdict.HOLD,
    ) -> Answer:
        return Answer(
            verdict=verdict,
            status_code=None,
            message=f"Loops did not answer: {reason}",
            method=method,
            path=path,
            request_body=request_body,
            response_body="",
            started_at=started,
            duration_ms=(time.perf_counter() - clock) * 1000,
        )

    async def check_key(self, api_key: str) -> Answer:
        return await self.call(api_key, "GET", "/api-key")

    async def create_contact(self, api_key: str, contact: dict) -> Answer:
        return await self.call(api_key, "POST", "/contacts/create", contact)

    async def update_contact(self, api_key: str, contact: dict) -> Answer:
        return await self.call(api_key, "PUT", "/contacts/update", contact)

    async def find_contact(self, api_key: str, identity: dict[str, str]) -> Answer:
        """``identity``: ``{"email": ...}`` or ``{"userId": ...}``; the answer is a JSON
        list, empty when Loops has no such contact."""
        return await self.call(api_key, "GET", "/contacts/find?" + urlencode(identity))

    async def delete_contact(self, api_key: str, identity: dict[str, str]) -> Answer:
        """404 when Loops has no such contact."""
        return await self.call(api_key, "POST", "/contacts/delete", identity)

    async def send_event(self, api_key: str, event: dict, idempotency_key: str) -> Answer:
        headers = {"Idempotency-Key": idempotency_key}
        return await self.call(api_key, "POST", "/events/send", event, headers)


async def key_refusal(
    api_key: str,
    base_url: str,
    transport: httpx.AsyncBaseTransport | None = None,
    unchecked: str | None = "save it without checking",
) -> str | None:
    """Why ``api_key`` is not to be saved, in words for the person adding it, after asking
    Loops (``GET /api-key``); None when Loops took it. The admin's forms and the CLI refuse a
    key on it: one Loops refuses (401, 403), and one that could not be checked (no answer,
    5xx, 429, anything else), which may still be saved without checking, for an offline
    set-up: ``unchecked`` says how, where the person is (the form's box, the CLI's flag);
    None for a key already saved.
    Nothing it says repeats the key."""
    client = LoopsClient(base_url, transport=transport)
    try:
        answer = await client.check_key(api_key)
    finally:
        await client.aclose()
    if answer.verdict is Verdict.DONE:
        return None
    if answer.verdict is Verdict.KEY_REFUSED:  # 401, 403, or no header could carry it
        said = "Loops refused this API key" if answer.status_code else "This key cannot be sent"
        return f"{said} ({answer.message}). Copy it again from Loops: Settings → API."
    instead = f", or {unchecked}" if unchecked else ""
    return (
        f"The key could not be checked with Loops ({answer.message}). Try again once Loops "
        f"answers{instead}."
    )
