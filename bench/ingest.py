"""Ingest benchmark: the bridge's webhook route against a bare Starlette app, side by side.

Both targets get the same requests: distinct Stripe ``invoice.paid`` events (the captured
fixture with a unique id and customer_email), signed the way Stripe signs them. Each target
runs alone, as its own uvicorn process served like ``loops-bridge serve`` serves the bridge,
loaded by ``wrk`` (one thread) from another process: a warm-up, then the measured run.

The bar: the bridge answers at least half the bare app's rate of 2xx answers, and every
webhook it acknowledged (a 200 "queued"/"duplicate" with a delivery id) is in its database.
The table shows the CPU the server, wrk and all other processes used during each measured
run: on a shared machine, "others" above ~0.2 cores means the numbers are disturbed.
Exit status: 0 pass, 1 below the bar, 2 setup problem, 3 an acknowledged webhook is missing.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import httpx

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent / "loops-bridge"
FIXTURE = HERE.parent / "tests/fixtures/stripe/captured-test-mode/invoice.paid.event.json"
SECRET = "whsec_benchbenchbenchbenchbenchbench"
MARK = "{{N}}"  # where the event number goes, in the event id and the customer email
BAR = 0.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Needs wrk (installed with apt-get when missing and running as root).",
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="measured run per target (default 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="warm-up per target, seconds (default 2)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--events",
        type=int,
        help="distinct events to generate (default 40000 per second of load, enough that "
        "the bridge never gets the same event twice; wrap-arounds are reported)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, db)")
    args = parser.parse_args()
    if not (1 <= args.seconds and 1 <= args.warmup and args.seconds + args.warmup <= 240):
        parser.error(
            "--seconds and --warmup must be >= 1, and total at most 240 (signatures "
            "go stale after Stripe's 300 s tolerance)"
        )
    args.events = args.events or 40_000 * (args.seconds + args.warmup)
    return args


def fail(message: str) -> NoReturn:
    """A setup problem: say so and exit with status 2 (cleanup still runs)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, capture_output=True, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
            subprocess.run(install, capture_output=True, timeout=300)
        found = shutil.which("wrk")
    if not found:
        fail("wrk is not installed; run `sudo apt-get install wrk` and try again")
    return found


def write_requests(work: Path, count: int) -> None:
    """The body template (head, mid, tail; see ingest.lua) and a fresh signature per event."""
    event = json.loads(FIXTURE.read_bytes())
    event["id"] = f"evt_bench{MARK}"
    event["data"]["object"]["customer_email"] = f"bench{MARK}@example.com"
    head, mid, tail = (p.encode() for p in json.dumps(event, indent=2).split(MARK))
    for name, part in (("head", head), ("mid", mid), ("tail", tail)):
        (work / name).write_bytes(part)
    t = int(time.time())
    start = hmac.new(SECRET.encode(), f"{t}.".encode() + head, hashlib.sha256)
    with (work / "sigs").open("w") as sigs:
        for i in range(count):
            n = b"%07d" % i
            mac = start.copy()
            mac.update(n + mid + n + tail)
            sigs.write(f"t={t},v1={mac.hexdigest()}\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes(contextlib.ExitStack):
    """Servers started for the run; each is stopped (SIGTERM, then SIGKILL) on the way out."""

    def start(self, name: str, cmd: list[str], env: dict, work: Path, ready_url: str) -> int:
        log = self.enter_context((work / f"{name}.log").open("ab"))
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.callback(stop, proc)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                fail(f"{name} exited early; see {work / name}.log")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    return proc.pid
            if time.monotonic() > deadline:
                fail(f"{name} did not come up in 30 s; see {work / name}.log")
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_wrk(
    wrk: str, args: argparse.Namespace, url: str, work: Path, seconds: int, offset: int
) -> dict:
    result = work / "wrk-result.json"
    result.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_DIR": str(work),
        "BENCH_OFFSET": str(offset),
        "BENCH_RESULT": str(result),
    }
    cmd = [wrk, "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(HERE / "ingest.lua"), url]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not result.exists():
        fail(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return json.loads(result.read_text())


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all CPUs), from /proc/stat."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK  # minus idle and iowait


def children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children: wrk
    return usage.ru_utime + usage.ru_stime


def measure(
    wrk: str, args: argparse.Namespace, url: str, work: Path, pid: int
) -> tuple[dict, dict]:
    """Warm-up, then the measured run on the events after the warm-up's. CPU time used during
    the measured run goes in ``cpu``: by the server, by wrk, and by everything else."""
    warm = run_wrk(wrk, args, url, work, args.warmup, 0)
    before = cpu_seconds(pid), children_seconds(), busy_seconds()
    run = run_wrk(wrk, args, url, work, args.seconds, warm["sent"])
    server = cpu_seconds(pid) - before[0]
    load = children_seconds() - before[1]
    machine = busy_seconds() - before[2]
    run["cpu"] = {"server": server, "wrk": load, "others": max(machine - server - load, 0.0)}
    return warm, run


def row(name: str, run: dict) -> tuple[float, int]:
    ok = sum(n for key, n in run["answers"].items() if key.startswith("2"))
    seconds = run["duration_us"] / 1e6
    rate, bad = ok / seconds, run["requests"] - ok
    server, load, others = (run["cpu"][k] / seconds for k in ("server", "wrk", "others"))
    per_request = run["cpu"]["server"] / max(run["requests"], 1) * 1e6
    print(
        f"{name:<8}{rate:>8.0f}{run['p50_us'] / 1000:>8.1f}{run['p99_us'] / 1000:>8.1f}"
        f"{bad:>9}{run['socket_errors']:>10}{per_request:>9.0f}{server:>8.2f}{load:>6.2f}"
        f"{others:>8.2f}   {json.dumps(run['answers'])}"
    )
    return rate, bad


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    if not FIXTURE.exists():
        fail(f"the Stripe fixture is missing: {FIXTURE}")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        return bench(wrk, args, work)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench(wrk: str, args: argparse.Namespace, work: Path) -> int:
    bridge_port, sandbox_port, bare_port = free_port(), free_port(), free_port()
    database = work / "bridge.db"
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{database}",
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(bridge_port),
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{bridge_port}",
        "BRIDGE_LOOPS_API_URL": f"http://127.0.0.1:{sandbox_port}/api/v1",
    }

    def cli(*argv: str) -> str:
        done = subprocess.run(
            [str(BIN), *argv], env=env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            fail(f"loops-bridge {argv[0]} {argv[1]} failed:\n{done.stderr}")
        return done.stdout

    cli("accounts", "add", "--name", "bench", "--api-key", "k")
    create = "endpoints create --name bench --account bench --events invoice.paid --json"
    endpoint = json.loads(cli(*create.split(), "--signing-secret", SECRET))
    path = f"/webhooks/{endpoint['id']}"
    print(
        f"{args.events} distinct signed events, {args.connections} connections, "
        f"{args.warmup} s warm-up + {args.seconds} s per target",
        flush=True,
    )

    before = busy_seconds()
    time.sleep(1)
    if (busy := busy_seconds() - before) > 0.3:
        print(f"warning: other processes already keep {busy:.1f} cores busy; expect noise")
    write_requests(work, args.events)
    with Processes() as procs:
        pid = procs.start(
            "bare",
            [sys.executable, str(HERE / "bare_app.py"), "--port", str(bare_port)],
            env,
            work,
            f"http://127.0.0.1:{bare_port}/",
        )
        _, bare = measure(wrk, args, f"http://127.0.0.1:{bare_port}{path}", work, pid)

    write_requests(work, args.events)  # fresh signature timestamps, same bodies
    with Processes() as procs:
        procs.start(
            "sandbox",
            [str(BIN), "sandbox", "--port", str(sandbox_port)],
            env,
            work,
            f"http://127.0.0.1:{sandbox_port}/",
        )
        pid = procs.start(
            "bridge", [str(BIN), "serve"], env, work, f"http://127.0.0.1:{bridge_port}/healthz"
        )
        url = f"http://127.0.0.1:{bridge_port}{path}"
        warm, bridge = measure(wrk, args, url, work, pid)
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            stored = {i for (i,) in db.execute("SELECT id FROM deliveries")}

    print(
        f"\n{'target':<8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>9}{'sock err':>10}"
        f"{'us/req':>9}{'server':>8}{'wrk':>6}{'others':>8}   answers"
    )
    bare_rate, _ = row("bare", bare)
    bridge_rate, bridge_bad = row("bridge", bridge)
    print("(us/req: server CPU per request; server/wrk/others: CPU cores each used meanwhile)")
    ratio = bridge_rate / bare_rate
    verdict = "PASS" if ratio >= BAR else "FAIL"
    cost = [run["cpu"]["server"] / max(run["requests"], 1) for run in (bridge, bare)]
    print(f"\nbridge/bare = {ratio:.2f}  ->  {verdict} (bar {BAR})")
    print(
        f"server CPU per request, bridge/bare = {cost[0] / cost[1]:.1f}x "
        "(each server tops out near one core, so the rate ratio tracks its inverse)"
    )

    acked = warm["acked"] + bridge["acked"]
    two_xx = sum(n for run in (warm, bridge) for k, n in run["answers"].items() if k[0] == "2")
    sent = warm["sent"] + bridge["sent"]
    missing = set(acked) - stored
    print(
        f"bridge, warm-up + run: {sent} requests sent ({sent - args.events} past the "
        f"{args.events} distinct events)"
        if sent > args.events
        else f"bridge, warm-up + run: {sent} requests sent, all distinct events"
    )
    print(
        f"  2xx answers: {two_xx}, of them queued/duplicate with a delivery id: {len(acked)} "
        f"({len(set(acked))} distinct ids); deliveries in the database: {len(stored)}"
    )
    if missing:
        print(
            f"\n!!! LOST: {len(missing)} acknowledged deliveries are NOT in the database, "
            f"e.g. ids {sorted(missing)[:10]}",
            file=sys.stderr,
        )
        return 3
    print("  every acknowledged delivery is in the database")
    if bridge_bad:
        tail = (work / "bridge.log").read_text(errors="replace").splitlines()[-15:]
        print(f"  note: the bridge gave {bridge_bad} non-2xx answers; its log ends with:")
        print("\n".join(f"    {line}" for line in tail))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
