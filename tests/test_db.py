"""The schema and its migrations, on SQLite and PostgreSQL (see ``postgres_url``).

- the migrations end at exactly the schema of bridge/models.py, and 0001 is exactly what
  ``create_all`` made before there were migrations;
- a database made before migrations, rows and all, is refused by every command until
  ``loops-bridge migrate`` has upgraded it, and keeps its rows;
- a fresh database is at the current revision after any command, even with several
  processes starting on it at once, and one of them makes its key file (bridge/vault.py);
- the data folder and its files are owner-only, and a start names any that is not.

And the logs, which ``loops-bridge`` writes as one JSON object per line on request, and
otherwise as text in which nothing a customer typed can start a line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import stat
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge import db, logs, registry, sandbox, vault
from tests import leaks
from tests.harness import run_cli as cli
from tests.harness import settings_env, stripe_event
from tests.helpers import (
    OLD_ENDPOINT,
    alembic,
    create_all_at_814cde7,
    fixture_bytes,
    signed_headers,
)
from tests.servers import BIN, Bridge, bridge_env, refusals, wait_until

KEY = "loops_key_dbServe_8e7d6c5b"
CUSTOMER_CREATED = "constructed/customer.created.event.json"
SECRET = "whsec_dbServeSecretJJJJJJJJJJJJJJJJJ"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # PostgreSQL's key file, ./data/secret.key, is the test's own
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    """An engine that leaves the schema alone."""
    engine = db.connect(url, create_schema=False)
    yield engine
    engine.dispose()


@contextmanager
def unreflected_expression_indexes() -> Iterator[None]:
    """SQLite's reflection skips the lower(email) index, with a warning; ``schema`` compares
    the SQL of every index instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*expression-based index")
        yield


def differences(engine: Engine) -> list:
    """What autogenerate would change to bring the database to bridge/models.py."""
    with unreflected_expression_indexes(), engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, SQLModel.metadata)


def schema(engine: Engine) -> dict:
    """The database's schema as data, down to each index's SQL; column order aside (a column
    added by a migration comes last)."""
    found = inspect(engine)
    tables: dict = {}
    with unreflected_expression_indexes():
        for table in sorted(set(found.get_table_names()) - {"alembic_version"}):
            tables[table] = {
                "columns": sorted(
                    (c["name"], repr(c["type"]), c["nullable"], str(c.get("default")))
                    for c in found.get_columns(table)
                ),
                "primary key": found.get_pk_constraint(table)["constrained_columns"],
                "foreign keys": sorted(
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                    )
                    for f in found.get_foreign_keys(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in found.get_unique_constraints(table)
                ),
            }
    if engine.dialect.name == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    else:
        query = (
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' AND tablename != 'alembic_version'"
        )
    with engine.connect() as conn:
        tables["indexes"] = sorted(tuple(row) for row in conn.exec_driver_sql(query))
    return tables


# -- the migrations ------------------------------------------------------------------------------


def test_the_migrations_end_at_the_schema_of_the_models(engine):
    alembic(engine, command.upgrade, "head")
    assert differences(engine) == []
    migrated = schema(engine)
    alembic(engine, command.downgrade, "base")
    assert schema(engine) == {"indexes": []}
    SQLModel.metadata.create_all(engine)  # what a fresh database gets
    assert schema(engine) == migrated


def test_revision_0001_is_what_create_all_made_before_migrations(engine):
    create_all_at_814cde7(engine)
    before_migrations = schema(engine)
    alembic(engine, command.stamp, "0001")
    alembic(engine, command.downgrade, "base")
    alembic(engine, command.upgrade, "0001")
    assert schema(engine) == before_migrations


# -- a database from before migrations -----------------------------------------------------------


def test_migrate_upgrades_a_database_from_before_migrations_and_keeps_its_rows(
    url, engine, tmp_path
):
    create_all_at_814cde7(engine)
    env = settings_env(tmp_path, BRIDGE_DATABASE_URL=url)
    shown = make_url(url).render_as_string(hide_password=True)
    for done in refusals(env, "serve", "worker"):
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip() == (
            f"error: The database at {shown} is at schema revision 0001 but this version of "
            f"loops-bridge needs {db.head()}. Back it up, then run: loops-bridge migrate"
        )
    assert db.revision(engine) == "0001"

    done = cli(env, "migrate")
    assert done.stdout.strip() == (
        f"Upgraded the database at {shown} from schema revision 0001 to {db.head()}."
    )
    assert db.is_current(engine)
    assert differences(engine) == []

    deliveries = cli(env, "deliveries", "list", "--json")
    assert [(d["id"], d["status"], d["email"]) for d in deliveries] == [
        (3, "failed", "Jenny3@Example.com"),
        (2, "queued", "Jenny2@Example.com"),
        (1, "delivered", "Jenny1@Example.com"),
    ]
    (endpoint,) = cli(env, "endpoints", "list", "--json")
    assert endpoint["id"] == OLD_ENDPOINT and endpoint["account"] == "acme"
    assert endpoint["signing_secrets"] == ["whsec_…FFFF"]
    with engine.connect() as conn:
        calls = conn.execute(text("SELECT delivery_id, status_code FROM loops_calls")).all()
        contacts = conn.execute(text("SELECT identity, names_at FROM contacts")).all()
    assert calls == [(1, 200)] and contacts == [("jenny1@example.com", None)]


def test_a_fresh_database_is_at_the_current_revision_after_any_command(url, engine, tmp_path):
    env = settings_env(tmp_path, BRIDGE_DATABASE_URL=url)
    assert cli(env, "accounts", "list", "--json") == []
    assert db.revision(engine) == db.head()
    assert differences(engine) == []


def test_processes_starting_at_once_on_a_fresh_database_take_turns(url, engine, tmp_path):
    """One of them creates the schema, and one the key file of the stored secrets: made
    owner-only, and announced once."""
    env = bridge_env(tmp_path, BRIDGE_DATABASE_URL=url)
    args = ["accounts", "list"]
    starting = [
        subprocess.Popen(
            [str(BIN), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    said = ""
    for process in starting:
        stdout, stderr = process.communicate(timeout=60)
        done = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        leaks.command(args, env, None, done)
        assert done.returncode == 0, stderr
        said += stderr
    assert db.revision(engine) == db.head()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    path = vault.key_path(url).absolute()
    assert said.count(f"created a new secret key at {path}: back it up") == 1, said
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(path.read_text().strip())  # one key, as Fernet makes them
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    assert "secret key" not in cli(env, *args).stderr  # a later start says nothing of it


def test_migrate_says_when_there_is_nothing_to_do(url, tmp_path):
    env = settings_env(tmp_path, BRIDGE_DATABASE_URL=url)
    shown = make_url(url).render_as_string(hide_password=True)
    assert cli(env, "migrate").stdout.strip() == (
        f"Created the schema of the database at {shown}, at revision {db.head()}."
    )
    assert cli(env, "migrate").stdout.strip() == (
        f"The database at {shown} is already up to date (schema revision {db.head()})."
    )


def test_the_data_folder_and_every_file_in_it_are_owner_only(tmp_path):
    """They hold customers' emails and payloads, and the key to the stored secrets."""
    data = tmp_path / "data"
    engine = db.connect(f"sqlite:///{data / 'bridge.db'}", secret_key="")  # a key file
    try:
        registry.add_account(engine, "acme", KEY)  # a write: the WAL and its index are open
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data.iterdir()}
    finally:
        engine.dispose()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert modes == {
        "bridge.db": 0o600,
        "bridge.db-wal": 0o600,
        "bridge.db-shm": 0o600,
        "secret.key": 0o600,
    }


def test_a_start_names_the_files_others_can_open_and_changes_none(tmp_path):
    env = settings_env(tmp_path)
    assert "chmod" not in cli(env, "accounts", "list").stderr  # made owner-only: nothing to say
    database, key = tmp_path / "bridge.db", tmp_path / "secret.key"
    database.chmod(0o644)  # as an earlier version made it, or a copy restored from a backup
    key.chmod(0o640)
    said = cli(env, "accounts", "list").stderr
    assert f"other users of this machine can open {key}, {database}, which hold " in said
    assert f"make them owner-only with `chmod 600 {key} {database}`" in said
    assert stat.S_IMODE(database.stat().st_mode) == 0o644  # changed by the operator only
    assert stat.S_IMODE(key.stat().st_mode) == 0o640


def test_a_schema_from_a_newer_version_is_refused(tmp_path):
    env = settings_env(tmp_path)
    cli(env, "accounts", "list")
    engine = db.connect(env["BRIDGE_DATABASE_URL"], create_schema=False)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    engine.dispose()
    for refused in (["accounts", "list"], ["migrate"]):
        done = cli(env, *refused, check=False)
        assert done.returncode == 1, done.stderr
        assert "schema revision 0099, which this version of loops-bridge does not know" in (
            done.stderr
        )
        assert "Traceback" not in done.stderr


# -- logs --------------------------------------------------------------------------------------


def json_lines(output: str) -> list[dict]:
    """Every line of ``output`` as a JSON object, checking the fields every line has."""
    entries = [json.loads(line) for line in output.splitlines() if line.strip()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["time"].endswith("Z")
        datetime.fromisoformat(entry["time"])
    return entries


def test_json_logs_carry_what_a_decision_concerns_and_errors_on_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JSONFormatter())
    log = logging.getLogger("bridge.test_db")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info(
            "delivery %s delivered",
            7,
            extra={
                "delivery_id": 7,
                "endpoint_id": "kq3vL9xTz0bW5mYc2aRk8Q",
                "account": "acme",
                "event_id": "evt_1",
                "status": "delivered",
            },
        )
        try:
            raise RuntimeError("Loops went away")
        except RuntimeError:
            log.exception("delivery 8: unexpected error", extra={"delivery_id": 8})
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
        log.propagate = True
    decided, failed = json_lines(stream.getvalue())
    assert decided == {
        "time": decided["time"],
        "level": "INFO",
        "logger": "bridge.test_db",
        "message": "delivery 7 delivered",
        "delivery_id": 7,
        "endpoint_id": "kq3vL9xTz0bW5mYc2aRk8Q",
        "account": "acme",
        "event_id": "evt_1",
        "status": "delivered",
    }
    assert failed["level"] == "ERROR" and failed["delivery_id"] == 8
    assert "RuntimeError: Loops went away" in failed["error"]


def test_commands_log_json_lines_on_request(tmp_path):
    env = settings_env(tmp_path, BRIDGE_LOG_FORMAT="json")
    done = cli(env, "accounts", "list")
    created, key, where = json_lines(done.stderr)
    assert created["logger"] == "bridge.db" and "created the database schema" in created["message"]
    assert where["message"].startswith(f"Created the database {tmp_path / 'bridge.db'} ")
    assert key["logger"] == "bridge.vault" and key["level"] == "WARNING"
    assert key["message"].startswith(f"created a new secret key at {tmp_path / 'secret.key'}")
    done = cli(env, "deliveries", "show", "999", check=False)
    assert done.returncode == 2
    (error,) = json_lines(done.stderr)
    assert error["level"] == "ERROR" and "No delivery 999" in error["message"]


def test_a_bad_log_format_is_reported_in_text(tmp_path):
    done = cli(settings_env(tmp_path, BRIDGE_LOG_FORMAT="xml"), "accounts", "list", check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: BRIDGE_LOG_FORMAT='xml' is not valid")


def test_serve_logs_json_lines_uvicorn_included_and_no_secret(tmp_path, serve):
    """``loops-bridge serve``'s own output, as a process writes it, while it takes webhooks
    and delivers one to a Loops sandbox (on a socket, served by this process)."""
    loops = serve(sandbox.create_app())
    env = bridge_env(tmp_path, BRIDGE_LOG_FORMAT="json", BRIDGE_LOOPS_API_URL=f"{loops.url}/api/v1")
    cli(env, "accounts", "add", "--name", "acme", "--api-key", "-", "--no-check", stdin=KEY)
    created = cli(
        env,
        "endpoints",
        "create",
        "--name",
        "e",
        "--account",
        "acme",
        "--events",
        "invoice.paid",
        "--signing-secret",
        "-",
        "--json",
        stdin=SECRET,
    )
    body = fixture_bytes("captured-test-mode/invoice.paid.event.json")

    def contact_created() -> bool:
        calls = httpx.get(f"{loops.url}/_sandbox/requests", timeout=5).json()
        return any(c["path"].endswith("/contacts/create") for c in calls)

    bridge = Bridge(env)
    try:
        accepted = bridge.post(created["id"], body, signed_headers(body, SECRET))
        assert accepted.status_code == 200, accepted.text
        refused = bridge.post(created["id"], body, signed_headers(body, "whsec_wrongWRONGwrong"))
        assert refused.status_code == 400
        wait_until(contact_created, what="the contact in Loops")
    finally:
        assert bridge.stop() in (0, -15)
    output = bridge.log()
    entries = json_lines(output)
    assert any(e["logger"].startswith("uvicorn") for e in entries), output
    assert any(e["logger"].startswith("bridge") for e in entries), output
    assert any(
        e.get("delivery_id") == 1 and e.get("endpoint_id") == created["id"] for e in entries
    ), output
    assert KEY not in output and SECRET not in output


def test_a_customers_name_cannot_write_a_line_of_the_text_log(tmp_path, serve):
    """A name holding a line break, an escape sequence and a right-to-left override, which
    Loops quotes back when it refuses it: ``serve``'s text log keeps all of it on the
    delivery's own line, escaped."""

    async def refuse(request: Request) -> JSONResponse:
        contact = await request.json()
        message = f"Invalid lastName: {contact.get('lastName')}"
        return JSONResponse({"success": False, "message": message}, 400)

    loops = serve(Starlette(routes=[Route("/api/v1/contacts/create", refuse, methods=["POST"])]))
    env = bridge_env(tmp_path, BRIDGE_LOG_FORMAT="text", BRIDGE_LOOPS_API_URL=f"{loops.url}/api/v1")
    cli(env, "accounts", "add", "--name", "acme", "--api-key", "-", "--no-check", stdin=KEY)
    created = cli(
        env,
        *("endpoints", "create", "--name", "e", "--account", "acme"),
        *("--events", "customer.created", "--signing-secret", "-", "--json"),
        stdin=SECRET,
    )
    forged = "2026-01-01 09:00:00,000 INFO bridge.admin.login: admin signed in from 10.0.0.1"
    name = f"Mallory Smith\n{forged}\x1b[2J\u202e"
    body = stripe_event(CUSTOMER_CREATED, "evt_forge", email="mallory@example.com", name=name)
    bridge = Bridge(env)
    try:
        accepted = bridge.post(created["id"], body, signed_headers(body, SECRET))
        assert accepted.status_code == 200, accepted.text
        wait_until(lambda: "Invalid lastName" in bridge.log(), what="the delivery to fail")
    finally:
        assert bridge.stop() in (0, -15)
    output = bridge.log()
    assert "\x1b" not in output and "\u202e" not in output
    lines = output.splitlines()
    assert not any(line.startswith(forged[:10]) for line in lines), output
    (failed,) = [line for line in lines if "Invalid lastName" in line]
    record = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO bridge\.delivery: delivery 1 failed: "
    assert re.match(record, failed), failed
    assert failed.endswith(rf"Invalid lastName: Smith\n{forged}\x1b[2J\u202e")


def test_a_postgres_url_as_hosts_hand_it_out_works(postgres_url, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # its key file, ./data/secret.key, is the test's own
    bare = "postgres://" + postgres_url.split("://", 1)[1]  # Heroku, Render, Fly...
    engine = db.connect(bare)
    try:
        assert engine.dialect.name == "postgresql" and db.is_current(engine)
    finally:
        engine.dispose()
    assert "default database" not in caplog.text
    default = db.connect(bare.rsplit("/", 1)[0] + "/postgres", create_schema=False)
    default.dispose()
    assert "names the server's default database, postgres" in caplog.text


def test_a_database_error_never_carries_the_values_it_was_given(tmp_path):
    """A failed statement's text is logged and shown (503 reasons, CLI errors): it names the
    statement, never its values, which may be an API key, a URL token or an email."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = db.connect(f"sqlite:///{tmp_path / 'hidden.db'}")
    with pytest.raises(SQLAlchemyError) as failed, engine.begin() as conn:
        conn.execute(text("INSERT INTO no_such_table VALUES (:value)"), {"value": "rk_live_s3cret"})
    assert "rk_live_s3cret" not in str(failed.value)
    assert "no_such_table" in str(failed.value)  # what failed is still said
