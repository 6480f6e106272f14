"""The latest Loops webhook each account refused, for the account's page.

- ``accounts.loops_webhook_refused_at``: when (unix time);
- ``accounts.loops_webhook_refused``: the status and the reason sent back to Loops.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("loops_webhook_refused_at", sa.Float(), nullable=True))
    op.add_column("accounts", sa.Column("loops_webhook_refused", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "loops_webhook_refused")
    op.drop_column("accounts", "loops_webhook_refused_at")
