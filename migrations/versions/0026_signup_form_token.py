"""subscriptions: a pending signup names the form token that started it (used once)

Revision ID: 0026_signup_form_token
Revises: 0025_subscriber_created_at
Create Date: 2026-12-06 22:40:00

A signup form's token starts one signup only. That was a Redis SET NX of its own on
every signup, a round trip while the request waited; the unique index on the row the
signup writes anyway does the same in the same statement (and does not stop checking
when Redis is away). Rows from before have none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0026_signup_form_token"
down_revision = "0025_subscriber_created_at"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("pending_signup", sa.Column("form_token", sa.String(length=32), nullable=True))
    op.create_index(
        "ix_pending_signup_form_token", "pending_signup", ["form_token"], unique=True
    )


def downgrade():
    op.drop_index("ix_pending_signup_form_token", table_name="pending_signup")
    with op.batch_alter_table("pending_signup") as batch_op:
        batch_op.drop_column("form_token")
