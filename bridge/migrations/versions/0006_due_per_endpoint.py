"""The queue finds due deliveries per endpoint.

``ix_delivery_due`` becomes (endpoint_id, status, next_attempt_at): a claim reads each
takeable endpoint's next due deliveries in order from the index, so one account's backlog
(held by a 429, or at its pace) costs nothing to look past, and never hides another
account's due deliveries.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_delivery_due", table_name="deliveries")
    op.create_index("ix_delivery_due", "deliveries", ["endpoint_id", "status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_due", table_name="deliveries")
    op.create_index("ix_delivery_due", "deliveries", ["status", "next_attempt_at"])
