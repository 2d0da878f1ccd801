"""events: a registration names the form token that made it (used once)

Revision ID: 0037_registration_form_token
Revises: 0036_ledger_fillfactor
Create Date: 2026-12-07 12:45:00

The public registration form's token makes one registration only, as the signup
form's starts one signup only (0026): its digest is stored on the registration the
form made, under a unique index, so a replayed form (a double submit, a bot posting one
token again with other addresses) registers nobody. Rows from before, and those staff
made, have none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0037_registration_form_token"
down_revision = "0036_ledger_fillfactor"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("registration", sa.Column("form_token", sa.String(length=32), nullable=True))
    op.create_index("ix_registration_form_token", "registration", ["form_token"], unique=True)


def downgrade():
    op.drop_index("ix_registration_form_token", table_name="registration")
    with op.batch_alter_table("registration") as batch_op:
        batch_op.drop_column("form_token")
