"""No secret comes back out of the bridge: the leak check of ``tests/leaks.py``, checked.

- the scanner finds a secret whole, in part and announced twice, and lets masked hints and
  one announcement through, and its report never shows a secret;
- a leak fails the whole pytest session, with that report;
- a whole scenario, everything an operator and Stripe do, run here on its own, shows no
  secret in any log line, CLI output, page or error;
- an API key that cannot go into an HTTP header is refused, and one stored by an earlier
  version is never quoted in the error its delivery gets (the leak this check found).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlmodel import Session

from bridge import registry, sandbox, vault
from bridge.admin.auth import COOKIE
from bridge.delivery import Worker
from bridge.models import Account
from tests import leaks
from tests.harness import FAST, Harness, settings_env
from tests.harness import run_cli as cli
from tests.helpers import fixture_bytes

pytest_plugins = ["pytester"]

KEY = "loops_key_leakScenario_7c1e9a3f5b"
REVOKED_KEY = "loops_key_leakRevoked_0d2b4f6a8c"
REPLACING_KEY = "loops_key_leakReplacing_5e7a9c1b3d"
SECRET = "whsec_leakScenarioSecretQQQQQQQQQ1"
SECOND = "whsec_leakScenarioSecondRRRRRRRRR2"
WRONG_SECRET = "whsec_leakScenarioWrongSSSSSSSSSS3"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
GENERATED = re.compile(r"admin password \(shown once, only a hash is kept\): (\S+)")


# -- the scanner ---------------------------------------------------------------------------


def test_the_scanner_finds_secrets_whole_or_in_part_and_lets_hints_through():
    key = "loops_key_" + secrets.token_hex(16)
    signing = "whsec_" + secrets.token_hex(16)
    password = "Tom & Jerry's admin password " + secrets.token_hex(4)
    cookie = secrets.token_urlsafe(32)
    pasted = f"loops_key_{secrets.token_hex(8)}\nloops_key_{secrets.token_hex(8)}"
    scanner = leaks.Scanner()
    for value, kind in (
        (key, leaks.API_KEY),
        (signing, leaks.SIGNING_SECRET),
        (password, leaks.ADMIN_PASSWORD),
        (cookie, leaks.SESSION_COOKIE),
        (pasted, leaks.API_KEY),
    ):
        scanner.secret(value, kind, "this test")
    unknown = "whsec_" + secrets.token_hex(16)  # registered nowhere: found by its shape
    leaked = {
        "a log line": f"2026-11-27 INFO bridge.delivery: calling Loops with {key}",
        "a page with a key cut short": f"<td>{key[:14]}…</td>",
        "a JSON log line": json.dumps({"message": f"secret {signing} refused"}),
        "an error quoting a password": f"error: the password {password!r} is wrong",
        "a page quoting a password": f'<input value="{html.escape(password)}">',
        "a URL with a password": f"location: /admin/login?password={quote(password)}",
        "a header": f"location: /admin/?session={cookie}",
        "a quoted header": f"Illegal header value b'Bearer {pasted!s}'".replace("\n", "\\n"),
        "a secret of nobody's": f"error: {unknown}",
    }
    clean = {
        "hints": f"key {registry.mask(key)}, secrets {registry.mask(signing)}",
        "other words": "Sign in with the admin password; the signing secret is whsec_...",
    }
    texts = [leaks.Text("CLI", where, body, "t") for where, body in {**leaked, **clean}.items()]

    found = scanner.scan(texts)

    assert sorted(leak.where for leak in found) == sorted(leaked)
    by_where = {leak.where: leak for leak in found}
    assert by_where["a page with a key cut short"].how == "12 characters in a row of it"
    assert by_where["a secret of nobody's"].kind == leaks.SIGNING_SECRET
    assert by_where["a quoted header"].kind == leaks.API_KEY
    report = "\n".join(map(str, found))
    for value in (key, signing, password, cookie, unknown, *pasted.split()):
        assert value not in report and value[: leaks.PIECE] not in report
    assert f"…{key[-4:]}" in report and "[secret]" in report
    assert scanner.texts["CLI"] == len(texts)


def test_a_secret_shown_on_purpose_is_allowed_once():
    scanner = leaks.Scanner()
    generated = secrets.token_urlsafe(15)
    shown = f"\n  loops-bridge admin password (shown once, only a hash is kept): {generated}\n"
    assert scanner.scan([leaks.Text("log file", "the first start's log", shown)]) == []
    assert scanner.secrets[generated][0] == leaks.ADMIN_PASSWORD

    again = scanner.scan(
        [
            leaks.Text("log file", "a second start's log", shown),
            leaks.Text("HTTP", "a page", f"<p>{generated}</p>"),
        ]
    )
    assert [(leak.where, leak.how.split(" (")[0]) for leak in again] == [
        ("a second start's log", "shown a second time"),
        ("a page", "the whole value"),
    ]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist workers"])
def test_a_leak_fails_the_session_with_a_report_that_never_shows_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
):
    """In one process, and on xdist's workers (the leak is found in a worker, reported by
    the controller)."""
    leaked = "whsec_" + secrets.token_hex(16)  # known to the inner session only
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest(
        "from tests import leaks\n\n\ndef pytest_configure(config):\n    leaks.install(config)\n"
    )
    pytester.makepyfile(
        test_inner=f"""
        from tests import leaks


        def test_a_log_line_with_a_secret():
            leaks.secret({leaked!r}, leaks.SIGNING_SECRET, "the inner test")
            leaks.text("log file", "a made-up log", "refused: no signature matches {leaked}")


        def test_nothing_wrong():
            leaks.text("CLI", "an output", "Added signing secret whsec_…{leaked[-4:]}.")
        """
    )
    quick = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]  # not used in there
    result = pytester.runpytest_subprocess(*quick, *workers)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2)  # every test passed; the session failed
    result.stdout.fnmatch_lines(
        [
            "*= secrets leaked =*",
            "test_inner.py::test_a_log_line_with_a_secret",
            f"  the whole value: signing secret …{leaked[-4:]}, 38 characters*",
            "  in a made-up log:",
            "    refused: no signature matches [[]secret]",
            f"leak check: 1 leaks in * after 2 tests{' on 2 workers' * bool(workers)} "
            "(tests/leaks.py)",
        ]
    )
    assert leaked not in result.stdout.str() + result.stderr.str()


# -- a whole scenario ------------------------------------------------------------------------


def test_a_whole_scenario_shows_no_secret_anywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Stripe, the CLI, the admin and the operator's mistakes, one after the other, with JSON
    logs; then every text they produced is searched."""
    # No BRIDGE_ADMIN_PASSWORD: the first start generates one, and shows it once.
    settings = {
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_RETRY_BASE_SECONDS": "30",
        "BRIDGE_ADMIN_PASSWORD": "",
    }
    env = settings_env(tmp_path, **settings)

    # The CLI: secrets as arguments and on stdin, listed, and mistaken.
    cli(env, "accounts", "add", "--name", "acme", "--api-key", "-", "--no-check", stdin=KEY + "\n")
    cli(env, "accounts", "add", "--name", "revoked", "--api-key", REVOKED_KEY, "--no-check")
    create = ["endpoints", "create", "--loops-event", "successfulPayment", "--json"]
    events = ["--events", "invoice.paid,customer.created"]
    acme = cli(
        env, *create, "--name", "Live", "--account", "acme", *events,
        "--signing-secret", "-", stdin=SECRET,
    )["id"]  # fmt: skip
    revoked = cli(
        env, *create, "--name", "Old", "--account", "revoked", *events,
        "--signing-secret", SECRET,
    )["id"]  # fmt: skip
    cli(env, "endpoints", "add-secret", acme, "-", stdin=SECOND)
    for mistake in (
        ["endpoints", "add-secret", acme, SECOND],  # already there
        ["endpoints", "add-secret", acme, "sk_live_leakScenarioNotASecret9"],  # not whsec_
        ["endpoints", "remove-secret", acme, WRONG_SECRET],  # not one of its secrets
        ["accounts", "add", "--name", "acme", "--api-key", KEY],  # the name is taken
        ["accounts", "set", "nobody", "--api-key", KEY],
    ):
        assert cli(env, *mistake, check=False).returncode == 2
    for listing in (["accounts", "list"], ["endpoints", "list"]):
        cli(env, *listing)
        cli(env, *listing, "--json")
    cli(env, "settings")

    # The bridge starts, with a Loops that refuses every key but KEY and REPLACING_KEY. What
    # it prints (the generated password) is read here, so it is handed to the leak check as
    # it was shown.
    bridge = Harness(tmp_path, sandbox_keys=[KEY, REPLACING_KEY], **settings)
    bridge.connect_admin()
    started = capsys.readouterr().err
    leaks.text("captured output", "the stderr of the bridge's first start", started)
    (password,) = GENERATED.findall(started)

    def send(method: str, path: str, **options: Any) -> httpx.Response:
        """A request as a script would make it (no browser headers), following redirects."""
        return bridge.run(bridge.client.request(method, path, follow_redirects=True, **options))

    # Stripe: signed with either secret, with a wrong one, and sent where nothing is.
    body = fixture_bytes(INVOICE_PAID)
    queued = bridge.webhook(acme, body, SECOND).json()
    assert queued["status"] == "queued"
    stale = bridge.webhook(revoked, body, SECRET).json()
    refused = bridge.webhook(
        acme,
        fixture_bytes(CUSTOMER_CREATED),
        WRONG_SECRET,
        headers={
            "Authorization": f"Bearer {KEY}",  # kept with refused requests: redacted
            "Cookie": f"{COOKIE}=stolen{secrets.token_hex(12)}",
        },
    )
    assert refused.status_code == 400
    assert bridge.webhook("ep_" + "Q" * 22, body, SECRET).status_code == 404

    def status(delivery_id: int) -> str:
        return cli(env, "deliveries", "show", str(delivery_id), "--json")["status"]

    bridge.until(lambda: status(queued["id"]) == "delivered", what="the delivery")
    bridge.until(
        lambda: "401" in cli(env, "deliveries", "show", str(stale["id"])).stdout,
        what="Loops to refuse the revoked key",
    )
    cli(env, "deliveries", "list")
    cli(env, "deliveries", "show", str(stale["id"]), "--json")

    # The admin: a wrong password, then every page, and the forms that take secrets.
    assert send("POST", "/admin/login", data={"password": password[::-1]}).status_code == 401
    bridge.sign_in(password)
    accounts = {a["name"]: a["id"] for a in cli(env, "accounts", "list", "--json")}
    for path in (
        "/admin/",
        "/admin/accounts",
        *(f"/admin/accounts/{n}" for n in accounts.values()),
        "/admin/endpoints",
        f"/admin/endpoints/{acme}",
        f"/admin/endpoints/{acme}/edit",
        f"/admin/endpoints/{acme}/rejections",
        f"/admin/endpoints/{acme}/test",
        "/admin/deliveries",
        f"/admin/deliveries/{queued['id']}",
        f"/admin/deliveries/{stale['id']}",
        "/admin/endpoints/ep_nothing",
        "/admin/static/admin.css",
        "/metrics",
    ):
        assert send("GET", path).status_code in (200, 404), path
    revoked_account = f"/admin/accounts/{accounts['revoked']}"
    assert "did not work" in send("POST", f"{revoked_account}/test?from=account").text
    taken = send("POST", "/admin/accounts", data={"name": "acme", "api_key": KEY})
    assert taken.status_code == 400
    assert send("POST", "/admin/accounts", data={"name": "", "api_key": REVOKED_KEY}).is_error
    for typed in (SECOND, "sk_live_leakScenarioNotASecret9", ""):
        added = send("POST", f"/admin/endpoints/{acme}/secrets", data={"secret": typed})
        assert added.status_code == 400
    # A key already in use (acme's) is refused without showing it; a new one is taken.
    assert send("POST", f"{revoked_account}/api-key", data={"api_key": KEY}).status_code == 400
    replaced = send("POST", f"{revoked_account}/api-key", data={"api_key": REPLACING_KEY})
    assert replaced.status_code == 200
    sent = send(
        "POST",
        f"/admin/endpoints/{acme}/test",
        data={"event_type": "invoice.paid", "email": "leaks@example.com"},
    )
    assert "/admin/deliveries/" in str(sent.url)
    bridge.until(lambda: status(stale["id"]) == "delivered", what="the replaced key to work")
    cookie = bridge.client.cookies[COOKIE]
    cross_site = send("POST", "/admin/logout", headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403
    send("POST", "/admin/logout")
    bridge.client.cookies.clear()
    signed_out = send("POST", "/admin/logout", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert signed_out.status_code == 401
    bridge.close()

    # The operator: key rotation, and a wrong key or no key at all.
    cli(env, "rotate-secret-key")
    cli(env, "rotate-secret-key", "--json")
    wrong_key = cli({**env, "BRIDGE_SECRET_KEY": vault.new_key()}, "endpoints", "list", check=False)
    assert wrong_key.returncode == 1
    (tmp_path / "secret.key").rename(tmp_path / "moved.key")
    assert cli(env, "accounts", "list", check=False).returncode == 1
    (tmp_path / "moved.key").rename(tmp_path / "secret.key")
    # With BRIDGE_SECRET_KEY, rotate-secret-key shows the new key, once.
    current = (tmp_path / "secret.key").read_text().strip()
    rotated = cli({**env, "BRIDGE_SECRET_KEY": current}, "rotate-secret-key").stdout
    (new_key,) = re.findall(r"^    (\S+)$", rotated, re.MULTILINE)
    cli({**env, "BRIDGE_SECRET_KEY": f"{new_key},{current}"}, "accounts", "list", "--json")

    scanned = leaks.check()

    assert scanned.leaks == [], "\n".join(map(str, scanned.leaks))
    seen = scanned.categories()
    assert seen["CLI"] >= 20 and seen["HTTP"] >= 30 and seen["log record"] >= 1, seen
    logged = "\n".join(t.body for t in scanned.texts if t.category == "log record")
    assert '"logger": "bridge.delivery"' in logged
    shown = "\n".join(t.body for t in scanned.texts if t.category == "captured output")
    assert password in shown
    assert set(leaks.known()) >= {
        leaks.API_KEY,
        leaks.SIGNING_SECRET,
        leaks.ADMIN_PASSWORD,
        leaks.SESSION_COOKIE,
        leaks.SECRET_KEY,
    }


# -- the leak found ------------------------------------------------------------------------


def test_an_api_key_that_cannot_go_into_a_header_is_refused_without_being_echoed(tmp_path):
    env = settings_env(tmp_path)
    pasted = "loops_key_pastedTwice_1234\nloops_key_pastedTwice_5678"
    done = cli(env, "accounts", "add", "--name", "acme", "--api-key", pasted, check=False)
    assert done.returncode == 2 and "Loops API key" in done.stderr
    assert "pastedTwice" not in done.stderr
    assert cli(env, "accounts", "list", "--json") == []


def test_a_stored_key_that_cannot_be_sent_is_never_quoted(tmp_path, serve):
    """A key with a line break, stored before keys were checked for one: the HTTP library
    refuses the header and quotes it in its error, which must not reach the delivery's
    reason, the log or the admin. Only a real HTTP connection refuses such a header, so the
    worker here calls a Loops sandbox on a socket rather than through the ASGI transport."""
    stored = "loops_key_storedEarlier_0a1b\nloops_key_storedEarlier_2c3d"
    loops = serve(sandbox.create_app())
    bridge = Harness(
        tmp_path,
        worker=False,
        BRIDGE_LOOPS_API_URL=f"{loops.url}/api/v1",
        BRIDGE_RETRY_BASE_SECONDS="30",
    )
    worker = Worker(bridge.engine, bridge.settings, intervals=FAST, poll_seconds=0.02)
    working = bridge.loop.create_task(worker.run())
    try:
        with Session(bridge.engine) as session:
            session.add(Account(name="acme", api_key=stored, created_at=time.time()))
            session.commit()
        endpoint = bridge.cli(
            "endpoints", "create", "--name", "e", "--account", "acme",
            "--events", "invoice.paid", "--signing-secret", SECRET, "--json",
        )["id"]  # fmt: skip
        body = fixture_bytes(INVOICE_PAID)
        queued = bridge.webhook(endpoint, body, SECRET).json()

        def reason() -> str:
            shown = bridge.cli("deliveries", "show", str(queued["id"]), "--json")
            return shown["reason"] or ""

        said = bridge.until(reason, what="the delivery to fail")
        assert "Loops API key" in said and "storedEarlier" not in said
        bridge.sign_in()
        assert "storedEarlier" not in bridge.get("/admin/accounts").text
    finally:
        worker.stop()
        bridge.run(working)
        bridge.close()
    scanned = leaks.check()
    logged = "\n".join(t.body for t in scanned.texts if t.category == "log record")
    assert '"logger": "bridge.delivery"' in logged and "storedEarlier" not in logged
    assert scanned.leaks == []
