"""newsletter batches: the recipients a batch will have, until its ledger rows are written

Revision ID: 0032_newsletter_batch_planned
Revises: 0031_email_render_in_worker
Create Date: 2026-12-07 01:00:00

Sending used to start only once the whole ledger was written (100,000 rows with two
foreign-key checks each: over a second on PostgreSQL). Now the audience is fixed in one
statement as the batches, each holding its recipients as JSON (`planned`, state
"planned"); the first batches' rows are written at once and sending starts, and the
rest are written in chunks while they go out (crm.newsletters.ledger.write_planned).
`planned` is emptied when the rows are written.
"""

import sqlalchemy as sa
from alembic import op

revision = "0032_newsletter_batch_planned"
down_revision = "0031_email_render_in_worker"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("newsletter_batch", sa.Column("planned", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("newsletter_batch") as batch_op:
        batch_op.drop_column("planned")
