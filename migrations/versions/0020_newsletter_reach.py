"""newsletter reach counters: sent, delivered, bounced, opened, clicked, spam per newsletter

Revision ID: 0020_newsletter_reach
Revises: 0019_newsletter_picks
Create Date: 2026-12-06 20:15:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0020_newsletter_reach"
down_revision = "0019_newsletter_picks"
branch_labels = None
depends_on = None

# counter column -> the ledger's timestamp it counts (None: every sent row)
COUNTERS = {
    "sent_count": None,
    "delivered_count": "delivered_at",
    "bounced_count": "bounced_at",
    "opened_count": "opened_at",
    "clicked_count": "clicked_at",
    "spam_count": "spam_reported_at",
}


def upgrade():
    with op.batch_alter_table("newsletter") as batch:
        for name in COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    # Backfill from the ledger, one pass over it.
    sums = ", ".join(
        f"SUM(CASE WHEN {column} IS NOT NULL THEN 1 ELSE 0 END) AS {name}"
        if column
        else f"COUNT(*) AS {name}"
        for name, column in COUNTERS.items()
    )
    op.execute(
        f"CREATE TEMPORARY TABLE reach_backfill AS SELECT newsletter_id, {sums} "
        "FROM newsletter_recipient WHERE state = 'sent' GROUP BY newsletter_id"
    )
    assignments = ", ".join(
        f"{name} = (SELECT r.{name} FROM reach_backfill r WHERE r.newsletter_id = newsletter.id)"
        for name in COUNTERS
    )
    op.execute(
        f"UPDATE newsletter SET {assignments} "
        "WHERE id IN (SELECT newsletter_id FROM reach_backfill)"
    )
    op.execute("DROP TABLE reach_backfill")


def downgrade():
    with op.batch_alter_table("newsletter") as batch:
        for name in reversed(COUNTERS):
            batch.drop_column(name)
