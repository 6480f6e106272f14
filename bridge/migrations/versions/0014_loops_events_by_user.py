"""A contact's timeline by the platform's user id (a Clerk or Supabase user, whose deletion
carries no email): Loops' events of a user, per account, in time order.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_loops_events_user", "loops_events", ["account_id", "user_id", "event_time"])


def downgrade() -> None:
    op.drop_index("ix_loops_events_user", table_name="loops_events")
