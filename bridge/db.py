"""The database: one engine per process, its schema kept by Alembic migrations.

SQLite is the default and runs in WAL mode with ``synchronous=FULL``: a webhook is only
acknowledged after its row is on disk, and readers (the CLI, the admin) never block the
writer. See https://www.sqlite.org/wal.html. PostgreSQL (``postgresql+psycopg://...``) runs
the same schema.

The schema of a database is one of::

    empty                    -> created at the current revision by any command
    tables, no alembic_version (made by create_all before migrations existed)
                             -> stamped 0001, then as below
    an older revision        -> SchemaOutOfDate: ``loops-bridge migrate`` upgrades it
    the current revision     -> used as it is
    a revision unknown here  -> SchemaTooNew: a newer loops-bridge upgraded it

A fresh database gets ``create_all`` and a stamp rather than a run of every migration; it
is faster, and tests/test_db.py proves the migrations end at the same schema. Creating,
stamping and upgrading hold a lock (PostgreSQL: an advisory lock; SQLite: ``BEGIN
IMMEDIATE``), so several processes starting on one database take turns.

The data folder and every file in it are the bridge's user's only: they hold customers'
emails and payloads, and the admin password's hash. On SQLite, the folder is created 0700
and the database file 0600 before SQLite opens it; SQLite gives its ``-wal``, ``-shm`` and
``-journal`` files the database file's mode (https://www.sqlite.org/tempfiles.html), and the
key file is written 0600 (bridge/vault.py). A file made before, or copied in, that others may
read is not changed behind the operator's back: :func:`connect` and :func:`upgrade` say so
in a warning that names it and the ``chmod`` that fixes it.

From revision 0003 on, Loops API keys and signing secrets are stored encrypted. Before any
of them is read, :func:`connect` (or :func:`upgrade`, for ``loops-bridge migrate``) unlocks
the engine's key with bridge/vault.py, and fails with :class:`bridge.vault.VaultError` if the
key is not the database's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import ColumnElement, Connection, Float, event, inspect, literal_column, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

from bridge import (
    models,  # noqa: F401  (registers the tables)
    settings,
    vault,
)

__all__ = [
    "SchemaError",
    "SchemaOutOfDate",
    "SchemaTooNew",
    "Session",
    "alembic_config",
    "connect",
    "head",
    "insert",
    "is_current",
    "now",
    "problem",
    "revision",
    "upgrade",
]

log = logging.getLogger("bridge.db")

MIGRATIONS = Path(__file__).parent / "migrations"
BEFORE_MIGRATIONS = "0001"  # what a database made by create_all, without alembic_version, is
ENCRYPTED_SINCE = "0003"  # the revision from which secrets are stored encrypted
_LOCK_KEY = 0x6C6F6F70_73627267  # PostgreSQL advisory lock of schema changes ("loopsbrg")


class SchemaError(Exception):
    """The database's schema is not the one this version of loops-bridge needs."""


class SchemaOutOfDate(SchemaError):
    pass


class SchemaTooNew(SchemaError):
    pass


def connect(url: str, *, create_schema: bool = True, secret_key: str | None = None) -> Engine:
    """An engine for ``url``. With ``create_schema``, the schema is made on an empty
    database, anything but the current schema raises :class:`SchemaError`, and the key of
    the stored secrets is unlocked: ``secret_key`` is BRIDGE_SECRET_KEY's value (None: read
    from the environment), and empty means the key file. Without ``create_schema``, neither
    is looked at (a process whose parent has done so, and that reads no secret)."""
    engine = _engine(url)
    if create_schema:
        _warn_if_shared(engine)
        try:
            current = _prepare(engine)
            _check(engine, current)
            vault.unlock(engine, _secret_key(secret_key))
        except BaseException:
            engine.dispose()
            raise
    return engine


def head() -> str:
    """The revision this version of loops-bridge needs."""
    current = _scripts().get_current_head()
    assert current is not None
    return current


def revision(engine: Engine) -> str | None:
    """The database's schema revision; None for an empty database."""
    with engine.connect() as conn:
        return _revision(conn)


def is_current(engine: Engine) -> bool:
    return revision(engine) == head()


def upgrade(engine: Engine, secret_key: str | None = None) -> tuple[str | None, str]:
    """Bring the schema to :func:`head`; returns the revision it was at (None: the database
    was empty) and the one it is at now. Raises :class:`SchemaTooNew` for a revision newer
    than this version knows. The key is unlocked as :func:`connect` does; a database from
    before :data:`ENCRYPTED_SINCE` has plain secrets, which the migration encrypts with it."""
    _warn_if_shared(engine)
    with engine.connect() as conn:
        before = _revision(conn)
    current = _prepare(engine)
    _check_known(engine, current)
    vault.unlock(engine, _secret_key(secret_key), encrypted=_encrypted_at(current))
    if current != head():
        with _schema_lock(engine) as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")  # from wherever it is now, under the lock
            conn.commit()
        vault.leave_no_copies(engine)  # 0003 rewrote the secrets
        log.info("upgraded the database schema from revision %s to %s", current, head())
    return before, head()


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration, for its own commands too: ``command.revision(
    alembic_config(url), autogenerate=True, message=...)`` drafts a migration from the
    difference between the database at ``url`` and bridge/models.py."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# -- internals ---------------------------------------------------------------------------------


def _secret_key(given: str | None) -> str:
    return settings.load().secret_key if given is None else given


def _encrypted_at(revision: str) -> bool:
    """Whether a database at ``revision`` stores its secrets encrypted."""
    return any(
        s.revision == ENCRYPTED_SINCE for s in _scripts().iterate_revisions(revision, "base")
    )


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        # What hosting providers hand out (postgres://...): PostgreSQL, through psycopg.
        parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql" and parsed.database == "postgres":
        log.warning(
            "BRIDGE_DATABASE_URL names the server's default database, postgres: the bridge's "
            "tables go there, beside whatever else uses it. A database of its own is safer "
            "to back up and to drop: CREATE DATABASE loops_bridge; then name it in the URL"
        )
    if parsed.get_backend_name() == "sqlite":
        pool: dict = {}
        if parsed.database and parsed.database != ":memory:":
            _create_owner_only(Path(parsed.database))
            pool = {"pool_size": 20, "max_overflow": 20}  # kept open: each costs its pragmas
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,  # an error's text never carries a key, token or email
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )


def _create_owner_only(database: Path) -> None:
    """The data folder (0700) and an empty database file (0600) if they do not exist yet:
    SQLite then creates the rest of its files with the database file's mode."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists, or SQLite will say why it cannot be made
        pass


def _warn_if_shared(engine: Engine) -> None:
    """Warn about each file of the bridge's data that users other than its owner may open:
    the SQLite database's files, the key file and the previous keys."""
    key = vault.key_path(engine.url)
    files = [key, key.with_name(key.name + ".old")]
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        files += [Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    shared = []
    for path in files:
        try:
            if path.stat().st_mode & 0o077:
                shared.append(str(path.absolute()))
        except OSError:  # not there (yet)
            continue
    if shared:
        log.warning(
            "other users of this machine can open %s, which hold customers' emails and "
            "payloads or the key to the stored secrets: make them owner-only with `chmod 600 %s`",
            ", ".join(shared),
            " ".join(shared),
        )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA secure_delete=ON")  # a replaced or removed secret leaves no trace
    cursor.close()


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def _revision(conn: Connection) -> str | None:
    found = MigrationContext.configure(conn).get_current_revision()
    if found is None and inspect(conn).has_table("connections"):
        return BEFORE_MIGRATIONS
    return found


def _prepare(engine: Engine) -> str:
    """Create the schema on an empty database and stamp one made before migrations; returns
    the revision the database is at now."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current is not None:
        return current  # the common case, and it takes no lock
    with _schema_lock(engine) as conn:
        context = MigrationContext.configure(conn)
        found = context.get_current_revision()
        if found is not None:  # another process was first
            return found
        if inspect(conn).has_table("connections"):
            context.stamp(_scripts(), BEFORE_MIGRATIONS)
            current = BEFORE_MIGRATIONS
        else:
            SQLModel.metadata.create_all(conn)
            context.stamp(_scripts(), "head")
            current = head()
            log.info("created the database schema at revision %s", current)
        conn.commit()
    return current


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other process changes the schema during."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, before reading
        yield conn


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _check_known(engine: Engine, current: str) -> None:
    try:
        known = _scripts().get_revision(current) is not None
    except CommandError:  # no migration file for it
        known = False
    if not known:
        raise SchemaTooNew(
            f"The database at {_where(engine)} is at schema revision {current}, which this "
            f"version of loops-bridge does not know (it needs {head()}): a newer version "
            "upgraded it. Run that version, or restore the backup made before the upgrade."
        )


def _check(engine: Engine, current: str) -> None:
    if current == head():
        return
    _check_known(engine, current)
    raise SchemaOutOfDate(
        f"The database at {_where(engine)} is at schema revision {current} but this version "
        f"of loops-bridge needs {head()}. Back it up, then run: loops-bridge migrate"
    )


_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from clock_timestamp())::float8",
}


def now(dialect: str) -> ColumnElement[float]:
    """The database's clock in unix seconds, for use in a query: one clock for every worker
    on every machine (leases, holds, the pace)."""
    return literal_column(_NOW[dialect], Float)


_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def insert(bind: Engine | Connection, table: Any) -> Any:
    """``INSERT`` into ``table`` in ``bind``'s dialect: the one with ``ON CONFLICT``
    (``on_conflict_do_nothing``, ``on_conflict_do_update``)."""
    return _INSERTS[bind.dialect.name](table)


def problem(exc: BaseException) -> str:
    """What went wrong with the database, for a log line: the driver's error and the first
    line of its message (never the statement, whose parameters are hidden anyway), or the
    error itself when it is not the driver's (a key that does not open a secret)."""
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {str(cause).strip().partition(chr(10))[0]}"
