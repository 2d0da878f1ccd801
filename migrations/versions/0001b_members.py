"""members: index for the contact list (current contacts in name order)

Revision ID: 0001b_members
Revises: 0001_foundation
Create Date: 2026-11-23 21:00:00

The contact list shows current (not archived) contacts by last name, first name. With
only the plain last-name index, a page deep in 100,000 contacts read and sorted every
row before it (about a second on SQLite); this partial index serves the order, the
offset and the count from one index scan (a couple of milliseconds).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0001b_members"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

CURRENT = sa.text("archived_at IS NULL")


def upgrade():
    op.create_index(
        "ix_contact_current_name",
        "contact",
        ["last_name", "first_name", "id"],
        unique=False,
        sqlite_where=CURRENT,
        postgresql_where=CURRENT,
    )


def downgrade():
    op.drop_index("ix_contact_current_name", table_name="contact")
