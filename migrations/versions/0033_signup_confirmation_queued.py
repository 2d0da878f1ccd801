"""subscriptions: a pending signup says when its confirmation email was stored

Revision ID: 0033_signup_confirmation_queued
Revises: 0032_newsletter_batch_planned
Create Date: 2026-12-07 01:00:00

The public signup stored its pending row, then the confirmation email, then queued the
email's send job, all while the visitor waited. The request now stores the pending row
only and wakes a worker job, which stores the confirmation email of every signup that
has none yet and marks it here, in the same transaction (so exactly one email each).
Signups from before already have theirs.
"""

import sqlalchemy as sa
from alembic import op

import crm.types

revision = "0033_signup_confirmation_queued"
down_revision = "0032_newsletter_batch_planned"
branch_labels = None
depends_on = None

UNMAILED = sa.text("confirmation_queued_at IS NULL")


def upgrade():
    op.add_column(
        "pending_signup",
        sa.Column("confirmation_queued_at", crm.types.UTCDateTime(timezone=True), nullable=True),
    )
    op.execute("UPDATE pending_signup SET confirmation_queued_at = created_at")
    op.create_index(
        "ix_pending_signup_unmailed",
        "pending_signup",
        ["id"],
        sqlite_where=UNMAILED,
        postgresql_where=UNMAILED,
    )


def downgrade():
    op.drop_index(
        "ix_pending_signup_unmailed",
        table_name="pending_signup",
        sqlite_where=UNMAILED,
        postgresql_where=UNMAILED,
    )
    with op.batch_alter_table("pending_signup") as batch_op:
        batch_op.drop_column("confirmation_queued_at")
