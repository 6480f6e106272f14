"""Alembic's environment, configured by bridge.db rather than an alembic.ini.

bridge.db hands over a connection that is already in a transaction and holds the schema lock
(``config.attributes["connection"]``), so the migrations run inside it and are committed, or
rolled back, as one; it has unlocked the key that secrets are encrypted with. Without one (a
developer running alembic's own commands through ``bridge.db.alembic_config(url)``), a
connection is made from ``sqlalchemy.url``, with the key of BRIDGE_SECRET_KEY or the key file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlmodel import SQLModel

from bridge import (
    models,  # noqa: F401  (registers the tables)
    vault,
)
from bridge.settings import load


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters most things by copying the table; autogenerate should say so. But a
        # copy of ``deliveries`` loses its lower(email) index (SQLite cannot reflect it), so
        # a migration that copies it must create that index again.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    vault.unlock(engine, load().secret_key, encrypted=False)  # 0003 reads and writes secrets
    with engine.begin() as connection:
        run(connection)
    engine.dispose()
