"""What keeps a late, older event from undoing a newer one, and from waiting on others.

- ``deliveries.lookup``: the platform's customer whose email is looked up at delivery (an
  event that names only a Stripe customer): the delivery is that customer's while its email
  is unknown, rather than every such delivery of the account sharing one empty key;
- ``contacts.deleted_at``: the provider event time of the deletion that removed the contact
  from Loops (or found it gone). The row stays, so an older event that arrives later does
  not create the contact again;
- ``contacts.email_at``: the provider event time of the email last sent for a contact
  matched on its userId, so an older event does not put back an email changed since.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("lookup", sa.String(), nullable=True))
    op.add_column("contacts", sa.Column("deleted_at", sa.Integer(), nullable=True))
    op.add_column("contacts", sa.Column("email_at", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("contacts", "email_at")
    op.drop_column("contacts", "deleted_at")
    op.drop_column("deliveries", "lookup")
