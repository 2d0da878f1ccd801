"""registry fields: forced dissolution flag and a sub-unit's main unit

Revision ID: 0007_registry_fields
Revises: 0006_events
Create Date: 2026-12-06 16:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0007_registry_fields"
down_revision = "0006_events"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("company") as batch:
        batch.add_column(
            sa.Column("forced_dissolution", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("parent_orgnr", sa.String(length=9), nullable=False, server_default="")
        )


def downgrade():
    with op.batch_alter_table("company") as batch:
        batch.drop_column("parent_orgnr")
        batch.drop_column("forced_dissolution")
