"""newsletter basis counts: its ledger's rows per basis, counted once

Revision ID: 0022_newsletter_basis_counts
Revises: 0021_current_primary_contacts
Create Date: 2026-12-06 20:25:00

"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0022_newsletter_basis_counts"
down_revision = "0021_current_primary_contacts"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("newsletter") as batch:
        batch.add_column(sa.Column("basis_counts", sa.JSON(), nullable=True))
    bind = op.get_bind()
    per_newsletter: dict[int, list] = {}
    for newsletter_id, basis, network_id, number in bind.execute(
        sa.text(
            "SELECT newsletter_id, basis, basis_network_id, COUNT(*) FROM newsletter_recipient "
            "GROUP BY newsletter_id, basis, basis_network_id "
            "ORDER BY newsletter_id, basis, basis_network_id"
        )
    ):
        per_newsletter.setdefault(newsletter_id, []).append([basis, network_id, int(number)])
    for newsletter_id, rows in per_newsletter.items():
        bind.execute(
            sa.text("UPDATE newsletter SET basis_counts = :counts WHERE id = :id"),
            {"counts": json.dumps(rows), "id": newsletter_id},
        )


def downgrade():
    with op.batch_alter_table("newsletter") as batch:
        batch.drop_column("basis_counts")
