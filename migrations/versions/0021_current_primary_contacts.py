"""members: index of current primary contacts by company (the home page's check)

Revision ID: 0021_current_primary_contacts
Revises: 0020_newsletter_reach
Create Date: 2026-12-06 20:30:00

The home page lists member companies without a current primary contact: an anti-join of
the member companies with their current primary contacts. Without an index that reads
the whole contact table (200,000 rows in the scale benchmark) on every home page; this
partial index holds only the primary contacts' company ids.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_current_primary_contacts"
down_revision = "0020_newsletter_reach"
branch_labels = None
depends_on = None

CURRENT_PRIMARY = sa.text("is_primary_contact AND active AND archived_at IS NULL")


def upgrade():
    op.create_index(
        "ix_contact_current_primary",
        "contact",
        ["company_id"],
        unique=False,
        sqlite_where=CURRENT_PRIMARY,
        postgresql_where=CURRENT_PRIMARY,
    )


def downgrade():
    op.drop_index("ix_contact_current_primary", table_name="contact")
