"""members: index of archived contacts (the network list subtracts their memberships)

Revision ID: 0018_archived_contacts
Revises: 0017_search_folding
Create Date: 2026-12-06 20:00:00

The network list counts each network's current contacts as all its memberships less
those of archived contacts. Archived contacts are few; this partial index finds them
without reading the whole contact table (200,000 rows in the scale benchmark).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0018_archived_contacts"
down_revision = "0017_search_folding"
branch_labels = None
depends_on = None

ARCHIVED = sa.text("archived_at IS NOT NULL")


def upgrade():
    op.create_index(
        "ix_contact_archived",
        "contact",
        ["id"],
        unique=False,
        sqlite_where=ARCHIVED,
        postgresql_where=ARCHIVED,
    )


def downgrade():
    op.drop_index("ix_contact_archived", table_name="contact")
