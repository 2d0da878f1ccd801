"""fees: pro-rata rule for members joining during the year; ledger accounts of the
accounting export

Revision ID: 0016_fee_rules
Revises: 0015_invitations
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_fee_rules"
down_revision = "0015_invitations"
branch_labels = None
depends_on = None

ACCOUNTS = {
    "account_receivable": "1500",
    "account_bank": "1920",
    "account_output_vat": "2700",
    "account_income_vat": "3000",
    "account_income_no_vat": "3200",
    "account_reminder_fees": "3900",
    "account_losses": "7830",
}


def upgrade():
    with op.batch_alter_table("fee_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pro_rata", sa.String(length=10), nullable=False, server_default="year")
        )
        for name, default in ACCOUNTS.items():
            batch_op.add_column(
                sa.Column(name, sa.String(length=10), nullable=False, server_default=default)
            )


def downgrade():
    with op.batch_alter_table("fee_settings", schema=None) as batch_op:
        for name in reversed(list(ACCOUNTS)):
            batch_op.drop_column(name)
        batch_op.drop_column("pro_rata")
