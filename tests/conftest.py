from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy.engine import make_url

from tests import leaks, servers
from tests.harness import Harness, Served
from tests.servers import Bridge, Sandbox, bridge_env
from tests.stripe_standin import StripeStandin

# The PostgreSQL tests use the server BRIDGE_TEST_POSTGRES names or, when it is unset, this
# one if it answers; without either they are skipped, and pytest's summary says why.
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_ELSEWHERE = (
    "set BRIDGE_TEST_POSTGRES=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE "
    "(a user that may create databases) to use another server"
)
POSTGRES_SKIPPED = "PostgreSQL tests skipped: "


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """The workers of ``-n auto`` (pyproject's addopts): one more than the cores, as many
    tests wait on a process, a socket or the disk. A worker takes whole files, so a run of a
    few files has no more workers than files, and one file runs in this process.
    PYTEST_XDIST_AUTO_NUM_WORKERS, if set, decides instead."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    workers = len(os.sched_getaffinity(0)) + 1
    named = {Path(arg.split("::")[0]) for arg in config.args}
    if named and all(path.is_file() for path in named):
        workers = min(workers, len(named))
    return workers if workers > 1 else 0


def pytest_configure(config: pytest.Config) -> None:
    # No secret the tests use may come back out in a log, a CLI output or a page.
    leaks.install(config)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    before = servers.running()
    yield
    servers.stop_leftovers(keep=before)


@pytest.fixture(scope="module")
def _stripe_served() -> Iterator[StripeStandin]:
    stand_in = StripeStandin()
    with stand_in.serve():
        yield stand_in


@pytest.fixture
def stripe_standin(_stripe_served: StripeStandin) -> Iterator[StripeStandin]:
    """The Stripe API stand-in (tests/stripe_standin.py) served on loopback, its base URL in
    ``.url``: one server per test module, emptied for each test."""
    _stripe_served.reset()
    yield _stripe_served
    _stripe_served.release_all()  # a test that failed mid-import lets its thread finish


@pytest.fixture
def importing(tmp_path: Path, stripe_standin: StripeStandin) -> Iterator[Harness]:
    """The bridge in-process (as :func:`harness`) reading Stripe from the stand-in, with
    Loops at 200 requests/s: an import's hundreds of customers go through in a second or two."""
    with Harness(
        tmp_path,
        rate_limit=200,
        BRIDGE_LOOPS_RATE_LIMIT="200",
        BRIDGE_STRIPE_API_URL=stripe_standin.url,
    ) as started:
        yield started


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """The bridge, its worker and the Loops sandbox, in-process (tests/harness.py)."""
    with Harness(tmp_path) as started:
        yield started


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Harness]:
    """The bridge in-process without its delivery worker, signed in to /admin: what a test
    writes into the database stays as written while it reads the pages."""
    with Harness(tmp_path, worker=False) as started:
        started.sign_in()
        yield started


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return bridge_env(tmp_path)


@pytest.fixture
def sandbox(env: dict[str, str]) -> Iterator[Sandbox]:
    server = Sandbox(env)
    env["BRIDGE_LOOPS_API_URL"] = server.api_url
    yield server
    server.stop()


@pytest.fixture
def bridge(env: dict[str, str], sandbox: Sandbox) -> Iterator[Bridge]:
    server = Bridge(env)
    yield server
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean stop too.
    assert server.stop() in (0, -15)
    assert "Application shutdown complete" in server.log(), server.log()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Served]]:
    """Serve an ASGI app in uvicorn on loopback (:class:`tests.harness.Served`) until the test
    ends, however it ends."""
    started: list[Served] = []

    def start(app: Any) -> Served:
        started.append(Served(app))
        return started[-1]

    yield start
    for served in reversed(started):
        served.stop()


@functools.cache
def postgres_server() -> tuple[str, bool, str]:
    """The server the PostgreSQL tests make their databases on: (its URL, whether
    BRIDGE_TEST_POSTGRES names it, why it cannot be used or ""). Without the variable it is
    DEFAULT_POSTGRES, tried once per session with a connect of at most 2 s."""
    given = os.environ.get("BRIDGE_TEST_POSTGRES", "").strip()
    server = given or DEFAULT_POSTGRES
    try:
        import psycopg
    except ImportError:
        return server, bool(given), "psycopg is not installed: pip install -e '.[postgres]'"
    if given:
        return server, True, ""  # each test's CREATE DATABASE says what is wrong, if anything
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, connect_timeout=2):
            pass
    except psycopg.Error as exc:
        return server, False, (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return server, False, ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    """Every PostgreSQL test skipped comes out as one line of pytest's summary (``-ra``),
    rather than one line per test."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
        if POSTGRES_SKIPPED in reason:
            report.longrepr = (__file__, None, reason)
    return report


def pytest_report_header() -> str:
    server, given, problem = postgres_server()
    shown = make_url(server).render_as_string(hide_password=True)
    if given:
        return f"PostgreSQL tests: on {shown} (BRIDGE_TEST_POSTGRES)"
    if problem:
        return f"PostgreSQL tests: skipped, nothing usable at {shown} ({problem})"
    return f"PostgreSQL tests: on {shown} (answered; BRIDGE_TEST_POSTGRES is unset)"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards, made on the server of
    :func:`postgres_server`. A server that BRIDGE_TEST_POSTGRES names and that cannot be used
    fails the test; without the variable, the test is skipped unless a server at
    DEFAULT_POSTGRES takes it, and the skip says what was tried."""
    server, given, problem = postgres_server()
    url = make_url(server)
    shown = url.render_as_string(hide_password=True)

    def unusable(problem: str) -> NoReturn:
        if given:  # failed out here, so the report is not a chain of exceptions
            pytest.fail(f"BRIDGE_TEST_POSTGRES={shown} cannot be used: {problem}", pytrace=False)
        pytest.skip(
            f"{POSTGRES_SKIPPED}nothing usable at {shown} ({problem}). Start a server there, "
            f"or {POSTGRES_ELSEWHERE}."
        )

    if problem:
        unusable(problem)
    import psycopg

    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"loops_bridge_test_{uuid.uuid4().hex[:12]}"
    problem = ""
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        problem = f"cannot create a test database there: {exc}"
    if problem:
        unusable(problem)
    try:
        yield url.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
