"""The ``loops-bridge`` command as a user runs it: a fresh database, JSON for scripts,
clear errors, and secrets that never come back out. Each command runs in this process
(``bridge.cli.main``, see tests/harness.py), with its own environment."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bridge import db, registry, sandbox
from tests.harness import Harness, Served, settings_env, stripe_event
from tests.harness import run_cli as cli
from tests.helpers import fixture_bytes, stored_delivery
from tests.servers import free_port

KEY = "loops_live_key_9f8e7d6c5b4a"
STATE_SECRET = "whsec_cliAccountStateSecretZZZZZZZZZZ"
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
SECRET = "whsec_cliTestSecretDDDDDDDDDDDDDDDD"


def test_endpoint_url_and_id_for_scripts(tmp_path):
    env = settings_env(tmp_path)
    env["BRIDGE_PUBLIC_URL"] = "https://hooks.example.com"
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    created = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "Stripe live",
        "--account",
        "acme",
        "--provider",
        "stripe",
        "--events",
        "invoice.paid,customer.created",
        "--user-group",
        "customers",
        "--loops-event",
        "successfulPayment",
        "--json",
    )
    assert created["url"] == f"https://hooks.example.com/webhooks/{created['id']}"
    assert len(created["id"]) >= 22  # 128 random bits, url-safe
    assert created["event_types"] == ["customer.created", "invoice.paid"]
    assert created["waiting_for_secret"] is True
    assert created["warnings"] == []  # a public HTTPS address: Stripe can send to it
    (listed,) = cli(env, "endpoints", "list", "--json")
    assert listed["id"] == created["id"]


def test_secrets_are_only_ever_shown_masked(tmp_path):
    env = settings_env(tmp_path)
    added = cli(
        env,
        "accounts",
        "add",
        "--name",
        "acme",
        "--api-key",
        "-",
        "--no-check",
        "--json",
        stdin=KEY,
    )
    assert added["api_key"] == "loops_…5b4a"
    created = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "x",
        "--connection",  # the option's first name, kept beside --account for scripts
        "acme",
        "--events",
        "invoice.paid",
        "--signing-secret",
        SECRET,
        "--json",
    )
    second = "whsec_secondSecretEEEEEEEEEEEEEEEE"
    cli(env, "endpoints", "add-secret", created["id"], second)
    outputs = [
        cli(env, "endpoints", "list").stdout,
        cli(env, "accounts", "list").stdout,
        str(cli(env, "endpoints", "list", "--json")),
    ]
    for output in outputs:
        assert KEY not in output and SECRET not in output and second not in output
    (listed,) = cli(env, "endpoints", "list", "--json")
    assert listed["signing_secrets"] == ["whsec_…DDDD", "whsec_…EEEE"]
    cli(env, "endpoints", "remove-secret", created["id"], SECRET)
    (listed,) = cli(env, "endpoints", "list", "--json")
    assert listed["signing_secrets"] == ["whsec_…EEEE"]


def test_mistakes_get_a_reason_and_change_nothing(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    done = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "x",
        "--account",
        "acme",
        "--events",
        "invoice.paid,charge.refunded",
        check=False,
    )
    assert done.returncode == 2
    assert "charge.refunded" in done.stderr and "Supported:" in done.stderr
    assert "Traceback" not in done.stderr
    done = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "x",
        "--account",
        "nobody",
        "--events",
        "invoice.paid",
        check=False,
    )
    assert done.returncode == 2 and "No Loops account named 'nobody'" in done.stderr
    done = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "x",
        "--account",
        "acme",
        "--events",
        "invoice.paid",
        "--signing-secret",
        "sk_live_oops",
        check=False,
    )
    assert done.returncode == 2 and "whsec_" in done.stderr and "sk_live_oops" not in done.stderr
    assert cli(env, "endpoints", "list", "--json") == []
    again = cli(
        env, "accounts", "add", "--name", "acme", "--api-key", "k2", "--no-check", check=False
    )
    assert again.returncode == 2 and "already exists" in again.stderr


def test_any_command_creates_the_schema_on_a_fresh_database(tmp_path):
    env = settings_env(tmp_path)
    assert cli(env, "deliveries", "list", "--json") == []
    tables = {
        row[0]
        for row in sqlite3.connect(tmp_path / "bridge.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"accounts", "endpoints", "secrets", "deliveries", "loops_calls"} <= tables
    (stamped,) = sqlite3.connect(tmp_path / "bridge.db").execute(
        "SELECT version_num FROM alembic_version"
    )
    assert stamped == (db.head(),)  # so `loops-bridge migrate` knows where it starts


def test_bad_setting_names_the_variable(tmp_path):
    env = settings_env(tmp_path)
    env["BRIDGE_MAX_BODY_BYTES"] = "lots"
    done = cli(env, "endpoints", "list", check=False)
    assert done.returncode == 2
    assert "BRIDGE_MAX_BODY_BYTES='lots' is not valid" in done.stderr


def test_endpoint_ids_can_always_be_typed_as_arguments():
    from bridge.registry import new_endpoint_id

    ids = [new_endpoint_id() for _ in range(2000)]
    assert not any(i.startswith("-") for i in ids)  # a bare base64url id would, 1 in 64
    assert len(set(ids)) == len(ids)


def test_accounts_set_changes_the_rate_limit_and_replaces_the_key(tmp_path):
    env = settings_env(tmp_path)
    # "connections" is the command's first name, kept for scripts that use it.
    cli(
        env, "connections", "add", "--name", "acme", "--api-key", "loops_key_old_1111", "--no-check"
    )
    changed = cli(env, "accounts", "set", "acme", "--rate-limit", "25", "--json")
    assert changed["rate_limit"] == 25
    replaced = cli(
        env,
        "connections",
        "set",
        "acme",
        "--api-key",
        "-",
        "--no-check",
        stdin="loops_key_new_2222\n",
    )
    assert "…2222" in replaced.stdout and "loops_key_new_2222" not in replaced.stdout
    (listed,) = cli(env, "accounts", "list", "--json")
    assert listed["rate_limit"] == 25 and listed["api_key"].endswith("2222")
    back = cli(env, "accounts", "set", "acme", "--rate-limit", "default", "--json")
    assert back["rate_limit"] is None
    wrong = cli(env, "accounts", "set", "acme", "--rate-limit", "5000", check=False)
    assert wrong.returncode == 2 and "1000" in wrong.stderr
    assert "or --rate-limit default for the default" in wrong.stderr  # not a form's "blank"
    assert "blank" not in wrong.stderr
    missing = cli(env, "accounts", "set", "nobody", "--rate-limit", "5", check=False)
    assert missing.returncode == 2 and "No Loops account named 'nobody'" in missing.stderr


def test_endpoint_options_of_issue_10_are_checked_and_listed(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    create = ["endpoints", "create", "--name", "Live", "--account", "acme"]
    events = ["--events", "customer.created,invoice.paid,invoice.payment_failed"]
    stray = cli(env, *create, *events, "--loops-events", "customer.deleted=bye", check=False)
    assert stray.returncode == 2
    assert "type(s) the endpoint does not accept: customer.deleted" in stray.stderr
    assert "Accepted: customer.created, invoice.paid, invoice.payment_failed" in stray.stderr
    unknown = cli(env, *create, *events, "--on-delete", "archive", check=False)
    assert unknown.returncode == 2
    assert "'archive' is not one of: unsubscribe, delete, ignore" in unknown.stderr
    pairs = cli(env, *create, *events, "--loops-events", "invoice.paid", check=False)
    assert pairs.returncode == 2 and "TYPE=EVENT" in pairs.stderr
    created = cli(
        env, *create, *events,
        "--loops-events", "customer.created=newStripeCustomer,invoice.payment_failed=failedPayment",
        "--mailing-lists", "cm1list0001,cm1list0002", "--on-delete", "delete", "--json",
    )  # fmt: skip
    assert created["loops_events"] == {
        "customer.created": "newStripeCustomer",
        "invoice.payment_failed": "failedPayment",
    }
    assert (created["mailing_lists"], created["on_delete"]) == (
        ["cm1list0001", "cm1list0002"],
        "delete",
    )
    (listed,) = cli(env, "endpoints", "list", "--json")
    assert listed["loops_events"] == created["loops_events"]
    text = cli(env, "endpoints", "list").stdout
    assert "customer.created → newStripeCustomer" in text and "on delete:      delete" in text


def test_a_supabase_endpoint_gets_a_secret_made_for_it_shown_once(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    created = cli(
        env, "endpoints", "create", "--name", "Users", "--account", "acme",
        "--provider", "supabase", "--events", "INSERT,DELETE", "--json",
    )  # fmt: skip
    made = created["signing_secret"]
    (hint,) = created["signing_secrets"]
    assert len(made) >= 32 and hint.endswith(f"…{made[-4:]}") and made not in hint
    listed = cli(env, "endpoints", "list").stdout + str(cli(env, "endpoints", "list", "--json"))
    assert made not in listed  # only its hint, from now on


def test_an_api_key_is_one_accounts_only(tmp_path):
    # Two names for one key would each get a pace, and together pass Loops' limit.
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    twice = cli(
        env,
        "accounts",
        "add",
        "--name",
        "acme-eu",
        "--api-key",
        f" {KEY} ",
        "--no-check",
        check=False,
    )
    assert twice.returncode == 2
    assert "already the key of the Loops account 'acme'" in twice.stderr
    assert KEY not in twice.stderr
    cli(env, "accounts", "add", "--name", "beta", "--api-key", "lb_beta_live_5555", "--no-check")
    taken = cli(env, "accounts", "set", "beta", "--api-key", KEY, check=False)
    assert taken.returncode == 2 and "'acme'" in taken.stderr
    assert [a["name"] for a in cli(env, "accounts", "list", "--json")] == ["acme", "beta"]
    cli(
        env, "accounts", "set", "acme", "--api-key", KEY, "--no-check"
    )  # its own key again is no change


@pytest.fixture
def loops_url() -> Iterator[str]:
    """The Loops sandbox on loopback, taking only KEY: the Loops the CLI asks about keys."""
    served = Served(sandbox.create_app([KEY]))
    yield f"{served.url}/api/v1"
    served.stop()


def test_a_key_is_checked_with_loops_when_added_or_replaced(tmp_path, loops_url):
    env = settings_env(tmp_path, BRIDGE_LOOPS_API_URL=loops_url)
    add = ["accounts", "add", "--name", "acme", "--api-key"]
    wrong = cli(env, *add, "wrong-key-000", check=False)
    assert wrong.returncode == 2
    assert "Loops refused this API key" in wrong.stderr and "Settings → API" in wrong.stderr
    assert "--no-check" not in wrong.stderr  # a refused key is not to be saved anyway
    assert cli(env, "accounts", "list", "--json") == []
    cli(env, *add, KEY)
    replaced = cli(env, "accounts", "set", "acme", "--api-key", "wrong-key-111", check=False)
    assert replaced.returncode == 2 and "Loops refused this API key" in replaced.stderr
    (listed,) = cli(env, "accounts", "list", "--json")
    assert listed["api_key"] == registry.mask(KEY)

    # No Loops to ask (http://loops.test answers nobody): refused unless --no-check.
    offline = settings_env(tmp_path)
    beta = ["accounts", "add", "--name", "beta", "--api-key", "-"]
    unchecked = cli(offline, *beta, check=False, stdin="loops_key_offline_7777")
    assert unchecked.returncode == 2
    assert "could not be checked" in unchecked.stderr and "add --no-check" in unchecked.stderr
    cli(offline, *beta, "--no-check", stdin="loops_key_offline_7777")
    assert [a["name"] for a in cli(offline, "accounts", "list", "--json")] == ["acme", "beta"]


def test_endpoints_create_warns_when_the_public_url_is_one_stripe_cannot_reach(tmp_path):
    env = settings_env(tmp_path, BRIDGE_PUBLIC_URL="http://127.0.0.1:8000")
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    create = ["endpoints", "create", "--account", "acme", "--events", "invoice.paid"]
    done = cli(env, *create, "--name", "Local")
    assert "127.0.0.1 is this machine itself (loopback)" in done.stderr
    assert "plain http" in done.stderr and "public HTTPS address" in done.stderr
    assert "set BRIDGE_PUBLIC_URL" in done.stderr
    url = "http://127.0.0.1:8000/webhooks/ep_"
    assert f"stripe listen --forward-to {url}" in done.stderr and url in done.stdout
    (warning,) = cli(env, *create, "--name", "Script", "--json")["warnings"]
    assert "BRIDGE_PUBLIC_URL is http://127.0.0.1:8000: " in warning


def test_the_default_database_is_the_users_own_from_any_folder(tmp_path, monkeypatch):
    env = settings_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "share"))  # Linux's data folder
    del env["BRIDGE_DATABASE_URL"]
    database = tmp_path / "share" / "loops-bridge" / "bridge.db"
    for folder in ("project", "elsewhere"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "project")
    first = cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    assert f"Created the database {database} " in first.stderr
    monkeypatch.chdir(tmp_path / "elsewhere")
    listed = cli(env, "accounts", "list")
    assert "acme" in listed.stdout and "Created" not in listed.stderr
    assert (database.parent / "secret.key").exists()
    assert not (tmp_path / "project" / "data").exists()
    assert not (tmp_path / "elsewhere" / "data").exists()


def test_output_into_a_reader_that_stopped_reading_ends_quietly(tmp_path):
    read, write = os.pipe()
    os.close(read)  # as `| head` does once it has read its fill
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "settings"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **settings_env(tmp_path)},
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 1


def test_settings_and_an_empty_filtered_log_for_scripts_and_people(tmp_path):
    env = settings_env(
        tmp_path, BRIDGE_ALERT_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/x1"
    )
    rows = {r["name"]: r["value"] for r in cli(env, "settings", "--json")}
    assert rows["BRIDGE_ADMIN_PASSWORD"] == rows["BRIDGE_ALERT_WEBHOOK_URL"] == "(set, not shown)"
    assert rows["BRIDGE_PUBLIC_URL"] == "http://bridge.test"
    assert cli(env, "deliveries", "list").stdout == "No deliveries yet.\n"
    failed = cli(env, "deliveries", "list", "--status", "failed").stdout
    assert failed == "No failed deliveries.\n"


def test_an_endpoint_is_shown_edited_paused_resumed_and_deleted(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    create = ["endpoints", "create", "--name", "Live", "--account", "acme"]
    endpoint = cli(env, *create, "--events", "invoice.paid,customer.created", "--json")["id"]
    assert cli(env, "endpoints", "show", endpoint, "--json")["name"] == "Live"

    edit = ["endpoints", "edit", endpoint]
    edited = cli(env, *edit, "--name", "Stripe live", "--loops-events", "invoice.paid=paid",
                 "--no-sync-names", "--json")  # fmt: skip
    assert (edited["name"], edited["loops_events"]) == ("Stripe live", {"invoice.paid": "paid"})
    assert edited["sync_names"] is False and sorted(edited["event_types"]) == [
        "customer.created",
        "invoice.paid",
    ]  # what was not given is kept
    stray = cli(env, *edit, "--loops-events", "customer.deleted=bye", check=False)
    assert stray.returncode == 2 and "does not accept: customer.deleted" in stray.stderr

    paused = cli(env, "endpoints", "pause", endpoint)
    assert "deliveries wait until `loops-bridge endpoints resume" in paused.stdout
    assert cli(env, "endpoints", "show", endpoint, "--json")["paused"] is True
    assert cli(env, "endpoints", "resume", endpoint, "--json")["paused"] is False

    unconfirmed = cli(env, "endpoints", "delete", endpoint, check=False)
    assert unconfirmed.returncode == 2 and "Add --yes to go ahead" in unconfirmed.stderr
    assert (
        "Deleted endpoint 'Stripe live'"
        in cli(env, "endpoints", "delete", endpoint, "--yes").stdout
    )
    gone = cli(env, "endpoints", "show", endpoint, check=False)
    assert gone.returncode == 2 and cli(env, "endpoints", "list", "--json") == []


def test_an_account_is_tested_with_loops_and_removed_once_unused(tmp_path, loops_url):
    env = settings_env(tmp_path, BRIDGE_LOOPS_API_URL=loops_url)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY)
    tested = cli(env, "accounts", "test", "acme")
    assert tested.stdout.strip() == f"Loops takes the key of 'acme' ({registry.mask(KEY)})."
    cli(env, "accounts", "add", "--name", "old", "--api-key", "loops_key_old_4444", "--no-check")
    refused = cli(env, "accounts", "test", "old", "--json", check=False)
    assert refused.returncode == 1
    endpoint = cli(env, "endpoints", "create", "--name", "Live", "--account", "acme",
                   "--events", "invoice.paid", "--json")["id"]  # fmt: skip
    in_use = cli(env, "accounts", "remove", "acme", "--yes", check=False)
    assert in_use.returncode == 2 and "used by endpoint(s) Live" in in_use.stderr
    cli(env, "endpoints", "delete", endpoint, "--yes")
    assert cli(env, "accounts", "remove", "acme", check=False).returncode == 2  # no --yes
    assert cli(env, "accounts", "remove", "acme", "--yes", "--json") == {
        "name": "acme",
        "removed": True,
    }
    assert [a["name"] for a in cli(env, "accounts", "list", "--json")] == ["old"]


def test_a_delivery_is_shown_whole_retried_and_sent_again(harness):
    secret = "whsec_cliDeliveriesSecretQQQQQQQQQQQ"
    endpoint = harness.endpoint(loops_event="successfulPayment", secret=secret)
    body = stripe_event(INVOICE_PAID, "evt_cli_again", customer_email="again@example.com")
    delivery_id = harness.webhook(endpoint, body, secret).json()["id"]
    harness.settled(1)

    unconfirmed = harness.cli("deliveries", "send-again", str(delivery_id), check=False)
    assert unconfirmed.returncode == 2 and "Add --yes" in unconfirmed.stderr
    harness.cli("deliveries", "send-again", str(delivery_id), "--yes")
    harness.until(lambda: len(harness.loops_get("events")) == 2, what="the event sent again")
    harness.settled(1)
    shown = harness.cli("deliveries", "show", str(delivery_id), "--json")
    assert shown["email"] == "again@example.com" and shown["event"]["id"] == "evt_cli_again"
    (earlier,) = shown["earlier_outcomes"]
    assert earlier.startswith("delivered at ") and "after 1 attempt:" in earlier
    text = harness.cli("deliveries", "show", str(delivery_id)).stdout
    assert '"id": "evt_cli_again"' in text and "event, as received:" in text
    assert re.search(r"received_at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)

    failed = stored_delivery(harness.engine, endpoint, status="failed", reason="Loops said 400")
    wrong = harness.cli("deliveries", "retry", str(delivery_id), check=False)
    assert wrong.returncode == 2 and "only a failed or dead delivery" in wrong.stderr
    assert harness.cli("deliveries", "retry", str(failed), "--json")["status"] == "queued"


def test_a_key_typed_at_a_terminal_is_not_shown(tmp_path):
    # A real pseudo-terminal as the command's own: what the person sees is what it echoes.
    import pty

    env = {**os.environ, **settings_env(tmp_path)}
    typed = "loops_key_typed_unseen_8181"
    pid, terminal = pty.fork()
    if pid == 0:  # the child: loops-bridge on the terminal
        argv = [sys.executable, "-m", "bridge.cli", "accounts", "add", "--name", "acme",
                "--api-key", "-", "--no-check"]  # fmt: skip
        os.execve(sys.executable, argv, env)
    seen = b""
    while b"not shown" not in seen:
        seen += os.read(terminal, 1024)
    os.write(terminal, typed.encode() + b"\n")
    while True:
        try:
            chunk = os.read(terminal, 1024)
        except OSError:  # the child ended: the terminal is closed
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    shown = seen.decode(errors="replace")
    assert "Added Loops account 'acme'" in shown
    assert typed not in shown and typed[-12:] not in shown  # not echoed, only its hint
    (listed,) = cli(settings_env(tmp_path), "accounts", "list", "--json")
    assert listed["api_key"] == registry.mask(typed)


def test_delivery_ids_and_limits_out_of_a_databases_range_are_refused_plainly(offline):
    endpoint = offline.endpoint()
    older = stored_delivery(offline.engine, endpoint, status="delivered")
    newest = stored_delivery(offline.engine, endpoint, status="failed")
    huge = "99999999999999999999999"  # past what SQLite or PostgreSQL can hold
    for args in (
        ("deliveries", "show", huge),
        ("deliveries", "retry", huge),
        ("deliveries", "send-again", huge, "--yes"),
        ("deliveries", "show", str(2**31)),  # past PostgreSQL's INTEGER: no row has it
        ("deliveries", "list", "--limit", huge),
        ("deliveries", "list", "--limit", "0"),  # not "No deliveries yet."
        ("deliveries", "list", "--limit", "-5"),  # not every delivery
    ):
        done = offline.cli(*args, check=False)
        assert done.returncode == 2 and done.stdout == "", args
        assert "is not a whole number from 1 to 2,147,483,647" in done.stderr, args
        assert "Traceback" not in done.stderr
    missing = offline.cli("deliveries", "show", str(2**31 - 1), check=False)
    assert missing.returncode == 2 and "No delivery 2147483647;" in missing.stderr
    assert [d["id"] for d in offline.cli("deliveries", "list", "--limit", "1", "--json")] == [
        newest
    ]
    assert len(offline.cli("deliveries", "list", "--limit", "2", "--json")) == 2
    assert offline.cli("deliveries", "show", str(older), "--json")["status"] == "delivered"


def test_deliveries_of_an_endpoint_that_does_not_exist_are_not_said_to_be_none(offline):
    endpoint = offline.endpoint()
    stored_delivery(offline.engine, endpoint)
    unknown = offline.cli("deliveries", "list", "--endpoint", "ep_nope", check=False)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "No endpoint with id 'ep_nope'; see loops-bridge endpoints list." in unknown.stderr
    assert len(offline.cli("deliveries", "list", "--endpoint", endpoint, "--json")) == 1
    none = offline.cli("deliveries", "list", "--endpoint", endpoint, "--status", "dead")
    assert none.stdout == f"No dead deliveries for endpoint {endpoint}.\n"


def test_a_paused_endpoint_is_said_to_be_paused_in_show_and_list(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    create = ["endpoints", "create", "--account", "acme", "--events", "invoice.paid", "--json"]
    paused = cli(env, *create, "--name", "Held")["id"]
    active = cli(env, *create, "--name", "Going")["id"]
    cli(env, "endpoints", "pause", paused)

    shown = cli(env, "endpoints", "show", paused).stdout
    assert shown.splitlines()[0].endswith("  PAUSED")
    assert (
        "  state:          paused: webhooks are taken and stored, nothing is sent to Loops "
        f"until `loops-bridge endpoints resume {paused}`"
    ) in shown
    held, going = cli(env, "endpoints", "list").stdout.split("\n\n")
    assert held.startswith("Held  [stripe → Loops account acme]  PAUSED")
    assert "  state:          paused: " in held
    assert "PAUSED" not in going and "  state:          active" in going
    assert active in going

    cli(env, "endpoints", "resume", paused)
    shown = cli(env, "endpoints", "show", paused).stdout
    assert "PAUSED" not in shown and "  state:          active" in shown


def test_removing_a_stripe_key_says_when_there_was_none(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    endpoint = cli(env, "endpoints", "create", "--name", "Live", "--account", "acme",
                   "--events", "invoice.paid", "--json")["id"]  # fmt: skip
    none = cli(env, "endpoints", "remove-stripe-key", endpoint)
    assert (
        none.stdout == f"Endpoint {endpoint} has no Stripe API key: there was nothing to remove.\n"
    )
    assert cli(env, "endpoints", "remove-stripe-key", endpoint, "--json")["removed"] is False

    key = "rk_test_cliRemovedKey0000aa11"
    cli(env, "endpoints", "set-stripe-key", endpoint, "-", "--no-check", stdin=key)
    removed = cli(env, "endpoints", "remove-stripe-key", endpoint).stdout
    assert removed.startswith("Removed the Stripe API key rk_test_…aa11: ")
    assert "Delete the key in Stripe too" in removed
    assert cli(env, "endpoints", "show", endpoint, "--json")["stripe_api_key"] is None
    again = cli(env, "endpoints", "remove-stripe-key", endpoint, "--json")
    assert again == {"id": endpoint, "stripe_api_key": None, "removed": False}


def three_types_two_loops_events(env: dict[str, str]) -> str:
    """An endpoint accepting customer.created and two invoice types, each invoice type
    with a Loops event; its id."""
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    return cli(
        env, "endpoints", "create", "--name", "Live", "--account", "acme",
        "--events", "customer.created,invoice.paid,invoice.payment_failed",
        "--loops-events", "invoice.paid=paid,invoice.payment_failed=failed", "--json",
    )["id"]  # fmt: skip


def test_an_unknown_event_type_is_the_only_problem_named(tmp_path):
    env = settings_env(tmp_path)
    endpoint = three_types_two_loops_events(env)
    edit = ["endpoints", "edit", endpoint, "--events", "customer.created,bogus.event"]
    done = cli(env, *edit, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: Stripe event type(s) not supported: bogus.event. ")
    assert "mapped" not in done.stderr and "Accepted" not in done.stderr
    assert cli(env, "endpoints", "show", endpoint, "--json")["event_types"] == [
        "customer.created",
        "invoice.paid",
        "invoice.payment_failed",
    ]


def test_narrowing_an_endpoints_types_takes_their_loops_events_with_them(tmp_path):
    env = settings_env(tmp_path)
    endpoint = three_types_two_loops_events(env)
    done = cli(env, "endpoints", "edit", endpoint, "--events", "customer.created, invoice.paid")
    assert done.stdout.rstrip().endswith(
        "Saved. The Loops events of the types it no longer accepts are gone: "
        "invoice.payment_failed → failed."
    )
    shown = cli(env, "endpoints", "show", endpoint, "--json")
    assert shown["event_types"] == ["customer.created", "invoice.paid"]
    assert shown["loops_events"] == {"invoice.paid": "paid"}
    # Given together, the mapping is taken as given: a type it names must be accepted.
    refused = cli(
        env, "endpoints", "edit", endpoint, "--events", "customer.created",
        "--loops-events", "invoice.paid=paid", check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "invoice.paid" in refused.stderr


def test_accounts_list_says_how_each_account_is_doing(tmp_path):
    with Harness(tmp_path) as h:
        endpoint = h.endpoint("customer.created", secret=STATE_SECRET)
        listed = h.cli("accounts", "list").stdout
        assert listed.split("\t")[2:] == ["healthy", "nothing queued\n"]
        h.fault(status=401)  # Loops refuses the account's key
        h.webhook(endpoint, fixture_bytes("constructed/customer.created.event.json"), STATE_SECRET)
        h.until(lambda: h.deliveries()[0]["reason"], what="the refused key to be recorded")
        (row,) = h.cli("accounts", "list", "--json")
        assert (row["state"], row["queued"]) == ("key", 1)
        assert row["since"].endswith("Z") and row["problem"].startswith("Loops answered 401")
        line = h.cli("accounts", "list").stdout
        assert f"\tkey refused since {row['since']}: Loops answered 401" in line
        assert line.endswith("\t1 queued\n")


def test_testing_a_saved_key_while_loops_is_out_of_reach_says_to_try_again(tmp_path):
    env = settings_env(tmp_path, BRIDGE_LOOPS_API_URL=f"http://127.0.0.1:{free_port()}/api/v1")
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY, "--no-check")
    tested = cli(env, "accounts", "test", "acme", check=False)
    assert tested.returncode == 1
    assert tested.stdout.startswith("The key could not be checked with Loops (")
    assert tested.stdout.rstrip().endswith("Try again once Loops answers.")  # it is saved
