"""mail: a message may be queued unrendered, with the context its send job renders it with

Revision ID: 0031_email_render_in_worker
Revises: 0030_cache_stamp
Create Date: 2026-12-06 23:10:00

The public signup answered only after rendering its confirmation email's three
templates; it now stores their context and the send job renders them just before
sending (crm.mail.services.render_stored).
"""

import sqlalchemy as sa
from alembic import op

revision = "0031_email_render_in_worker"
down_revision = "0030_cache_stamp"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("email_message", sa.Column("context", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("email_message") as batch_op:
        batch_op.drop_column("context")
