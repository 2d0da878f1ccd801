"""fees: the reminder fees a credit note cancels

Revision ID: 0044_credit_note_fees
Revises: 0043_invoice_event
Create Date: 2026-12-08 00:30:00

A credit note may take at most what is creditable (the invoice amount less credit notes
and the write-offs beyond the reminder fees); the one that takes all of it cancels the
reminder fees not written off, so that the invoice page and the ledger agree that
nothing is owed (see crm.fees.models.creditable). `credit_note.fees_cancelled_ore` holds
what it cancelled; 0 for every credit note before this revision, whose invoices are
left as they were (their ledger entries were exported already).
"""

import sqlalchemy as sa
from alembic import op

revision = "0044_credit_note_fees"
down_revision = "0043_invoice_event"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_note") as batch:
        batch.add_column(
            sa.Column("fees_cancelled_ore", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.create_check_constraint(
            op.f("ck_credit_note_fees_cancelled_not_negative"), "fees_cancelled_ore >= 0"
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_note") as batch:
        batch.drop_constraint(op.f("ck_credit_note_fees_cancelled_not_negative"), type_="check")
        batch.drop_column("fees_cancelled_ore")
