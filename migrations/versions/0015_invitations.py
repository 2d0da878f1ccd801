"""invitations: event mail through the newsletter ledger, and "can't come" answers

Revision ID: 0015_invitations
Revises: 0014_organisation_sender
Create Date: 2026-12-06 16:20:00

"""
from alembic import op
import sqlalchemy as sa
import crm.types  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision = '0015_invitations'
down_revision = '0014_organisation_sender'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        # Room for the event kinds' names ("event_registrant_reminder").
        batch_op.alter_column(
            'kind', existing_type=sa.String(length=20), type_=sa.String(length=30),
            existing_nullable=False, existing_server_default='newsletter',
        )
        batch_op.add_column(sa.Column('event_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_newsletter_event_id'), ['event_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_newsletter_event_id_event'), 'event', ['event_id'], ['id'],
            ondelete='SET NULL',
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_newsletter_parent_id_newsletter'), 'newsletter', ['parent_id'],
            ['id'], ondelete='SET NULL',
        )
    op.create_table(
        'event_invitation_answer',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('contact_id', sa.Integer(), nullable=False),
        sa.Column('answer', sa.String(length=12), nullable=False),
        sa.Column('answered_at', crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ip', sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(
            ['contact_id'], ['contact.id'],
            name=op.f('fk_event_invitation_answer_contact_id_contact'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['event_id'], ['event.id'],
            name=op.f('fk_event_invitation_answer_event_id_event'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_event_invitation_answer')),
        sa.UniqueConstraint(
            'event_id', 'contact_id', name='uq_event_invitation_answer_contact'
        ),
    )
    with op.batch_alter_table('event_invitation_answer', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_event_invitation_answer_contact_id'), ['contact_id'], unique=False
        )


def downgrade():
    with op.batch_alter_table('event_invitation_answer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_invitation_answer_contact_id'))
    op.drop_table('event_invitation_answer')
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_newsletter_parent_id_newsletter'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_newsletter_event_id_event'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_newsletter_event_id'))
        batch_op.drop_column('parent_id')
        batch_op.drop_column('event_id')
        batch_op.alter_column(
            'kind', existing_type=sa.String(length=30), type_=sa.String(length=20),
            existing_nullable=False, existing_server_default='newsletter',
        )
