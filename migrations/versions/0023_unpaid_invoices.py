"""fees: index of unpaid invoices by due date (the overdue page and its reminder count)

Revision ID: 0023_unpaid_invoices
Revises: 0022_newsletter_basis_counts
Create Date: 2026-12-06 20:40:00

The overdue page, its count of due reminders and the unpaid filter look for the few
unpaid invoices among every invoice ever issued (5,000 of 133,000 in the scale
benchmark); without an index each reads the whole table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_unpaid_invoices"
down_revision = "0022_newsletter_basis_counts"
branch_labels = None
depends_on = None

UNPAID = sa.text("status IN ('open', 'partially_paid')")


def upgrade():
    op.create_index(
        "ix_invoice_unpaid_due_date",
        "invoice",
        ["due_date"],
        unique=False,
        sqlite_where=UNPAID,
        postgresql_where=UNPAID,
    )


def downgrade():
    op.drop_index("ix_invoice_unpaid_due_date", table_name="invoice")
