"""cache stamp: when each process's copy of settings, topics and wordings is stale

Revision ID: 0030_cache_stamp
Revises: 0029_invoice_issue_date
Create Date: 2026-12-06 23:00:00

Every public page and email read the organisation's settings, the topics, the networks
and the consent wording from the database: four queries a signup. Each process now keeps
a copy (crm/cache.py), valid while this stamp is unchanged; any change to those tables
writes a new stamp in its own transaction.
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0030_cache_stamp"
down_revision = "0029_invoice_issue_date"
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        "cache_stamp",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("stamp", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cache_stamp")),
    )
    op.bulk_insert(table, [{"name": "reference", "stamp": secrets.token_hex(16)}])


def downgrade():
    op.drop_table("cache_stamp")
