"""fees: invoice and credit note lines with VAT; invoice kinds; invoices to persons

Every existing invoice becomes one line outside the scope of VAT (category O, 0 %)
with its amount as net and gross, so totals and KIDs are unchanged; every credit note
likewise. The one-invoice-per-company-and-year rule becomes one membership invoice per
company and membership year (membership_year is NULL for other kinds, and NULLs never
collide in a unique constraint on SQLite or PostgreSQL).

Revision ID: 0008_invoice_lines
Revises: 0007_registry_fields
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_invoice_lines"
down_revision = "0007_registry_fields"
branch_labels = None
depends_on = None


def _line_columns():
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("quantity_milli", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_ore", sa.BigInteger(), nullable=False),
        sa.Column("vat_category", sa.String(length=2), nullable=False),
        sa.Column("vat_rate_centi", sa.Integer(), nullable=False),
        sa.Column("net_ore", sa.BigInteger(), nullable=False),
        sa.Column("vat_ore", sa.BigInteger(), nullable=False),
    ]


def upgrade():
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=20), nullable=False, server_default="membership")
        )
        batch_op.add_column(sa.Column("membership_year", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("net_ore", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("vat_ore", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("customer_email", sa.String(length=254), nullable=False, server_default="")
        )
        batch_op.alter_column("company_id", existing_type=sa.Integer(), nullable=True)
        batch_op.drop_constraint("uq_invoice_company_id_year", type_="unique")

    op.execute("UPDATE invoice SET membership_year = year, net_ore = amount_ore, vat_ore = 0")

    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_invoice_company_id_membership_year", ["company_id", "membership_year"]
        )

    with op.batch_alter_table("credit_note", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("net_ore", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("vat_ore", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE credit_note SET net_ore = amount_ore, vat_ore = 0")

    op.create_table(
        "invoice_line",
        *_line_columns(),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_invoice_line_invoice_id_invoice"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_line")),
        sa.UniqueConstraint("invoice_id", "position", name="uq_invoice_line_invoice_id_position"),
    )
    op.create_table(
        "credit_note_line",
        *_line_columns(),
        sa.Column("credit_note_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_note.id"],
            name=op.f("fk_credit_note_line_credit_note_id_credit_note"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_line")),
        sa.UniqueConstraint(
            "credit_note_id", "position", name="uq_credit_note_line_credit_note_id_position"
        ),
    )
    # One line per existing document: quantity 1 (1000 thousandths), the amount as unit
    # price and net, VAT category O (outside the scope of VAT), rate 0, VAT 0.
    op.execute(
        "INSERT INTO invoice_line (invoice_id, position, description, quantity_milli,"
        " unit_price_ore, vat_category, vat_rate_centi, net_ore, vat_ore)"
        " SELECT id, 1, CASE WHEN description = '' THEN 'Faktura ' || CAST(number AS VARCHAR)"
        " ELSE description END, 1000, amount_ore, 'O', 0, amount_ore, 0 FROM invoice"
    )
    op.execute(
        "INSERT INTO credit_note_line (credit_note_id, position, description, quantity_milli,"
        " unit_price_ore, vat_category, vat_rate_centi, net_ore, vat_ore)"
        " SELECT credit_note.id, 1, 'Kreditering av faktura ' || CAST(invoice.number AS VARCHAR),"
        " 1000, credit_note.amount_ore, 'O', 0, credit_note.amount_ore, 0"
        " FROM credit_note JOIN invoice ON invoice.id = credit_note.invoice_id"
    )


def downgrade():
    op.drop_table("credit_note_line")
    op.drop_table("invoice_line")
    with op.batch_alter_table("credit_note", schema=None) as batch_op:
        batch_op.drop_column("vat_ore")
        batch_op.drop_column("net_ore")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_constraint("uq_invoice_company_id_membership_year", type_="unique")
    # Invoices to persons or of other kinds have no place in the old shape; money
    # records are never deleted, so the downgrade refuses rather than lose them.
    others = op.get_bind().scalar(
        sa.text("SELECT COUNT(*) FROM invoice WHERE kind <> 'membership' OR company_id IS NULL")
    )
    if others:
        raise RuntimeError(f"{others} invoices are not membership invoices; cannot downgrade")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_invoice_company_id_year", ["company_id", "year"])
        batch_op.alter_column("company_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("customer_email")
        batch_op.drop_column("vat_ore")
        batch_op.drop_column("net_ore")
        batch_op.drop_column("membership_year")
        batch_op.drop_column("kind")
