"""ehf: seller VAT registration and Foretaksregisteret in the fee settings; invoice deliveries

Revision ID: 0009_ehf
Revises: 0008_invoice_lines
Create Date: 2026-12-06 16:20:00

"""

from alembic import op
import sqlalchemy as sa
import crm.types  # noqa: F401  (custom column types)


revision = "0009_ehf"
down_revision = "0008_invoice_lines"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("fee_settings") as batch:
        batch.add_column(
            sa.Column("vat_registered", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("foretaksregisteret", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "invoice_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("credit_note_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("delivered_at", crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recipient", sa.String(length=300), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.CheckConstraint(
            "channel IN ('email', 'ehf', 'post')", name=op.f("ck_invoice_delivery_known_channel")
        ),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_note.id"],
            name=op.f("fk_invoice_delivery_credit_note_id_credit_note"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_invoice_delivery_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_delivery")),
    )
    op.create_index(
        op.f("ix_invoice_delivery_invoice_id"), "invoice_delivery", ["invoice_id"], unique=False
    )


def downgrade():
    op.drop_index(op.f("ix_invoice_delivery_invoice_id"), table_name="invoice_delivery")
    op.drop_table("invoice_delivery")
    with op.batch_alter_table("fee_settings") as batch:
        batch.drop_column("foretaksregisteret")
        batch.drop_column("vat_registered")
