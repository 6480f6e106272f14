"""The ``loops-bridge`` command as a user runs it: a fresh database, JSON for scripts,
clear errors, and secrets that never come back out. Each command runs in this process
(``bridge.cli.main``, see tests/harness.py), with its own environment."""

from __future__ import annotations

import sqlite3

from bridge import db
from tests.harness import run_cli as cli
from tests.harness import settings_env

KEY = "loops_live_key_9f8e7d6c5b4a"
SECRET = "whsec_cliTestSecretDDDDDDDDDDDDDDDD"


def test_endpoint_url_and_id_for_scripts(tmp_path):
    env = settings_env(tmp_path)
    env["BRIDGE_PUBLIC_URL"] = "https://hooks.example.com"
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY)
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
    (listed,) = cli(env, "endpoints", "list", "--json")
    assert listed["id"] == created["id"]


def test_secrets_are_only_ever_shown_masked(tmp_path):
    env = settings_env(tmp_path)
    added = cli(env, "accounts", "add", "--name", "acme", "--api-key", "-", "--json", stdin=KEY)
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
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY)
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
    again = cli(env, "accounts", "add", "--name", "acme", "--api-key", "k2", check=False)
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
    cli(env, "connections", "add", "--name", "acme", "--api-key", "loops_key_old_1111")
    changed = cli(env, "accounts", "set", "acme", "--rate-limit", "25", "--json")
    assert changed["rate_limit"] == 25
    replaced = cli(
        env, "connections", "set", "acme", "--api-key", "-", stdin="loops_key_new_2222\n"
    )
    assert "…2222" in replaced.stdout and "loops_key_new_2222" not in replaced.stdout
    (listed,) = cli(env, "accounts", "list", "--json")
    assert listed["rate_limit"] == 25 and listed["api_key"].endswith("2222")
    back = cli(env, "accounts", "set", "acme", "--rate-limit", "default", "--json")
    assert back["rate_limit"] is None
    wrong = cli(env, "accounts", "set", "acme", "--rate-limit", "5000", check=False)
    assert wrong.returncode == 2 and "1000" in wrong.stderr
    missing = cli(env, "accounts", "set", "nobody", "--rate-limit", "5", check=False)
    assert missing.returncode == 2 and "No Loops account named 'nobody'" in missing.stderr


def test_endpoint_options_of_issue_10_are_checked_and_listed(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY)
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
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY)
    created = cli(
        env, "endpoints", "create", "--name", "Users", "--account", "acme",
        "--provider", "supabase", "--events", "INSERT,DELETE", "--json",
    )  # fmt: skip
    made = created["signing_secret"]
    (hint,) = created["signing_secrets"]
    assert len(made) >= 32 and hint.endswith(f"…{made[-4:]}") and made not in hint
    listed = cli(env, "endpoints", "list").stdout + str(cli(env, "endpoints", "list", "--json"))
    assert made not in listed  # only its hint, from now on


def test_one_loops_key_belongs_to_one_account(tmp_path):
    # Two names for one key would each get a pace, and together pass Loops' limit.
    env = settings_env(tmp_path)
    cli(env, "accounts", "add", "--name", "acme", "--api-key", KEY)
    twice = cli(env, "accounts", "add", "--name", "acme-eu", "--api-key", f" {KEY} ", check=False)
    assert twice.returncode == 2
    assert "already the key of the Loops account 'acme'" in twice.stderr
    assert KEY not in twice.stderr
    cli(env, "accounts", "add", "--name", "beta", "--api-key", "lb_beta_live_5555")
    taken = cli(env, "accounts", "set", "beta", "--api-key", KEY, check=False)
    assert taken.returncode == 2 and "'acme'" in taken.stderr
    assert [a["name"] for a in cli(env, "accounts", "list", "--json")] == ["acme", "beta"]
    cli(env, "accounts", "set", "acme", "--api-key", KEY)  # its own key again is no change
