"""The one in-process harness: the bridge app, its delivery worker and the Loops sandbox in
the test's own process, on one event loop, talking through httpx's ASGI transport.

Nothing is patched: the app is ``bridge.app.create_app`` with its lifespan run as uvicorn
would run it, the worker is ``bridge.delivery.Worker`` calling the sandbox app through
``httpx.ASGITransport``, and the CLI is ``bridge.cli.main``. What a test would otherwise
wait for on a real clock (probe intervals, backoff, leases) is made short through the
settings and :class:`bridge.accounts.Intervals`.

Tests are plain functions: the harness runs its loop while they wait (:meth:`until`), so
the worker only makes progress inside :meth:`until` and the requests a test makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bridge import accounts, db, registry, sandbox
from bridge.admin.auth import ensure_password
from bridge.app import create_app
from bridge.cli import main as cli_main
from bridge.delivery import Worker
from bridge.settings import Settings, load
from tests import leaks
from tests.helpers import Page, signed_headers

ADMIN_PASSWORD = "correct horse battery staple"
PUBLIC_URL = "http://bridge.test"
# Probes in milliseconds rather than 30 s: what they decide is the same.
FAST = accounts.Intervals(key_probe=0.2, outage_probe_max=0.2)


@functools.cache
def _empty_schema(admin_password: str = "") -> bytes:
    """A SQLite database file with the current schema and nothing else (but the hash of
    ``admin_password``, as the admin stores it), made once per session by the bridge's own
    code: a harness starts from a copy rather than creating the schema and hashing the
    password for each test (test_db.py and test_admin_auth.py test those)."""
    with tempfile.TemporaryDirectory() as folder:
        engine = db.connect(f"sqlite:///{folder}/schema.db", create_schema=False)
        try:
            db._prepare(engine)
            if admin_password:
                ensure_password(engine, admin_password)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
        return Path(folder, "schema.db").read_bytes()


def settings_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a bridge on a fresh SQLite file under ``tmp_path``."""
    return {
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}",
        "BRIDGE_PUBLIC_URL": PUBLIC_URL,
        "BRIDGE_LOOPS_API_URL": "http://loops.test/api/v1",
        "BRIDGE_RETRY_BASE_SECONDS": "0.05",
        "BRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **overrides,
    }


class Harness:
    """The bridge (``worker=False``: without its delivery worker) and the Loops sandbox.

    ``sandbox_keys``: the only API keys the sandbox takes (None: any); ``rate_limit``: the
    sandbox's requests per second per key; ``clock``: the sandbox's clock; ``env``: bridge
    settings (``BRIDGE_...``) over :func:`settings_env`'s."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        worker: bool = True,
        sandbox_keys: list[str] | None = None,
        rate_limit: int = 10,
        clock: Callable[[], float] = time.monotonic,
        intervals: accounts.Intervals = FAST,
        **env: str,
    ) -> None:
        self.env = settings_env(tmp_path, **env)
        leaks.environment(self.env)
        self.settings: Settings = load(self.env)
        database = tmp_path / "bridge.db"
        if self.settings.database_url == f"sqlite:///{database}" and not database.exists():
            database.touch(mode=0o600)  # as the bridge makes its files: owner-only
            known = self.settings.admin_password == ADMIN_PASSWORD
            database.write_bytes(_empty_schema(ADMIN_PASSWORD if known else ""))
        self.engine: Engine = db.connect(
            self.settings.database_url, secret_key=self.settings.secret_key
        )
        self.sandbox_app = sandbox.create_app(sandbox_keys, rate_limit, clock)
        self.loop = asyncio.new_event_loop()
        self.worker = (
            Worker(
                self.engine,
                self.settings,
                transport=httpx.ASGITransport(app=self.sandbox_app),
                intervals=intervals,
                poll_seconds=0.02,
                shutdown_grace=1.0,
            )
            if worker
            else None
        )
        self.app = create_app(self.settings, self.engine, run_worker=worker, worker=self.worker)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
            base_url=PUBLIC_URL,
            follow_redirects=False,
        )
        self.loops = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.sandbox_app), base_url="http://loops.test"
        )
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.run(self._lifespan.__aenter__())

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.run(self._lifespan.__aexit__(None, None, None))
        self.run(self.client.aclose())
        self.run(self.loops.aclose())
        self.loop.close()
        self.engine.dispose()

    # -- the bridge ---------------------------------------------------------------------------

    def get(self, url: str, **params: Any) -> httpx.Response:
        # None, not {}: httpx replaces the query string of ``url`` with any params given.
        return self.run(self.client.get(url, params=params or None))

    def form(self, url: str, **fields: Any) -> httpx.Response:
        """POST a form, as the admin's pages do (same origin)."""
        headers = {"Origin": PUBLIC_URL, "Sec-Fetch-Site": "same-origin"}
        return self.run(self.client.post(url, data=fields, headers=headers))

    def sign_in(self, password: str = ADMIN_PASSWORD) -> httpx.Response:
        answer = self.form("/admin/login", password=password, next="/admin/")
        assert answer.status_code == 303, answer.text
        return answer

    def webhook(
        self, endpoint_id: str, body: bytes, secret: str, headers: Mapping[str, str] = {}
    ) -> httpx.Response:
        """POST ``body`` to the endpoint, signed with ``secret`` the way Stripe signs."""
        sent = {**signed_headers(body, secret), **headers}
        return self.run(self.client.post(f"/webhooks/{endpoint_id}", content=body, headers=sent))

    def webhooks(self, endpoint_id: str, bodies: list[bytes], secret: str) -> list[dict]:
        """POST every body at once, like Stripe sending a month of invoices."""

        async def all_() -> list[httpx.Response]:
            return await asyncio.gather(
                *(
                    self.client.post(
                        f"/webhooks/{endpoint_id}",
                        content=b,
                        headers=signed_headers(b, secret),
                    )
                    for b in bodies
                )
            )

        return [r.json() for r in self.run(all_())]

    def until(self, check: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
        """Run the bridge until ``check()`` is truthy; its value. ``check`` runs between
        turns of the loop, so it may read the database or call :meth:`loops_get`."""
        deadline = time.monotonic() + timeout
        while not (result := check()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.run(asyncio.sleep(0.01))
        return result

    def deliveries(self, **where: Any) -> list[dict]:
        """Rows of ``deliveries`` (without payloads), oldest first, filtered by column."""
        columns = "id, endpoint_id, event_id, event_type, email, status, reason, attempts"
        query = f"SELECT {columns} FROM deliveries"
        if where:
            query += " WHERE " + " AND ".join(f"{name} = :{name}" for name in where)
        with self.engine.connect() as conn:
            rows = conn.execute(text(query + " ORDER BY id"), where).mappings()
            return [dict(row) for row in rows]

    def settled(self, count: int | None = None) -> list[dict]:
        """Run until no delivery is queued (and at least ``count`` exist); all of them."""

        def done() -> list[dict] | None:
            rows = self.deliveries()
            if count is not None and len(rows) < count:
                return None
            return rows if all(r["status"] != "queued" for r in rows) else None

        return self.until(done, what="every delivery to settle")

    # -- set-up, as the CLI and the admin do it ---------------------------------------------

    def account(self, name: str = "acme", api_key: str = "loops_key_acme_1234") -> int:
        account = registry.add_account(self.engine, name, api_key)
        assert account.id is not None
        return account.id

    def endpoint(
        self,
        events: str = "invoice.paid",
        *,
        account: str = "acme",
        secret: str | None = None,
        **options: Any,
    ) -> str:
        """A Stripe endpoint (its Loops account "acme" made on first use); its id."""
        if not any(a.name == account for a in registry.list_accounts(self.engine)):
            self.account(account)
        return registry.create_endpoint(
            self.engine,
            name=options.pop("name", "Stripe"),
            account=account,
            provider=options.pop("provider", "stripe"),
            event_types=events.split(","),
            signing_secret=secret,
            **options,
        )

    # -- the Loops sandbox ------------------------------------------------------------------

    def loops_get(self, what: str, **params: str) -> Any:
        """What the sandbox saw: ``requests``, ``contacts``, ``events`` or ``faults``."""
        return self.run(self.loops.get(f"/_sandbox/{what}", params=params)).json()

    def loops_calls(self, path: str | None = None) -> list[dict]:
        calls = self.loops_get("requests")
        return [c for c in calls if path is None or c["path"].endswith(path)]

    def fault(self, **fault: Any) -> None:
        """Make the sandbox misbehave (``status``, ``count``, ``delay``, ``key``)."""
        answer = self.run(self.loops.post("/_sandbox/faults", json=fault))
        assert answer.status_code == 200, answer.text

    def clear_faults(self) -> None:
        self.run(self.loops.delete("/_sandbox/faults"))

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        return run_cli(self.env, *args, stdin=stdin, check=check)

    # -- the admin ----------------------------------------------------------------------------

    def page(self, url: str, status: int = 200) -> Page:
        """An admin page (signed in first: :meth:`sign_in`), answered with ``status``."""
        response = self.get(url)
        assert response.status_code == status, (url, response.status_code, response.text[:500])
        assert "Traceback" not in response.text
        return Page(response)

    def connect_admin(self) -> None:
        """Send the admin's own calls in-process too: an account's Test button to the sandbox,
        a test event to this app's public webhook URL (else they go to the network)."""
        from starlette.routing import Mount

        from bridge.admin import Admin

        (mounted,) = [r for r in self.app.routes if isinstance(r, Mount) and r.path == "/admin"]
        admin: Admin = mounted.app.state.admin
        admin.loops_transport = httpx.ASGITransport(app=self.sandbox_app)
        admin.webhook_transport = httpx.ASGITransport(app=self.app)


def run_cli(
    env: Mapping[str, str], *args: str, stdin: str | None = None, check: bool = True
) -> Any:
    """``loops-bridge ARGS`` run in this process (``bridge.cli.main``) with ``env`` as its
    environment; with ``--json``, the parsed output, else a CompletedProcess."""
    out, err = io.StringIO(), io.StringIO()
    with _environment(env), _stdin(stdin), contextlib.redirect_stdout(out):
        with contextlib.redirect_stderr(err):
            try:
                code = cli_main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    done = subprocess.CompletedProcess(
        ["loops-bridge", *args], code, out.getvalue(), err.getvalue()
    )
    leaks.command(args, env, stdin, done)
    if check and done.returncode != 0:
        raise AssertionError(f"loops-bridge {' '.join(args)} failed:\n{done.stderr}")
    if "--json" in args and done.returncode == 0:
        return json.loads(done.stdout)
    return done


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _stdin(value: str | None) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(value or "")
    try:
        yield
    finally:
        sys.stdin = saved


class Served:
    """An ASGI app (its lifespan too) in uvicorn on 127.0.0.1, in a thread of this process:
    for a client that needs a real socket, such as a browser. Bind first
    (:meth:`bound_socket`) when the app must know its own URL before it is made."""

    def __init__(self, app: Any, sock: socket.socket | None = None) -> None:
        import threading

        import uvicorn

        sock = sock or self.bound_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        # A daemon: a test that fails before stop() cannot keep pytest from exiting.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 60  # a deadline, not a measure: see servers.STARTUP
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    @staticmethod
    def bound_socket() -> socket.socket:
        """A socket bound to a free port of 127.0.0.1."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        return sock

    def stop(self) -> None:
        """Shut down as on SIGTERM: the lifespan ends, the app's worker stops."""
        self._server.should_exit = True
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "uvicorn did not stop"


def stripe_event(
    relative: str, event_id: str, *, created: int | None = None, **fields: Any
) -> bytes:
    """The Stripe fixture ``relative`` as another event: id ``event_id``, ``created`` as its
    time if given, and ``fields`` (``email=``, ``name=``) set on its object."""
    from tests.helpers import fixture_json

    event = fixture_json(relative)
    event["id"] = event_id
    if created is not None:
        event["created"] = created
    event["data"]["object"].update(fields)
    return json.dumps(event).encode()


def busiest_second(calls: list[dict]) -> int:
    """The most of these sandbox requests in any one-second window, by the sandbox's own
    clock (their ``at``): what Loops would count against its limit."""
    import bisect

    times = sorted(c["at"] for c in calls)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)
