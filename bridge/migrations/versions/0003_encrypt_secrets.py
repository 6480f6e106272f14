"""Secrets at rest: encrypt the Loops API keys and signing secrets stored in plain text.

``connections.api_key`` and ``secrets.value`` keep their type (VARCHAR, unbounded on SQLite
and PostgreSQL, so a Fernet token fits); their values become tokens, encrypted with the key
that bridge.db unlocked for this connection (BRIDGE_SECRET_KEY, or the key file, which is
created if missing): see bridge/vault.py. The downgrade decrypts them again.

Every row is rewritten in the migration's one transaction: a failure leaves them all plain.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from bridge import vault

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# (table, primary key, column) of every secret, as of this revision.
SECRETS = (("connections", "id", "api_key"), ("secrets", "id", "value"))


def upgrade() -> None:
    _rewrite(lambda v, plain: v.encrypt(plain))


def downgrade() -> None:
    _rewrite(lambda v, token: v.decrypt(token))


def _rewrite(change: Callable[[vault.Vault, str], str]) -> None:
    conn = op.get_bind()
    for table, key, column in SECRETS:
        rows = sa.table(table, sa.column(key), sa.column(column))
        found = conn.execute(sa.select(rows.c[key], rows.c[column])).all()
        if not found:
            continue  # an empty database needs no key
        keys = vault.of(conn)
        for row_id, value in found:
            conn.execute(
                sa.update(rows).where(rows.c[key] == row_id).values({column: change(keys, value)})
            )
