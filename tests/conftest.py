from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests import leaks
from tests.servers import Bridge, Sandbox, bridge_env

POSTGRES_HINT = (
    "PostgreSQL tests need a server: set BRIDGE_TEST_POSTGRES=postgresql+psycopg://"
    "postgres@127.0.0.1:5432/postgres (see README)"
)


def pytest_configure(config: pytest.Config) -> None:
    # No secret the tests use may come back out in a log, a CLI output or a page.
    leaks.install(config)


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
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards. It is made on the
    server of ``BRIDGE_TEST_POSTGRES`` (whose user may create databases): without that
    variable the test is skipped; with it, a server that cannot be used fails the test."""
    server = os.environ.get("BRIDGE_TEST_POSTGRES", "").strip()
    if not server:
        pytest.skip(POSTGRES_HINT)
    try:
        import psycopg
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    if psycopg is None:  # failed out here, so the report is not a chain of exceptions
        pytest.fail(
            "BRIDGE_TEST_POSTGRES is set but psycopg is not installed: "
            "pip install -e '.[postgres]'",
            pytrace=False,
        )
    url = make_url(server)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"loops_bridge_test_{uuid.uuid4().hex[:12]}"
    problem = ""
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        problem = str(exc)
    if problem:
        shown = url.render_as_string(hide_password=True)
        pytest.fail(
            f"BRIDGE_TEST_POSTGRES={shown}: cannot create a test database there: {problem}",
            pytrace=False,
        )
    try:
        yield url.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
