"""organisation settings: name, logo, sender, privacy policy, footer, invoice sender

Revision ID: 0012_organisation
Revises: 0011_followups

"""
from alembic import op
import sqlalchemy as sa
import crm.types  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision = '0012_organisation'
down_revision = '0011_followups'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('organisation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sender_name', sa.String(length=200), nullable=False),
    sa.Column('sender_email', sa.String(length=254), nullable=False),
    sa.Column('privacy_url', sa.String(length=500), nullable=False),
    sa.Column('footer_text', sa.Text(), nullable=False),
    sa.Column('logo_filename', sa.String(length=100), nullable=False),
    sa.Column('logo_content_type', sa.String(length=50), nullable=False),
    sa.Column('orgnr', sa.String(length=9), nullable=False),
    sa.Column('street_address', sa.String(length=300), nullable=False),
    sa.Column('postal_code', sa.String(length=10), nullable=False),
    sa.Column('postal_place', sa.String(length=100), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('updated_at', crm.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisation'))
    )


def downgrade():
    op.drop_table('organisation')
