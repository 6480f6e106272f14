"""One name for a Loops account: ``connections`` becomes ``accounts``, and every
``connection_id`` column becomes ``account_id`` (in ``endpoints``, ``contacts`` and
``account_states``). Only names change: no row is rewritten.

On PostgreSQL the names a fresh ``create_all`` would give (primary key, unique constraint,
foreign keys, the id sequence) are renamed too, so an upgraded database and a new one look
the same to whoever reads them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("endpoints", "contacts", "account_states")  # tables with a connection_id


def upgrade() -> None:
    _rename("connections", "accounts", "connection_id", "account_id")


def downgrade() -> None:
    _rename("accounts", "connections", "account_id", "connection_id")


def _rename(old_table: str, new_table: str, old_column: str, new_column: str) -> None:
    op.drop_index(f"ix_endpoints_{old_column}", table_name="endpoints")
    # SQLite (3.26+) rewrites the foreign keys that name the table; PostgreSQL follows OIDs.
    op.rename_table(old_table, new_table)
    for table in _COLUMNS:
        op.alter_column(table, old_column, new_column_name=new_column)
    op.create_index(f"ix_endpoints_{new_column}", "endpoints", [new_column])
    if op.get_bind().dialect.name == "postgresql":
        for table in _COLUMNS:
            op.execute(
                f"ALTER TABLE {table} RENAME CONSTRAINT {table}_{old_column}_fkey "
                f"TO {table}_{new_column}_fkey"
            )
        op.execute(
            f"ALTER TABLE {new_table} RENAME CONSTRAINT {old_table}_pkey TO {new_table}_pkey"
        )
        op.execute(
            f"ALTER TABLE {new_table} RENAME CONSTRAINT {old_table}_name_key "
            f"TO {new_table}_name_key"
        )
        op.execute(f"ALTER SEQUENCE {old_table}_id_seq RENAME TO {new_table}_id_seq")
