"""newsletter picks: the contacts a mailing is limited to (bulk "invite to an event")

Revision ID: 0019_newsletter_picks
Revises: 0018_archived_contacts
Create Date: 2026-12-14 12:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0019_newsletter_picks"
down_revision = "0018_archived_contacts"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "newsletter_pick",
        sa.Column("newsletter_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contact.id"],
            name=op.f("fk_newsletter_pick_contact_id_contact"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletter.id"],
            name=op.f("fk_newsletter_pick_newsletter_id_newsletter"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("newsletter_id", "contact_id", name=op.f("pk_newsletter_pick")),
    )
    op.create_index("ix_newsletter_pick_contact_id", "newsletter_pick", ["contact_id"])


def downgrade():
    op.drop_index("ix_newsletter_pick_contact_id", table_name="newsletter_pick")
    op.drop_table("newsletter_pick")
