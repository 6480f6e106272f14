from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Bridge, Sandbox, bridge_env


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
