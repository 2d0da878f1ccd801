"""Reminders (purring): 14 days after the due date, 14 more days to pay, at most two."""

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.fees.errors import FeeError
from crm.fees.models import Reminder
from crm.fees.reminders import (
    reminders_due,
    reminders_due_count,
    send_due_reminders,
    send_reminder,
)
from crm.fees.services import overdue_invoices, register_payment
from crm.timeutil import utcnow
from tests.factories import make_fee_settings, make_invoiced_members


def sent(*invoices):
    """Invoices as the members got them (reminders only follow a sent invoice)."""
    for invoice in invoices:
        invoice.sent_at = utcnow()
    db.session.commit()
    return invoices


@pytest.fixture
def ctx(app):
    with app.test_request_context("/?lang=en"):
        yield app


def test_no_reminder_before_fourteen_days_after_the_due_date(ctx):
    (invoice,) = sent(*make_invoiced_members(1))
    due = invoice.due_date
    assert overdue_invoices(due + timedelta(days=1)) == [invoice]
    assert reminders_due(due + timedelta(days=13)) == []
    with pytest.raises(FeeError, match="may be sent from"):
        send_reminder(invoice, 1, due + timedelta(days=13))
    assert reminders_due(due + timedelta(days=14)) == [(invoice, 1)]


def test_reminders_give_fourteen_days_carry_the_fee_and_stop_at_two(ctx):
    from crm.mail.models import EmailMessage

    (invoice,) = sent(*make_invoiced_members(1))
    make_fee_settings(reminder_fee_ore=3_500)
    first_day = invoice.due_date + timedelta(days=14)
    run = send_due_reminders(first_day)
    db.session.commit()
    (first,) = run.sent
    assert (first.level, first.sent_on, first.new_due_date) == (
        1,
        first_day,
        first_day + timedelta(14),
    )
    assert first.fee_ore == 3_500
    assert invoice.fees_ore == 3_500 and invoice.outstanding_ore == invoice.amount_ore + 3_500
    assert invoice.status == "open"
    message = db.session.scalar(select(EmailMessage).where(EmailMessage.key == first.email_key))
    assert message.key == f"reminder:{invoice.id}:1"
    assert message.attachments[0].filename.startswith("purring-1-")

    # Nothing more until 14 days after the first reminder's deadline.
    assert send_due_reminders(first.new_due_date + timedelta(days=13)).sent == []
    second_day = first.new_due_date + timedelta(days=14)
    (second,) = send_due_reminders(second_day, with_fee=False).sent
    db.session.commit()
    assert second.level == 2 and second.fee_ore == 0
    assert send_due_reminders(second_day + timedelta(days=60)).sent == []
    with pytest.raises(FeeError, match="at most two"):
        send_reminder(invoice, 3, second_day + timedelta(days=60))
    with pytest.raises(FeeError, match="already sent"):
        send_reminder(invoice, 2, second_day + timedelta(days=60))
    assert db.session.scalar(select(func.count()).select_from(Reminder)) == 2
    assert db.session.scalar(select(func.count()).select_from(EmailMessage)) == 2


def test_paid_invoices_get_no_reminder(ctx):
    paid, unpaid = sent(*make_invoiced_members(2))
    register_payment(paid, paid.amount_ore, paid.issue_date)
    db.session.commit()
    day = unpaid.due_date + timedelta(days=20)
    assert [i for i, _level in reminders_due(day)] == [unpaid]
    with pytest.raises(FeeError, match="not unpaid"):
        send_reminder(paid, 1, day)


def test_the_reminder_fee_is_owed_until_paid(ctx):
    (invoice,) = sent(*make_invoiced_members(1))
    make_fee_settings(reminder_fee_ore=3_500)
    send_due_reminders(invoice.due_date + timedelta(days=14))
    register_payment(invoice, invoice.amount_ore, invoice.due_date + timedelta(days=20))
    db.session.commit()
    assert invoice.status == "partially_paid" and invoice.outstanding_ore == 3_500
    register_payment(invoice, 3_500, invoice.due_date + timedelta(days=21))
    assert invoice.status == "paid"


def test_an_invoice_never_sent_gets_no_reminder(ctx):
    never_sent, sent_one = make_invoiced_members(2)
    sent(sent_one)
    day = never_sent.due_date + timedelta(days=30)
    assert [i for i, _level in reminders_due(day)] == [sent_one]
    with pytest.raises(FeeError, match="has not been sent yet"):
        send_reminder(never_sent, 1, day)
    run = send_due_reminders(day)
    db.session.commit()
    assert [r.invoice for r in run.sent] == [sent_one]
    assert never_sent.reminders == [] and never_sent.fees_ore == 0


def test_a_reminder_fee_saved_above_the_legal_maximum_is_charged_at_the_maximum(ctx):
    from crm.fees.reminders import MAX_REMINDER_FEE_ORE

    (invoice,) = sent(*make_invoiced_members(1))
    make_fee_settings(reminder_fee_ore=10_000)  # from before the cap was checked
    (reminder,) = send_due_reminders(invoice.due_date + timedelta(days=14)).sent
    assert reminder.fee_ore == MAX_REMINDER_FEE_ORE == 3_500


def test_the_count_of_due_reminders_agrees_with_the_list_day_by_day(ctx):
    """The overdue page counts due reminders in the database; reminders_due decides."""
    first, second, late, never = make_invoiced_members(4)
    sent(first, second, late)
    due = first.due_date
    late.sent_at = datetime.combine(due + timedelta(days=40), time(23, 30), tzinfo=UTC)
    send_reminder(second, 1, max(due, second.sent_at.date()) + timedelta(days=14))
    db.session.commit()
    levels = set()
    for offset in range(0, 500, 3):
        day = due + timedelta(days=offset)
        listed = reminders_due(day)
        assert reminders_due_count(day) == len(listed), day
        levels |= {level for _invoice, level in listed}
    assert levels == {1, 2}
