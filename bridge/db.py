"""The database: one engine per process, schema created on first use.

SQLite is the default and runs in WAL mode with ``synchronous=FULL``: a webhook is only
acknowledged after its row is on disk, and readers (the CLI, the admin) never block the
writer. See https://www.sqlite.org/wal.html.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

from bridge import models  # noqa: F401  (registers the tables)

__all__ = ["Session", "connect"]


def connect(url: str, *, create_schema: bool = True) -> Engine:
    """An engine for ``url`` with the schema in place (created on a fresh database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pool: dict = {}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": 20, "max_overflow": 20}  # kept open: each costs its pragmas
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    if create_schema:
        SQLModel.metadata.create_all(engine)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
