"""Alerts: the problems an alert went out for (bridge/alerts.py).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts_sent",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("alerts_sent")
