"""Loops' own webhooks (issue 14): what happened to each email after the bridge's call.

- ``accounts.loops_webhook_token``: the random token of the account's Loops webhook URL
  (``POST /loops-webhooks/{token}``), made when first shown.
- ``loops_webhook_secrets``: the account's Loops signing secrets (``whsec_...``), encrypted
  at rest, several at once while one rolls.
- ``loops_events``: every event Loops reported (contact.*, *.email.sent, email.*), linked to
  the contact and, where it can be told, to the bridge delivery that caused it. The body
  follows BRIDGE_RETENTION_DAYS; the row (the timeline entry) stays.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("loops_webhook_token", sa.String(), nullable=True))
    op.create_index(
        "ix_accounts_loops_webhook_token", "accounts", ["loops_webhook_token"], unique=True
    )
    op.create_table(
        "loops_webhook_secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_loops_webhook_secrets_account_id", "loops_webhook_secrets", ["account_id"])
    op.create_table(
        "loops_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.String(), nullable=False),
        sa.Column("event_name", sa.String(), nullable=False),
        sa.Column("event_time", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("contact_id", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("source_type", sa.String(), nullable=True),
        sa.Column("source_id", sa.String(), nullable=True),
        sa.Column("source_name", sa.Text(), nullable=True),
        sa.Column("email_id", sa.String(), nullable=True),
        sa.Column("email_message_id", sa.String(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "webhook_id", name="uq_loops_event_webhook"),
    )
    op.create_index(
        "ix_loops_events_contact", "loops_events", ["account_id", "email", "event_time"]
    )
    op.create_index("ix_loops_events_delivery_id", "loops_events", ["delivery_id"])
    op.create_index("ix_loops_events_email_id", "loops_events", ["account_id", "email_id"])
    op.create_index("ix_loops_events_received", "loops_events", ["event_name", "received_at"])
    # Loops names some contacts by userId: the join finds their deliveries by it.
    op.create_index("ix_delivery_user_id", "deliveries", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_delivery_user_id", table_name="deliveries")
    op.drop_table("loops_events")
    op.drop_table("loops_webhook_secrets")
    op.drop_index("ix_accounts_loops_webhook_token", table_name="accounts")
    op.drop_column("accounts", "loops_webhook_token")
