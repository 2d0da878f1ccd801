"""fees: settings, schedules, invoices, credit notes, payments, OCR imports, reminders

Revision ID: 0004_fees
Revises: 0003_subscriptions
"""
from alembic import op
import sqlalchemy as sa

import crm.types


# revision identifiers, used by Alembic.
revision = "0004_fees"
down_revision = "0003_subscriptions"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('fee_schedule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fee_schedule')),
    sa.UniqueConstraint('year', name=op.f('uq_fee_schedule_year'))
    )
    op.create_table('fee_settings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cluster_name', sa.String(length=200), nullable=False),
    sa.Column('orgnr', sa.String(length=9), nullable=False),
    sa.Column('bank_account', sa.String(length=11), nullable=False),
    sa.Column('street_address', sa.String(length=300), nullable=False),
    sa.Column('postal_code', sa.String(length=10), nullable=False),
    sa.Column('postal_place', sa.String(length=100), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('next_invoice_number', sa.Integer(), nullable=False),
    sa.Column('kid_length', sa.Integer(), nullable=False),
    sa.Column('kid_scheme', sa.String(length=5), nullable=False),
    sa.Column('due_days', sa.Integer(), nullable=False),
    sa.Column('reminder_fee_ore', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fee_settings'))
    )
    op.create_table('fee_override',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=True),
    sa.Column('amount_ore', sa.BigInteger(), nullable=True),
    sa.Column('discount_percent', sa.Integer(), nullable=True),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(amount_ore IS NULL) <> (discount_percent IS NULL)', name=op.f('ck_fee_override_amount_or_discount')),
    sa.CheckConstraint('amount_ore IS NULL OR amount_ore >= 0', name=op.f('ck_fee_override_amount_not_negative')),
    sa.CheckConstraint('discount_percent IS NULL OR (discount_percent >= 0 AND discount_percent <= 100)', name=op.f('ck_fee_override_discount_in_range')),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_fee_override_company_id_company'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fee_override'))
    )
    with op.batch_alter_table('fee_override', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fee_override_company_id'), ['company_id'], unique=False)

    op.create_table('fee_tier',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.Column('min_employees', sa.Integer(), nullable=False),
    sa.Column('max_employees', sa.Integer(), nullable=True),
    sa.Column('amount_ore', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('amount_ore >= 0', name=op.f('ck_fee_tier_amount_not_negative')),
    sa.CheckConstraint('min_employees >= 0', name=op.f('ck_fee_tier_min_not_negative')),
    sa.ForeignKeyConstraint(['schedule_id'], ['fee_schedule.id'], name=op.f('fk_fee_tier_schedule_id_fee_schedule'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fee_tier'))
    )
    with op.batch_alter_table('fee_tier', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fee_tier_schedule_id'), ['schedule_id'], unique=False)

    op.create_table('invoice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('kid', sa.String(length=25), nullable=False),
    sa.Column('amount_ore', sa.BigInteger(), nullable=False),
    sa.Column('issue_date', sa.Date(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('description', sa.String(length=300), nullable=False),
    sa.Column('pricing_note', sa.String(length=400), nullable=False),
    sa.Column('customer_name', sa.String(length=200), nullable=False),
    sa.Column('customer_orgnr', sa.String(length=9), nullable=False),
    sa.Column('customer_address', sa.String(length=300), nullable=False),
    sa.Column('customer_postal_code', sa.String(length=10), nullable=False),
    sa.Column('customer_postal_place', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('paid_ore', sa.BigInteger(), nullable=False),
    sa.Column('written_off_ore', sa.BigInteger(), nullable=False),
    sa.Column('credited_ore', sa.BigInteger(), nullable=False),
    sa.Column('fees_ore', sa.BigInteger(), nullable=False),
    sa.Column('sent_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('send_count', sa.Integer(), nullable=False),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount_ore >= 0', name=op.f('ck_invoice_amount_not_negative')),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_invoice_company_id_company')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoice')),
    sa.UniqueConstraint('company_id', 'year', name='uq_invoice_company_id_year'),
    sa.UniqueConstraint('kid', name=op.f('uq_invoice_kid')),
    sa.UniqueConstraint('number', name=op.f('uq_invoice_number'))
    )
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invoice_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_due_date'), ['due_date'], unique=False)
        batch_op.create_index('ix_invoice_year_status', ['year', 'status'], unique=False)

    op.create_table('ocr_import',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('transmission_number', sa.String(length=7), nullable=False),
    sa.Column('data_transmitter', sa.String(length=8), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('nets_date', sa.Date(), nullable=True),
    sa.Column('assignment_count', sa.Integer(), nullable=False),
    sa.Column('transaction_count', sa.Integer(), nullable=False),
    sa.Column('matched_count', sa.Integer(), nullable=False),
    sa.Column('unmatched_count', sa.Integer(), nullable=False),
    sa.Column('total_ore', sa.BigInteger(), nullable=False),
    sa.Column('matched_ore', sa.BigInteger(), nullable=False),
    sa.Column('unmatched_ore', sa.BigInteger(), nullable=False),
    sa.Column('imported_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('imported_by_id', sa.Integer(), nullable=True),
    sa.Column('imported_by_label', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['imported_by_id'], ['user.id'], name=op.f('fk_ocr_import_imported_by_id_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ocr_import')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_ocr_import_content_hash')),
    sa.UniqueConstraint('data_transmitter', 'transmission_number', name='uq_ocr_import_transmission')
    )
    op.create_table('credit_note',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('amount_ore', sa.BigInteger(), nullable=False),
    sa.Column('issue_date', sa.Date(), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount_ore > 0', name=op.f('ck_credit_note_amount_positive')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoice.id'], name=op.f('fk_credit_note_invoice_id_invoice')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_note')),
    sa.UniqueConstraint('number', name=op.f('uq_credit_note_number'))
    )
    with op.batch_alter_table('credit_note', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_credit_note_invoice_id'), ['invoice_id'], unique=False)

    op.create_table('payment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('source', sa.String(length=10), nullable=False),
    sa.Column('amount_ore', sa.BigInteger(), nullable=False),
    sa.Column('paid_on', sa.Date(), nullable=False),
    sa.Column('booked_on', sa.Date(), nullable=True),
    sa.Column('kid', sa.String(length=25), nullable=False),
    sa.Column('transaction_number', sa.String(length=20), nullable=False),
    sa.Column('archive_reference', sa.String(length=20), nullable=False),
    sa.Column('payer_account', sa.String(length=11), nullable=False),
    sa.Column('note', sa.String(length=300), nullable=False),
    sa.Column('ocr_import_id', sa.Integer(), nullable=True),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoice.id'], name=op.f('fk_payment_invoice_id_invoice')),
    sa.ForeignKeyConstraint(['ocr_import_id'], ['ocr_import.id'], name=op.f('fk_payment_ocr_import_id_ocr_import')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment'))
    )
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.create_index('ix_payment_invoice_kind', ['invoice_id', 'kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_payment_ocr_import_id'), ['ocr_import_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_payment_paid_on'), ['paid_on'], unique=False)

    op.create_table('reminder',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('sent_on', sa.Date(), nullable=False),
    sa.Column('new_due_date', sa.Date(), nullable=False),
    sa.Column('fee_ore', sa.BigInteger(), nullable=False),
    sa.Column('email_key', sa.String(length=100), nullable=False),
    sa.Column('created_at', crm.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('level IN (1, 2)', name=op.f('ck_reminder_level_one_or_two')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoice.id'], name=op.f('fk_reminder_invoice_id_invoice')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder')),
    sa.UniqueConstraint('invoice_id', 'level', name='uq_reminder_invoice_id_level')
    )
    with op.batch_alter_table('reminder', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reminder_invoice_id'), ['invoice_id'], unique=False)

    op.create_table('unmatched_payment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ocr_import_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('kid', sa.String(length=25), nullable=False),
    sa.Column('amount_ore', sa.BigInteger(), nullable=False),
    sa.Column('paid_on', sa.Date(), nullable=False),
    sa.Column('booked_on', sa.Date(), nullable=True),
    sa.Column('transaction_number', sa.String(length=20), nullable=False),
    sa.Column('archive_reference', sa.String(length=20), nullable=False),
    sa.Column('payer_account', sa.String(length=11), nullable=False),
    sa.Column('text', sa.String(length=100), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('handled_note', sa.String(length=300), nullable=False),
    sa.Column('handled_at', crm.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['ocr_import_id'], ['ocr_import.id'], name=op.f('fk_unmatched_payment_ocr_import_id_ocr_import')),
    sa.ForeignKeyConstraint(['payment_id'], ['payment.id'], name=op.f('fk_unmatched_payment_payment_id_payment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unmatched_payment'))
    )
    with op.batch_alter_table('unmatched_payment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unmatched_payment_ocr_import_id'), ['ocr_import_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_unmatched_payment_state'), ['state'], unique=False)



def downgrade():
    with op.batch_alter_table('unmatched_payment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unmatched_payment_state'))
        batch_op.drop_index(batch_op.f('ix_unmatched_payment_ocr_import_id'))

    op.drop_table('unmatched_payment')
    with op.batch_alter_table('reminder', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reminder_invoice_id'))

    op.drop_table('reminder')
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payment_paid_on'))
        batch_op.drop_index(batch_op.f('ix_payment_ocr_import_id'))
        batch_op.drop_index('ix_payment_invoice_kind')

    op.drop_table('payment')
    with op.batch_alter_table('credit_note', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credit_note_invoice_id'))

    op.drop_table('credit_note')
    op.drop_table('ocr_import')
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_index('ix_invoice_year_status')
        batch_op.drop_index(batch_op.f('ix_invoice_due_date'))
        batch_op.drop_index(batch_op.f('ix_invoice_company_id'))

    op.drop_table('invoice')
    with op.batch_alter_table('fee_tier', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fee_tier_schedule_id'))

    op.drop_table('fee_tier')
    with op.batch_alter_table('fee_override', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fee_override_company_id'))

    op.drop_table('fee_override')
    op.drop_table('fee_settings')
    op.drop_table('fee_schedule')
