"""Sign-in attack: how many password guesses a running bridge checks, and its memory meanwhile.

Starts ``loops-bridge serve`` (SQLite in a temporary folder, the admin on a port of its own)
and attacks its sign-in form: first ``--connections`` wrong guesses at once, then, for
``--seconds``, that many connections each sending one wrong guess after another without
pausing. With ``--addresses many`` each guess names a new client in X-Forwarded-For, which
the bridge believes (BRIDGE_TRUSTED_PROXIES=127.0.0.1): an attacker with many addresses.
With ``one``, every guess comes from 127.0.0.1. It prints the answers by status, the guesses
checked (answered 401) per minute, and the server's resident memory (VmRSS) before, at its
highest (VmHWM) and after.

    .venv/bin/python bench/sign_in_attack.py [--connections 300] [--seconds 65]
        [--addresses one|many]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "loops-bridge"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) // 1024
    return found


async def attack(url: str, connections: int, seconds: float, many: bool) -> None:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    counter = iter(range(10**9))
    statuses: collections.Counter[int] = collections.Counter()
    checked_at: list[float] = []

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def guess() -> None:
            n = next(counter)
            headers = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
            answer = await client.post(
                "/admin/login",
                data={"password": f"guess {n}", "next": "/admin/"},
                headers=headers if many else {},
            )
            statuses[answer.status_code] += 1
            if answer.status_code == 401:
                checked_at.append(time.monotonic())

        began = time.monotonic()
        await asyncio.gather(*(guess() for _ in range(connections)))
        print(
            f"burst: {connections} guesses at once in {time.monotonic() - began:.1f} s: "
            f"{dict(statuses)}"
        )
        statuses.clear()
        checked_at.clear()

        began = time.monotonic()
        until = began + seconds

        async def keep_guessing() -> None:
            while time.monotonic() < until:
                await guess()

        await asyncio.gather(*(keep_guessing() for _ in range(connections)))
        took = time.monotonic() - began
    print(f"sustained: {sum(statuses.values())} guesses in {took:.0f} s: {dict(statuses)}")
    per_minute = [
        sum(began + 60 * m <= t < began + 60 * (m + 1) for t in checked_at)
        for m in range(int(took // 60) + 1)
    ]
    print(f"checked (401) per minute of the sustained attack: {per_minute}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=65)
    parser.add_argument("--addresses", choices=["one", "many"], default="one")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="sign-in-attack-")
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{folder}/bridge.db",
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_PORT": str(port),
        "BRIDGE_ADMIN": str(admin),
        "BRIDGE_ADMIN_PASSWORD": "correct horse battery staple",
        "BRIDGE_LOOPS_API_URL": "http://127.0.0.1:9/api/v1",
        "BRIDGE_TRUSTED_PROXIES": "127.0.0.1" if args.addresses == "many" else "",
    }
    log = open(Path(folder, "server.log"), "wb")
    server = subprocess.Popen([str(BIN), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{admin}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        # One right sign-in first, as the admin would: the process at rest, after the
        # password's first check.
        with httpx.Client(base_url=url) as client:
            client.post("/admin/login", data={"password": env["BRIDGE_ADMIN_PASSWORD"]})
        before = memory(server.pid)["VmRSS"]
        highest = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                highest.append(memory(server.pid)["VmRSS"])

        sampler = threading.Thread(target=sample)
        sampler.start()
        asyncio.run(attack(url, args.connections, args.seconds, args.addresses == "many"))
        done.set()
        sampler.join()
        after = memory(server.pid)
        print(
            f"server memory (VmRSS): before {before} MB, highest sampled {max(highest)} MB "
            f"(VmHWM {after['VmHWM']} MB), after {after['VmRSS']} MB"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        print(f"server log: {folder}/server.log")


if __name__ == "__main__":
    main()
