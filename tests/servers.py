"""Real servers on loopback for the tests: the bridge and the Loops sandbox, each started
with the product's own command (``loops-bridge serve`` / ``loops-bridge sandbox``) as a
separate process, and the ``loops-bridge`` CLI run the way a user runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests import leaks

BIN = Path(sys.executable).parent / "loops-bridge"
ADMIN_PASSWORD = "correct horse battery staple"
STARTUP = 60.0  # seconds a process may take to come up before its test fails


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


_started: list[Process] = []  # see running() and stop_leftovers()


def running() -> list[Process]:
    """The server processes started here that still run."""
    _started[:] = [process for process in _started if process.proc.poll() is None]
    return list(_started)


def stop_leftovers(keep: list[Process]) -> None:
    """Kill the processes running but those in ``keep`` (what ran before the test, such as a
    module's shared server): a test that fails before it stops what it started leaves
    nothing running, to load the machine or hold a port."""
    for process in running():
        if process not in keep:
            process.kill()


class Process:
    """A ``loops-bridge`` server process, stopped with SIGTERM like a container would be."""

    def __init__(self, args: list[str], env: dict[str, str], url: str, ready_path: str) -> None:
        self.url = url
        self.log_path = Path(env["BRIDGE_TEST_LOG"])
        self._log = self.log_path.open("ab")
        leaks.process(args, env, self.log_path)
        self.proc = subprocess.Popen(
            [str(BIN), *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        _started.append(self)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{args[0]} exited early:\n{self.log()}")
            try:
                return httpx.get(url + ready_path, timeout=1).status_code < 500
            except httpx.TransportError:
                return False

        self._started(up, f"{args[0]} to listen on {url}")

    def _started(self, up: Callable[[], bool], what: str) -> None:
        """Wait for ``up()``; a process that does not come up is killed, its log closed.
        The wait is long because a start is a deadline, not a measure: on a loaded machine
        (the suite runs on every core) importing the bridge alone can take seconds."""
        try:
            wait_until(up, timeout=STARTUP, what=what)
        except BaseException:
            self.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        finally:
            self._log.close()

    def kill(self) -> None:
        """``kill -9``: no shutdown, no cleanup, like a crash or a lost machine."""
        self.proc.kill()
        self.proc.wait(timeout=20)
        self._log.close()


class Sandbox(Process):
    def __init__(self, env: dict[str, str], *extra: str) -> None:
        port = free_port()
        super().__init__(
            ["sandbox", "--port", str(port), *extra], env, f"http://127.0.0.1:{port}", "/"
        )
        self.api_url = f"{self.url}/api/v1"

    def get(self, what: str, **params: str) -> Any:
        return httpx.get(f"{self.url}/_sandbox/{what}", params=params, timeout=5).json()

    def post(self, what: str, body: dict | None = None) -> Any:
        return httpx.post(f"{self.url}/_sandbox/{what}", json=body, timeout=5)

    def calls(self, path: str | None = None) -> list[dict]:
        requests = self.get("requests")
        return [r for r in requests if path is None or r["path"].endswith(path)]


class Bridge(Process):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(["serve"], env, env["BRIDGE_PUBLIC_URL"], "/healthz")

    def post(self, endpoint_id: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/webhooks/{endpoint_id}", content=body, headers=headers)

    def admin(self, password: str = "") -> httpx.Client:
        """An HTTP client signed in to /admin (with ``BRIDGE_ADMIN_PASSWORD``)."""
        client = httpx.Client(base_url=self.url, timeout=30)
        signed_in = client.post(
            "/admin/login", data={"password": password or ADMIN_PASSWORD, "next": "/admin/"}
        )
        assert signed_in.status_code == 303, signed_in.text
        return client


class Worker(Process):
    """A ``loops-bridge worker`` process (no HTTP port): ready when it says it started."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        leaks.process(["worker"], env, log_path)
        self.proc = subprocess.Popen(
            [str(BIN), "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        _started.append(self)
        self._started(lambda: "delivery worker" in self.log(), "the worker to start")

    def log(self) -> str:
        if self.proc.poll() is not None and "started" not in self.log_path.read_text():
            raise AssertionError(f"worker exited early:\n{self.log_path.read_text()}")
        return self.log_path.read_text(errors="replace")


def cli(env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True) -> Any:
    """Run ``loops-bridge ARGS``; with ``--json`` return the parsed output."""
    done = subprocess.run(
        [str(BIN), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )
    leaks.command(args, env, stdin, done)
    if check and done.returncode != 0:
        raise AssertionError(f"loops-bridge {' '.join(args)} failed:\n{done.stderr}")
    if "--json" in args and done.returncode == 0:
        return json.loads(done.stdout)
    return done


def refusals(env: dict[str, str], *commands: str) -> list[subprocess.CompletedProcess]:
    """``loops-bridge COMMAND`` for each of ``commands`` (``serve``, ``worker``), started at
    once as processes that are expected to refuse to start; how each ended. Processes, so that
    one that starts instead fails the test after a timeout rather than hang it."""
    started = [
        subprocess.Popen(
            [str(BIN), command],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    ended = []
    try:
        for command, process in zip(commands, started, strict=True):
            try:
                stdout, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"loops-bridge {command} started instead of refusing"
                ) from None
            done = subprocess.CompletedProcess([command], process.returncode, stdout, stderr)
            leaks.command([command], env, None, done)
            ended.append(done)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return ended


def bridge_env(tmp: Path, **overrides: str) -> dict[str, str]:
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'bridge.db'}",
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_PORT": str(port),
        "BRIDGE_LOOPS_API_URL": "http://127.0.0.1:9/api/v1",
        "BRIDGE_RETRY_BASE_SECONDS": "0.2",
        "BRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BRIDGE_TEST_LOG": str(tmp / "server.log"),
    }
    env.update(overrides)
    return env


def answers(url: str) -> bool:
    """Whether anything answers HTTP at ``url``, whatever its status."""
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True
