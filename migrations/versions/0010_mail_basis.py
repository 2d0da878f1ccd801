"""mail basis: network mail, and why each ledger row may be mailed

Revision ID: 0010_mail_basis
Revises: 0009_ehf
Create Date: 2026-12-06 16:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010_mail_basis'
down_revision = '0009_ehf'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('kind', sa.String(length=20), nullable=False, server_default='newsletter')
        )
    with op.batch_alter_table('newsletter_recipient', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('basis', sa.String(length=12), nullable=False, server_default='consent')
        )
        batch_op.add_column(sa.Column('basis_network_id', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('newsletter_recipient', schema=None) as batch_op:
        batch_op.drop_column('basis_network_id')
        batch_op.drop_column('basis')
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.drop_column('kind')
