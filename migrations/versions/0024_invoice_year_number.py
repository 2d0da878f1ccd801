"""fees: index of invoices by year and number (the invoice list, a page at a time)

Revision ID: 0024_invoice_year_number
Revises: 0023_unpaid_invoices
Create Date: 2026-12-06 20:45:00

/fees/invoices shows one year's invoices in number order, a page at a time. With only
the number index, PostgreSQL walks it past every other year's invoices to find the
first page (117,000 of 133,000 rows skipped in the scale benchmark).
"""

from alembic import op

revision = "0024_invoice_year_number"
down_revision = "0023_unpaid_invoices"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_invoice_year_number", "invoice", ["year", "number"], unique=False)


def downgrade():
    op.drop_index("ix_invoice_year_number", table_name="invoice")
