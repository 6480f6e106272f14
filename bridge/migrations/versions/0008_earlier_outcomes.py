"""What a delivery came to before an admin retried it or sent it again.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("earlier_outcomes", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "earlier_outcomes")
