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
from urllib.parse import quote

import httpx
import pytest
from sqlmodel import Session

from bridge import db, registry, vault
from bridge.admin.auth import COOKIE
from bridge.models import Account
from tests import leaks
from tests.helpers import fixture_bytes, signed_headers
from tests.servers import Bridge, Sandbox, bridge_env, cli, wait_until

pytest_plugins = ["pytester"]

KEY = "loops_key_leakScenario_7c1e9a3f5b"
REVOKED_KEY = "loops_key_leakRevoked_0d2b4f6a8c"
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


def test_a_leak_fails_the_session_with_a_report_that_never_shows_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
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
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2)  # every test passed; the session failed
    result.stdout.fnmatch_lines(
        [
            "*= secrets leaked =*",
            "test_inner.py::test_a_log_line_with_a_secret",
            f"  the whole value: signing secret …{leaked[-4:]}, 38 characters*",
            "  in a made-up log:",
            "    refused: no signature matches [[]secret]",
            "leak check: 1 leaks in *",
        ]
    )
    assert leaked not in result.stdout.str() + result.stderr.str()


# -- a whole scenario ------------------------------------------------------------------------


def test_a_whole_scenario_shows_no_secret_anywhere(tmp_path: Path):
    """Stripe, the CLI, the admin and the operator's mistakes, one after the other, with JSON
    logs; then every text they produced is searched."""
    env = bridge_env(tmp_path, BRIDGE_LOG_FORMAT="json", BRIDGE_RETRY_BASE_SECONDS="30")
    del env["BRIDGE_ADMIN_PASSWORD"]  # the first start generates one, and shows it once
    sandbox = Sandbox(env, "--api-key", KEY)  # a Loops that refuses every other key
    env["BRIDGE_LOOPS_API_URL"] = sandbox.api_url

    # The CLI: secrets as arguments and on stdin, listed, and mistaken.
    cli(env, "accounts", "add", "--name", "acme", "--api-key", "-", stdin=KEY + "\n")
    cli(env, "accounts", "add", "--name", "revoked", "--api-key", REVOKED_KEY)
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

    # Stripe: signed with either secret, with a wrong one, and sent where nothing is.
    bridge = Bridge(env)
    (password,) = GENERATED.findall(bridge.log())
    body = fixture_bytes(INVOICE_PAID)
    queued = bridge.post(acme, body, signed_headers(body, SECOND)).json()
    assert queued["status"] == "queued"
    stale = bridge.post(revoked, body, signed_headers(body, SECRET)).json()
    refused = bridge.post(
        acme,
        fixture_bytes(CUSTOMER_CREATED),
        {
            **signed_headers(fixture_bytes(CUSTOMER_CREATED), WRONG_SECRET),
            "Authorization": f"Bearer {KEY}",  # kept with refused requests: redacted
            "Cookie": f"{COOKIE}=stolen{secrets.token_hex(12)}",
        },
    )
    assert refused.status_code == 400
    assert bridge.post("ep_" + "Q" * 22, body, signed_headers(body, SECRET)).status_code == 404

    def status(delivery_id: int) -> str:
        return cli(env, "deliveries", "show", str(delivery_id), "--json")["status"]

    wait_until(lambda: status(queued["id"]) == "delivered", what="the delivery")
    wait_until(
        lambda: "401" in (cli(env, "deliveries", "show", str(stale["id"]))).stdout,
        what="Loops to refuse the revoked key",
    )
    cli(env, "deliveries", "list")
    cli(env, "deliveries", "show", str(stale["id"]), "--json")

    # The admin: a wrong password, then every page, and the forms that take secrets.
    wrong = httpx.post(f"{bridge.url}/admin/login", data={"password": password[::-1]})
    assert wrong.status_code == 401
    admin = bridge.admin(password)
    admin.follow_redirects = True
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
        assert admin.get(path).status_code in (200, 404), path
    revoked_account = f"/admin/accounts/{accounts['revoked']}"
    assert "did not work" in admin.post(f"{revoked_account}/test?from=account").text
    assert admin.post("/admin/accounts", data={"name": "acme", "api_key": KEY}).status_code == 400
    assert admin.post("/admin/accounts", data={"name": "", "api_key": REVOKED_KEY}).is_error
    for typed in (SECOND, "sk_live_leakScenarioNotASecret9", ""):
        added = admin.post(f"/admin/endpoints/{acme}/secrets", data={"secret": typed})
        assert added.status_code == 400
    assert admin.post(f"{revoked_account}/api-key", data={"api_key": KEY}).status_code == 200
    sent = admin.post(
        f"/admin/endpoints/{acme}/test",
        data={"event_type": "invoice.paid", "email": "leaks@example.com"},
    )
    assert "/admin/deliveries/" in str(sent.url)
    wait_until(lambda: status(stale["id"]) == "delivered", what="the replaced key to work")
    cookie = admin.cookies[COOKIE]
    cross_site = admin.post("/admin/logout", headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403
    admin.post("/admin/logout")
    admin.close()
    signed_out = httpx.post(f"{bridge.url}/admin/logout", cookies={COOKIE: cookie})
    assert signed_out.status_code == 401
    assert bridge.stop() in (0, -15)

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
    sandbox.stop()

    scanned = leaks.check()

    assert scanned.leaks == [], "\n".join(map(str, scanned.leaks))
    seen = scanned.categories()
    assert seen["CLI"] >= 20 and seen["HTTP"] >= 30 and seen["log file"] >= 1, seen
    server_log = "\n".join(t.body for t in scanned.texts if t.category == "log file")
    assert '"logger": "bridge.delivery"' in server_log and password in server_log
    assert set(leaks.known()) >= {
        leaks.API_KEY,
        leaks.SIGNING_SECRET,
        leaks.ADMIN_PASSWORD,
        leaks.SESSION_COOKIE,
        leaks.SECRET_KEY,
    }


# -- the leak found ------------------------------------------------------------------------


def test_an_api_key_that_cannot_go_into_a_header_is_refused_without_being_echoed(env):
    pasted = "loops_key_pastedTwice_1234\nloops_key_pastedTwice_5678"
    done = cli(env, "accounts", "add", "--name", "acme", "--api-key", pasted, check=False)
    assert done.returncode == 2 and "Loops API key" in done.stderr
    assert "pastedTwice" not in done.stderr
    assert cli(env, "accounts", "list", "--json") == []


def test_a_stored_key_that_cannot_be_sent_is_never_quoted(env, sandbox: Sandbox):
    """A key with a line break, stored before keys were checked for one: the HTTP library
    refuses the header and quotes it in its error, which must not reach the delivery's
    reason, the log or the admin."""
    stored = "loops_key_storedEarlier_0a1b\nloops_key_storedEarlier_2c3d"
    engine = db.connect(env["BRIDGE_DATABASE_URL"])
    with Session(engine) as session:
        session.add(Account(name="acme", api_key=stored, created_at=time.time()))
        session.commit()
    engine.dispose()
    endpoint = cli(
        env, "endpoints", "create", "--name", "e", "--account", "acme",
        "--events", "invoice.paid", "--signing-secret", SECRET, "--json",
    )["id"]  # fmt: skip
    env["BRIDGE_RETRY_BASE_SECONDS"] = "30"
    bridge = Bridge(env)
    body = fixture_bytes(INVOICE_PAID)
    queued = bridge.post(endpoint, body, signed_headers(body, SECRET)).json()

    def reason() -> str:
        shown = cli(env, "deliveries", "show", str(queued["id"]), "--json")
        return shown["reason"] or ""

    said = wait_until(reason, what="the delivery to fail")
    assert "Loops API key" in said and "storedEarlier" not in said
    admin = bridge.admin()
    page = admin.get("/admin/accounts").text
    admin.close()
    assert "storedEarlier" not in page
    assert bridge.stop() in (0, -15)
    assert "storedEarlier" not in bridge.log()
    assert leaks.check().leaks == []
