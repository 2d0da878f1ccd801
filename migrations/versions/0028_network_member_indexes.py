"""members: a network's members in contact order, and current contacts' companies by id

Revision ID: 0028_network_member_indexes
Revises: 0027_newsletter_recipient_hot
Create Date: 2026-12-06 23:00:00

A network's page groups its members by company (37,000 members of 200,000 contacts in
the scale benchmark). Without these PostgreSQL hash-joined the memberships with a
sequential scan of every contact. With the memberships indexed by (network, contact)
and the current contacts' company ids indexed by contact id, it merge-joins two
index-only scans. The (network, contact) index serves everything the (network) one did.
"""

import sqlalchemy as sa
from alembic import op

revision = "0028_network_member_indexes"
down_revision = "0027_newsletter_recipient_hot"
branch_labels = None
depends_on = None

CURRENT = sa.text("archived_at IS NULL")


def upgrade():
    op.create_index(
        "ix_contact_network_network_contact",
        "contact_network",
        ["network_id", "contact_id"],
        unique=False,
    )
    op.drop_index("ix_contact_network_network_id", table_name="contact_network")
    op.create_index(
        "ix_contact_current_company",
        "contact",
        ["id", "company_id"],
        unique=False,
        sqlite_where=CURRENT,
        postgresql_where=CURRENT,
    )


def downgrade():
    op.drop_index("ix_contact_current_company", table_name="contact")
    op.create_index(
        "ix_contact_network_network_id", "contact_network", ["network_id"], unique=False
    )
    op.drop_index("ix_contact_network_network_contact", table_name="contact_network")
