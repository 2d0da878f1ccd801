"""newsletters: newsletters, recipient ledger, batches

Revision ID: 0005_newsletters
Revises: 0004_fees
Create Date: 2026-11-24 10:00:00

"""
from alembic import op
import sqlalchemy as sa
import crm.types  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision = '0005_newsletters'
down_revision = '0004_fees'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('newsletter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('preheader', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('topics', sa.JSON(), nullable=False),
    sa.Column('network_ids', sa.JSON(), nullable=False),
    sa.Column('municipalities', sa.JSON(), nullable=False),
    sa.Column('membership', sa.String(length=12), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('in_archive', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('scheduled_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('started_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('paused_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('pause_reason', sa.Text(), nullable=False),
    sa.Column('html', sa.Text(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('duplicated_from_id', sa.Integer(), nullable=True),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_newsletter_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['duplicated_from_id'], ['newsletter.id'], name=op.f('fk_newsletter_duplicated_from_id_newsletter'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_newsletter'))
    )
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_newsletter_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_newsletter_state'), ['state'], unique=False)

    op.create_table('newsletter_batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('newsletter_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sent_count', sa.Integer(), nullable=False),
    sa.Column('failed_count', sa.Integer(), nullable=False),
    sa.Column('skipped_count', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('in_flight_since', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ambiguous_since', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('resends', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('job_id', sa.String(length=100), nullable=True),
    sa.Column('enqueued_count', sa.Integer(), nullable=False),
    sa.Column('provider_message_id', sa.String(length=100), nullable=True),
    sa.Column('sent_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['newsletter_id'], ['newsletter.id'], name=op.f('fk_newsletter_batch_newsletter_id_newsletter'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_newsletter_batch')),
    sa.UniqueConstraint('newsletter_id', 'number', name='uq_newsletter_batch_number')
    )
    with op.batch_alter_table('newsletter_batch', schema=None) as batch_op:
        batch_op.create_index('ix_newsletter_batch_newsletter_state', ['newsletter_id', 'state'], unique=False)

    op.create_table('newsletter_recipient',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('newsletter_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('batch_number', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('skip_reason', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('provider_message_id', sa.String(length=100), nullable=True),
    sa.Column('sent_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('processed_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('opened_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('clicked_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('bounced_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('unsubscribed_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('spam_reported_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_newsletter_recipient_contact_id_contact'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['newsletter_id'], ['newsletter.id'], name=op.f('fk_newsletter_recipient_newsletter_id_newsletter'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_newsletter_recipient')),
    sa.UniqueConstraint('newsletter_id', 'contact_id', name='uq_newsletter_recipient_contact')
    )
    with op.batch_alter_table('newsletter_recipient', schema=None) as batch_op:
        batch_op.create_index('ix_newsletter_recipient_batch', ['newsletter_id', 'batch_number', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_newsletter_recipient_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index('ix_newsletter_recipient_state', ['newsletter_id', 'state'], unique=False)


def downgrade():
    with op.batch_alter_table('newsletter_recipient', schema=None) as batch_op:
        batch_op.drop_index('ix_newsletter_recipient_state')
        batch_op.drop_index(batch_op.f('ix_newsletter_recipient_contact_id'))
        batch_op.drop_index('ix_newsletter_recipient_batch')
    op.drop_table('newsletter_recipient')

    with op.batch_alter_table('newsletter_batch', schema=None) as batch_op:
        batch_op.drop_index('ix_newsletter_batch_newsletter_state')
    op.drop_table('newsletter_batch')

    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_newsletter_state'))
        batch_op.drop_index(batch_op.f('ix_newsletter_created_at'))
    op.drop_table('newsletter')
