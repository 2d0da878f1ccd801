"""follow-ups, activity participants, network leaders

Revision ID: 0011_followups
Revises: 0010_mail_basis

"""
from alembic import op
import sqlalchemy as sa
import crm.types  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision = '0011_followups'
down_revision = '0010_mail_basis'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('network_leader',
    sa.Column('network_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_network_leader_contact_id_contact'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['network_id'], ['network.id'], name=op.f('fk_network_leader_network_id_network'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('network_id', 'contact_id', name=op.f('pk_network_leader'))
    )
    with op.batch_alter_table('network_leader', schema=None) as batch_op:
        batch_op.create_index('ix_network_leader_contact_id', ['contact_id'], unique=False)

    op.create_table('activity_participant',
    sa.Column('activity_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['activity_id'], ['activity.id'], name=op.f('fk_activity_participant_activity_id_activity'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_activity_participant_contact_id_contact'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('activity_id', 'contact_id', name=op.f('pk_activity_participant'))
    )
    with op.batch_alter_table('activity_participant', schema=None) as batch_op:
        batch_op.create_index('ix_activity_participant_contact_id', ['contact_id'], unique=False)

    op.create_table('follow_up',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('what', sa.String(length=300), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.Column('company_id', sa.Integer(), nullable=True),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('activity_id', sa.Integer(), nullable=True),
    sa.Column('done_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('done_by_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['activity_id'], ['activity.id'], name=op.f('fk_follow_up_activity_id_activity'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['assignee_id'], ['user.id'], name=op.f('fk_follow_up_assignee_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_follow_up_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_follow_up_contact_id_contact'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by_id'], ['user.id'], name=op.f('fk_follow_up_created_by_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['done_by_id'], ['user.id'], name=op.f('fk_follow_up_done_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_follow_up'))
    )
    with op.batch_alter_table('follow_up', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_follow_up_activity_id'), ['activity_id'], unique=False)
        batch_op.create_index('ix_follow_up_assignee_due', ['assignee_id', 'due_on'], unique=False)
        batch_op.create_index(batch_op.f('ix_follow_up_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_follow_up_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index('ix_follow_up_open_due', ['due_on'], unique=False, sqlite_where=sa.text('done_at IS NULL'), postgresql_where=sa.text('done_at IS NULL'))

    with op.batch_alter_table('activity', schema=None) as batch_op:
        batch_op.add_column(sa.Column('network_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_activity_network_id'), ['network_id'], unique=False)
        batch_op.create_index('ix_activity_occurred_on', ['occurred_on'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_activity_network_id_network'), 'network', ['network_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('followup_digest', sa.Boolean(), nullable=False, server_default=sa.true()))



def downgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('followup_digest')

    with op.batch_alter_table('activity', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_activity_network_id_network'), type_='foreignkey')
        batch_op.drop_index('ix_activity_occurred_on')
        batch_op.drop_index(batch_op.f('ix_activity_network_id'))
        batch_op.drop_column('network_id')

    with op.batch_alter_table('follow_up', schema=None) as batch_op:
        batch_op.drop_index('ix_follow_up_open_due', sqlite_where=sa.text('done_at IS NULL'), postgresql_where=sa.text('done_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_follow_up_contact_id'))
        batch_op.drop_index(batch_op.f('ix_follow_up_company_id'))
        batch_op.drop_index('ix_follow_up_assignee_due')
        batch_op.drop_index(batch_op.f('ix_follow_up_activity_id'))

    op.drop_table('follow_up')
    with op.batch_alter_table('activity_participant', schema=None) as batch_op:
        batch_op.drop_index('ix_activity_participant_contact_id')

    op.drop_table('activity_participant')
    with op.batch_alter_table('network_leader', schema=None) as batch_op:
        batch_op.drop_index('ix_network_leader_contact_id')

    op.drop_table('network_leader')
