"""What Stripe's API brings in (issue 13): an endpoint's Stripe API key, imported customers
as deliveries of their own kind, and each endpoint's import with its cursor and counts.

- ``endpoints.stripe_api_key``: encrypted like every secret (bridge/vault.py), or none.
- ``deliveries.backfill``: a delivery made by an import: it creates the contact and never
  sends a Loops event, and it waits behind every other due delivery of its account, so
  ``ix_delivery_due`` becomes (endpoint_id, status, backfill, next_attempt_at).
- ``backfills``: one row per endpoint, the import's cursor in Stripe's customer list and
  its counts, written in the same transaction as the deliveries of each page.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("endpoints", sa.Column("stripe_api_key", sa.String(), nullable=True))
    op.add_column(
        "deliveries",
        sa.Column("backfill", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.drop_index("ix_delivery_due", table_name="deliveries")
    op.create_index(
        "ix_delivery_due", "deliveries", ["endpoint_id", "status", "backfill", "next_attempt_at"]
    )
    op.create_table(
        "backfills",
        sa.Column("endpoint_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("cursor", sa.String(), nullable=True),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("known", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("runner", sa.String(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"]),
        sa.PrimaryKeyConstraint("endpoint_id"),
    )


def downgrade() -> None:
    op.drop_table("backfills")
    op.drop_index("ix_delivery_due", table_name="deliveries")
    op.create_index("ix_delivery_due", "deliveries", ["endpoint_id", "status", "next_attempt_at"])
    op.drop_column("deliveries", "backfill")
    op.drop_column("endpoints", "stripe_api_key")
