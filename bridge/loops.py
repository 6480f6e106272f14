"""The Loops API client: every call the bridge makes to Loops, and what each answer means.

https://loops.so/docs/api-reference — the contract is summarised in
``../shared/reference/loops-api.md``. One shared httpx client serves every Loops account; the
API key travels with each call. :func:`judge` is the one place that turns an HTTP answer into
an :class:`Outcome`::

    2xx                          DONE
    409                          ALREADY   contact exists / idempotency key already used
    429, 5xx, timeout, network   RETRY     transient: try again later
    400, 401, 403, 404, other    GIVE_UP   Loops refused; its message is kept
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass

import httpx

__all__ = ["Answer", "LoopsClient", "Outcome", "judge"]


class Outcome(enum.Enum):
    DONE = "done"
    ALREADY = "already"
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
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


def judge(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DONE
    if status == 409:
        return Outcome.ALREADY
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.GIVE_UP


class LoopsClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
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
        request_body = json.dumps(body, separators=(",", ":")) if body is not None else ""
        all_headers = {"Authorization": f"Bearer {api_key}", **(headers or {})}
        started, clock = time.time(), time.perf_counter()
        try:
            response = await self._http.request(
                method, path.lstrip("/"), content=request_body or None, headers=all_headers
            )
        except httpx.TimeoutException:
            return self._no_answer(method, path, request_body, started, clock, "timed out")
        except httpx.LocalProtocolError as exc:
            # The request could not be written, and the message quotes the header refused:
            # the one header that can hold such a character is the API key. Never repeat it.
            reason = (
                f"the request could not be sent ({type(exc).__name__}): the Loops API key "
                "holds a character an HTTP header cannot carry, such as a line break. "
                "Replace the key"
            )
            return self._no_answer(method, path, request_body, started, clock, reason)
        except httpx.TransportError as exc:
            reason = f"could not reach Loops ({type(exc).__name__}: {exc})"
            return self._no_answer(method, path, request_body, started, clock, reason)
        status, text = response.status_code, response.text
        retry_after = response.headers.get("retry-after", "")
        rate_limit = response.headers.get("x-ratelimit-limit", "")
        return Answer(
            outcome=judge(status),
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
        method: str, path: str, request_body: str, started: float, clock: float, reason: str
    ) -> Answer:
        return Answer(
            outcome=Outcome.RETRY,
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

    async def send_event(self, api_key: str, event: dict, idempotency_key: str) -> Answer:
        headers = {"Idempotency-Key": idempotency_key}
        return await self.call(api_key, "POST", "/events/send", event, headers)
