"""Delivery reliability: claims with leases, account state, names by event time.

- ``deliveries.claimed_by`` / ``lease_until`` (and an index on ``claimed_by``): a worker
  claims the deliveries it works on, so several workers can share one database.
- ``account_states``: each Loops account's pace, hold and problem, shared by every worker.
- ``connections.rate_limit``: an account's own requests/second, else the setting's.
- ``contacts.names_at``: the provider event time of the names last sent, so an older event
  never overwrites newer names.

Every new column may be NULL, so existing rows need no backfill.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, on SQLite too: nothing here needs batch mode's table copy.
    op.add_column("connections", sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.add_column("deliveries", sa.Column("claimed_by", sa.String(), nullable=True))
    op.add_column("deliveries", sa.Column("lease_until", sa.Float(), nullable=True))
    op.create_index("ix_delivery_claimed_by", "deliveries", ["claimed_by"])
    op.add_column("contacts", sa.Column("names_at", sa.Integer(), nullable=True))
    op.create_table(
        "account_states",
        sa.Column("connection_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_slot", sa.Float(), nullable=False),
        sa.Column("held_until", sa.Float(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("problem_kind", sa.String(), nullable=True),
        sa.Column("problem_since", sa.Float(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("loops_limit", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"]),
        sa.PrimaryKeyConstraint("connection_id"),
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch mode: copying ``deliveries`` would
    # lose its lower(email) index, which SQLite cannot reflect.
    op.drop_table("account_states")
    op.drop_column("contacts", "names_at")
    op.drop_index("ix_delivery_claimed_by", table_name="deliveries")
    op.drop_column("deliveries", "lease_until")
    op.drop_column("deliveries", "claimed_by")
    op.drop_column("connections", "rate_limit")
