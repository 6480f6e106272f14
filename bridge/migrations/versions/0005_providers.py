"""Clerk, Supabase and everything an endpoint can do with an event.

- ``endpoints.loops_events`` (a Loops event per event type), ``mailing_lists`` (lists new
  contacts join) and ``on_delete`` (what a deletion does: unsubscribe, the default, for the
  endpoints that exist).
- ``deliveries.user_id`` (the platform's user id, Loops' userId) and ``deletion``.
- ``contacts.email`` becomes ``contacts.identity``: the userId where the platform has one,
  else the lowercased email, as before for every existing row.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, on SQLite too: nothing here needs batch mode's table copy.
    op.add_column("endpoints", sa.Column("loops_events", sa.Text(), nullable=True))
    op.add_column("endpoints", sa.Column("mailing_lists", sa.String(), nullable=True))
    op.add_column(
        "endpoints",
        sa.Column("on_delete", sa.String(), server_default="unsubscribe", nullable=False),
    )
    op.add_column("deliveries", sa.Column("user_id", sa.String(), nullable=True))
    op.add_column(
        "deliveries", sa.Column("deletion", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.alter_column("contacts", "email", new_column_name="identity")


def downgrade() -> None:
    op.alter_column("contacts", "identity", new_column_name="email")
    op.drop_column("deliveries", "deletion")
    op.drop_column("deliveries", "user_id")
    op.drop_column("endpoints", "on_delete")
    op.drop_column("endpoints", "mailing_lists")
    op.drop_column("endpoints", "loops_events")
