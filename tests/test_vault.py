"""Secrets at rest (bridge/vault.py), as an operator meets them, on SQLite and PostgreSQL:

- the stored Loops API keys and signing secrets are Fernet tokens: the database file, or
  the raw column values, hold none of them;
- without the key, or with a wrong one, every command fails with a message that says which
  key and what to do, and no traceback;
- ``loops-bridge rotate-secret-key`` re-encrypts everything, and webhooks still verify;
- ``loops-bridge migrate`` encrypts the plain rows of an earlier version (and the downgrade
  decrypts them).

The key file is made owner-only, once, and announced once, by processes starting at once on
a fresh database: tests/test_db.py. Commands run in this process (``bridge.cli.main``) and
webhooks go through the in-process harness, except ``serve`` and ``worker`` when they must
refuse to start; every test runs in its own folder, so PostgreSQL's key file
(``./data/secret.key``) is the test's own.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from alembic import command
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import create_engine, inspect, text

from bridge import db, registry, vault
from bridge.registry import mask
from tests.harness import Harness, settings_env
from tests.harness import run_cli as cli
from tests.helpers import (
    OLD_API_KEY,
    OLD_ENDPOINT,
    OLD_SIGNING_SECRET,
    alembic,
    create_all_at_814cde7,
    fixture_bytes,
)
from tests.servers import refusals

KEY = "loops_key_vaultTest_7a6b5c4d3e"
SECRET = "whsec_vaultTestSecretGGGGGGGGGGGGGGGG"
SECOND = "whsec_vaultSecondSecretHHHHHHHHHHHHHH"
THIRD = "whsec_vaultThirdSecretJJJJJJJJJJJJJJJJ"
LOOPS_SECRET = "whsec_dmF1bHRMb29wc1dlYmhvb2tTZWNyZXQwMDE="
PLAIN = (KEY, SECRET, SECOND)
INVOICE_PAID = "captured-test-mode/invoice.paid.event.json"
CREATED = (
    "created a new secret key at {path}: back it up with the database; without it the "
    "stored API keys and signing secrets cannot be read"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # commands, and the processes started here, find ./data/ here
    if request.param == "sqlite":
        return settings_env(tmp_path)
    return settings_env(tmp_path, BRIDGE_DATABASE_URL=request.getfixturevalue("postgres_url"))


def key_file(env: dict[str, str]) -> Path:
    return vault.key_path(env["BRIDGE_DATABASE_URL"]).absolute()


def stored(env: dict[str, str]) -> list[str]:
    """The API keys and signing secrets as they are in the database, read without the
    bridge (the API keys are in ``connections`` before revision 0004)."""
    engine = create_engine(env["BRIDGE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            accounts = "accounts" if inspect(conn).has_table("accounts") else "connections"
            keys = conn.execute(text(f"SELECT api_key FROM {accounts} ORDER BY id")).all()
            values = conn.execute(text("SELECT value FROM secrets ORDER BY id")).all()
            return [row[0] for row in (*keys, *values)]
    finally:
        engine.dispose()


def database_files(env: dict[str, str], folder: Path) -> list[bytes]:
    """The bytes of the SQLite database and of its write-ahead log, if it has one (none for
    PostgreSQL). Only while this process has no connection to it: closing a file of the
    database drops the process's POSIX locks on it (so the WAL's -shm index is left alone)."""
    if not env["BRIDGE_DATABASE_URL"].startswith("sqlite"):
        return []
    files = [folder / "bridge.db", folder / "bridge.db-wal"]
    return [path.read_bytes() for path in files if path.exists()]


def add_account_and_endpoint(env: dict[str, str]) -> str:
    cli(env, "accounts", "add", "--name", "acme", "--api-key", "-", "--no-check", stdin=KEY)
    created = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "Stripe live",
        "--account",
        "acme",
        "--events",
        "invoice.paid",
        "--loops-event",
        "successfulPayment",
        "--signing-secret",
        "-",
        "--json",
        stdin=SECRET,
    )
    cli(env, "endpoints", "add-secret", created["id"], "-", stdin=SECOND)
    return created["id"]


def delivered(
    folder: Path, env: dict[str, str], endpoint_id: str, secret: str, api_key: str = KEY
) -> None:
    """A webhook signed with ``secret`` is accepted by the bridge, which reads the stored
    secrets with the key as the commands left it, and reaches a Loops that takes only
    ``api_key``."""
    body = fixture_bytes(INVOICE_PAID)
    with Harness(folder, sandbox_keys=[api_key], **env) as bridge:
        refused = bridge.webhook(endpoint_id, body, "whsec_notTheSecret")
        assert refused.status_code == 400, refused.text
        answer = bridge.webhook(endpoint_id, body, secret)
        assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
        delivery = answer.json()["id"]
        (done,) = bridge.until(
            lambda: [d for d in bridge.deliveries(id=delivery) if d["status"] != "queued"],
            what="the delivery to reach Loops with the stored API key",
        )
        assert done["status"] == "delivered", done


def assert_refused(done: subprocess.CompletedProcess, *expected: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    for words in expected:
        assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for secret in PLAIN:
        assert secret not in done.stdout + done.stderr


# -- what the database holds -----------------------------------------------------------------


def test_a_copied_database_reveals_no_secret(env, tmp_path):
    add_account_and_endpoint(env)
    tokens = stored(env)
    assert len(tokens) == 3
    for token in tokens:
        assert token.startswith("gAAAAA") and not any(s in token for s in PLAIN)
    key = Fernet(key_file(env).read_text().strip())
    assert [key.decrypt(t).decode() for t in tokens] == list(PLAIN)  # the key, and only it
    for raw in database_files(env, tmp_path):
        assert not any(s.encode() in raw for s in PLAIN)

    # The database without its key: every command says what is missing, and makes no key.
    key_file(env).rename(tmp_path / "elsewhere.key")
    missing = (
        "stores encrypted Loops API keys and signing secrets, but BRIDGE_SECRET_KEY is "
        f"unset and there is no key file at {key_file(env)}. Put back the secret.key"
    )
    for args in (["accounts", "list"], ["endpoints", "list", "--json"]):
        assert_refused(cli(env, *args, check=False), missing)
    for done in refusals(env, "serve", "worker"):
        assert_refused(done, missing)
    assert not key_file(env).exists()

    # A wrong key, or something that is no key: the message names it, and never shows it.
    wrong = vault.new_key()
    done = cli({**env, "BRIDGE_SECRET_KEY": wrong}, "endpoints", "list", check=False)
    assert_refused(done, "The key from BRIDGE_SECRET_KEY does not open the Loops API keys")
    assert wrong not in done.stderr
    (done,) = refusals({**env, "BRIDGE_SECRET_KEY": "hunter2hunter2"}, "serve")
    assert_refused(done, "BRIDGE_SECRET_KEY does not hold a valid key")
    assert "hunter2" not in done.stderr
    (tmp_path / "elsewhere.key").write_text(wrong)
    (tmp_path / "elsewhere.key").rename(key_file(env))
    done = cli({**env, "BRIDGE_LOG_FORMAT": "json"}, "accounts", "list", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1  # one JSON line
    assert f"The key from the key file {key_file(env)} does not open" in done.stderr


# -- rotate-secret-key -----------------------------------------------------------------------


def test_rotate_secret_key_in_the_key_file_and_webhooks_still_verify(env, tmp_path):
    endpoint_id = add_account_and_endpoint(env)
    path = key_file(env)
    before = path.read_text()

    done = cli(env, "rotate-secret-key", "--json")
    assert done == {
        "api_keys": 1,
        "signing_secrets": 2,
        "stripe_api_keys": 0,
        "loops_webhook_secrets": 0,
        "key_file": str(path),
        "old_key_file": f"{path}.old",
    }
    after = path.read_text()
    assert after != before and Path(f"{path}.old").read_text() == before
    for kept in (path, Path(f"{path}.old")):
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    old, new = Fernet(before.strip()), Fernet(after.strip())
    for token in stored(env):
        with pytest.raises(InvalidToken):
            old.decrypt(token)
        assert new.decrypt(token).decode() in PLAIN

    again = cli(env, "rotate-secret-key")
    assert (
        "Re-encrypted 1 Loops API key(s), 2 signing secret(s), 0 Stripe API key(s) and 0 "
        "Loops webhook secret(s)" in again.stdout
    )
    assert path.read_text().strip() not in again.stdout + again.stderr  # never shown
    delivered(tmp_path, env, endpoint_id, SECOND)


def test_rotate_secret_key_given_in_bridge_secret_key(tmp_path):
    first = vault.new_key()
    env = settings_env(tmp_path, BRIDGE_SECRET_KEY=first)
    add_account_and_endpoint(env)
    assert not (tmp_path / "secret.key").exists()  # the variable is the key

    done = cli(env, "rotate-secret-key")
    assert (
        "Re-encrypted 1 Loops API key(s), 2 signing secret(s), 0 Stripe API key(s) and 0 "
        "Loops webhook secret(s)" in done.stdout
    )
    (new,) = [line.strip() for line in done.stdout.splitlines() if line.startswith("    ")]
    assert done.stdout.count(new) == 1 and first not in done.stdout
    assert "Set BRIDGE_SECRET_KEY to it" in done.stdout
    assert not (tmp_path / "secret.key").exists()
    assert [Fernet(new).decrypt(t).decode() for t in stored(env)] == list(PLAIN)

    refused = cli(env, "accounts", "list", check=False)
    assert_refused(refused, "The key from BRIDGE_SECRET_KEY does not open")
    for keys in (new, f"{new},{first}", f" {new} , {first} "):
        (listed,) = cli({**env, "BRIDGE_SECRET_KEY": keys}, "accounts", "list", "--json")
        assert listed["api_key"] == mask(KEY)


def test_a_running_bridge_takes_up_a_key_file_rotated_under_it(env, tmp_path):
    endpoint_id = add_account_and_endpoint(env)
    body = fixture_bytes(INVOICE_PAID)
    with Harness(tmp_path, sandbox_keys=[KEY], **env) as running:
        first = running.webhook(endpoint_id, body, SECRET)
        assert first.json()["status"] == "queued", first.text
        cli(env, "rotate-secret-key")  # as an operator might, with serve still running
        running.app.state.webhooks.inbox.forget(endpoint_id)  # read again, not from its cache
        # What it stored under the old key opens with the new one it took from the file...
        again = running.webhook(endpoint_id, body.replace(b"evt_", b"evt_2"), SECOND)
        assert again.json()["status"] == "queued", again.text
        assert {d["status"] for d in running.settled(2)} == {"delivered"}
        # ...and a secret it adds now (the admin's form) is encrypted under the new key.
        registry.add_secret(running.engine, endpoint_id, THIRD)
    new = Fernet(key_file(env).read_text().strip())
    assert [new.decrypt(t).decode() for t in stored(env)] == [*PLAIN, THIRD]


def test_a_running_bridge_whose_key_was_rotated_away_says_why_it_answers_503(tmp_path, caplog):
    first = vault.new_key()
    env = settings_env(tmp_path, BRIDGE_SECRET_KEY=first)
    endpoint_id = add_account_and_endpoint(env)
    cli(env, "accounts", "loops-webhook", "acme", "add-secret", "-", stdin=LOOPS_SECRET)
    with Harness(tmp_path, **env) as running:
        loops_path = urlsplit(registry.loops_webhook_url(running.engine, running.settings, "acme"))
        cli(env, "rotate-secret-key")  # prints a new key, which this bridge does not have
        answer = running.webhook(endpoint_id, fixture_bytes(INVOICE_PAID), SECRET)
        from_loops = running.run(running.client.post(loops_path.path, content=b"{}"))
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"status": "unavailable", "reason": "storage unavailable; retry later"}
    assert from_loops.status_code == 503, from_loops.text
    why = (
        "VaultError: A stored Loops API key or signing secret does not open with the key from "
        "BRIDGE_SECRET_KEY. Stop serve and worker, and start them again: start-up says which "
        "key the database needs."
    )
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert logged == [
        f"could not read endpoint {endpoint_id}, so its webhooks are answered 503 and the "
        f"sender retries them: {why}",
        "Loops webhook: could not read the account of a token, so it was answered 503 and "
        f"Loops retries it: {why}",
    ]


# -- a database from before secrets were encrypted -------------------------------------------


def test_migrate_encrypts_the_plain_secrets_of_an_earlier_version(env, tmp_path):
    url = env["BRIDGE_DATABASE_URL"]
    engine = db.connect(url, create_schema=False)
    try:
        create_all_at_814cde7(engine)
        alembic(engine, command.stamp, "0001")
        alembic(engine, command.upgrade, "0002")  # the version before this one
    finally:
        engine.dispose()  # closed before the file is read below: see database_files()
    assert stored(env) == [OLD_API_KEY, OLD_SIGNING_SECRET]

    done = cli(env, "migrate")
    assert f"from schema revision 0002 to {db.head()}" in done.stdout
    assert CREATED.format(path=key_file(env)) in done.stderr
    tokens = stored(env)
    assert all(t.startswith("gAAAAA") for t in tokens) and OLD_API_KEY not in tokens
    for raw in database_files(env, tmp_path):
        assert OLD_API_KEY.encode() not in raw and OLD_SIGNING_SECRET.encode() not in raw
    (listed,) = cli(env, "accounts", "list", "--json")
    assert listed["api_key"] == mask(OLD_API_KEY)
    delivered(tmp_path, env, OLD_ENDPOINT, OLD_SIGNING_SECRET, OLD_API_KEY)

    engine = db.connect(url, create_schema=False)
    try:
        vault.unlock(engine, "")  # the key file that migrate made
        alembic(engine, command.downgrade, "0002")
    finally:
        engine.dispose()
    assert stored(env) == [OLD_API_KEY, OLD_SIGNING_SECRET]
