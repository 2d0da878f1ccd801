"""Reminders (purring) by the Norwegian rules: the one place they are decided.

The rules, and where they come from:

- Inkassoloven (lov 13. mai 1988 nr. 26) § 9: before a claim may go to debt
  collection the debtor must have had a written notice giving at least 14 days to pay
  from when it was sent. A reminder here is such a written notice and always gives 14
  days (`DEADLINE`) from the day it is sent.
- Inkassoforskriften (forskrift 14. juli 1989 nr. 562) § 1-2 first paragraph: a fee
  (purregebyr) may be charged only for a written reminder sent no earlier than 14
  days after the claim fell due that states the amount and what it is for, and the fee
  is at most one twentieth of the inkassosats at the time the reminder is sent
  (`MAX_REMINDER_FEE_ORE`). We send no reminder at all before then (`WAIT`), with or
  without a fee.
- Inkassoforskriften § 1-3: for the same claim fees may be charged for at most two
  reminders, and for the second only when the debtor has let a deadline of at least 14
  days set in the first one pass. Hence at most two levels (`MAX_LEVEL`); the second
  follows the first's deadline (itself 14 days) by another 14 days.
- A reminder follows an invoice the member has received: invoices never sent are not
  reminded, and the first reminder counts from the due date, never from earlier than
  the day the invoice was first sent (whose due date is itself set from that day,
  crm.fees.services.prepare_first_sending).
- The fee is optional (fee settings) and carries no VAT (it is compensation, not a sale).
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from flask_babel import gettext as _
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.fees.errors import FeeError
from crm.fees.models import UNPAID_STATUSES, Invoice, Reminder
from crm.fees.services import email_context, get_settings, invoice_recipient, refresh_invoices
from crm.timeutil import OSLO, today_oslo

WAIT = timedelta(days=14)  # after the due date before a reminder may go out
DEADLINE = timedelta(days=14)  # the new time to pay that a reminder gives
MAX_LEVEL = 2
# The highest reminder fee (purregebyr) the law allows: 1/20 of the inkassosats
# (inkassoforskriften § 1-2, the sats in force when the reminder is sent). The
# inkassosats is set each year; for 2026 it is 700 kr, so the cap is 35 kr. Update
# both when the sats changes (usually 1 January).
INKASSOSATS_ORE = 70_000  # 2026
MAX_REMINDER_FEE_ORE = INKASSOSATS_ORE // 20


def reference_due_date(invoice: Invoice, level: int) -> date | None:
    """The deadline that reminder `level` follows; None if the level before is missing.

    For the first reminder that is the invoice's due date, but never earlier than the
    day the invoice was first sent: an invoice sent late (before its due date was
    moved on sending, see services.prepare_first_sending) was not due before the
    member had it.
    """
    if level == 1:
        if invoice.sent_at is None:
            return invoice.due_date
        return max(invoice.due_date, invoice.sent_at.astimezone(OSLO).date())
    previous = next((r for r in invoice.reminders if r.level == level - 1), None)
    return previous.new_due_date if previous else None


def next_level(invoice: Invoice) -> int | None:
    sent = {r.level for r in invoice.reminders}
    level = max(sent, default=0) + 1
    return level if level <= MAX_LEVEL else None


def earliest_date(invoice: Invoice, level: int) -> date | None:
    reference = reference_due_date(invoice, level)
    return reference + WAIT if reference else None


def reminders_due(today: date | None = None) -> list[tuple[Invoice, int]]:
    """Sent, unpaid invoices that may get their next reminder today, with its level."""
    today = today or today_oslo()
    candidates = db.session.scalars(
        select(Invoice)
        .options(selectinload(Invoice.reminders))  # next_level reads them per invoice
        .where(
            Invoice.status.in_(UNPAID_STATUSES),
            Invoice.due_date <= today - WAIT,
            # A member cannot be reminded of a bill that never reached them.
            Invoice.sent_at.is_not(None),
        )
        .order_by(Invoice.due_date, Invoice.number)
    ).all()
    due = []
    for invoice in candidates:
        level = level_due(invoice, today)
        if level is not None:
            due.append((invoice, level))
    return due


def level_due(invoice: Invoice, today: date) -> int | None:
    """The reminder `invoice` may get today (1 or 2), or None; the invoice must be one
    `reminders_due` considers (sent, unpaid, due 14 days ago), with its reminders."""
    level = next_level(invoice)
    if level is None:
        return None
    earliest = earliest_date(invoice, level)
    return level if earliest is not None and earliest <= today else None


def reminders_due_count(today: date | None = None) -> int:
    """How many invoices `reminders_due(today)` gives, counted by the database: the
    overdue page shows the number without loading every overdue invoice (the same
    rules, written as conditions; tests check the two agree)."""
    today = today or today_oslo()
    last_day = today - WAIT
    # Sent on or before `last_day` in Oslo: before the Oslo midnight that ends it.
    sent_by = datetime.combine(last_day + timedelta(days=1), time(), tzinfo=OSLO).astimezone(UTC)
    reminders = select(Reminder.id).where(Reminder.invoice_id == Invoice.id)
    first = and_(~exists(reminders), Invoice.sent_at < sent_by)
    second = and_(
        exists(reminders.where(Reminder.level == 1, Reminder.new_due_date <= last_day)),
        ~exists(reminders.where(Reminder.level == MAX_LEVEL)),
    )
    return (
        db.session.scalar(
            select(func.count(Invoice.id)).where(
                Invoice.status.in_(UNPAID_STATUSES),
                Invoice.due_date <= last_day,
                Invoice.sent_at.is_not(None),
                or_(first, second),
            )
        )
        or 0
    )


def send_reminder(
    invoice: Invoice, level: int, today: date | None = None, with_fee: bool = True
) -> Reminder:
    """Create reminder `level` for `invoice` and queue it by email, or refuse (FeeError)."""
    from crm.fees.pdf import invoice_pdf, pdf_filename
    from crm.mail.services import queue_email

    today = today or today_oslo()
    if level not in (1, 2):
        raise FeeError(_("There are at most two reminders."))
    # The invoice as committed, locked: a credit note, payment or reminder made
    # meanwhile by another request is seen, and one made from now on waits for this.
    db.session.flush()
    db.session.refresh(invoice, with_for_update=True)  # (no-op on SQLite: one writer)
    db.session.expire(invoice, ["reminders"])
    if invoice.status not in UNPAID_STATUSES:
        raise FeeError(_("Invoice %(number)s is not unpaid.", number=invoice.number))
    if invoice.sent_at is None:
        raise FeeError(
            _(
                "Invoice %(number)s has not been sent yet: send it before reminding.",
                number=invoice.number,
            )
        )
    if any(r.level == level for r in invoice.reminders):
        raise FeeError(
            _(
                "Reminder %(level)s for invoice %(number)s was already sent.",
                level=level,
                number=invoice.number,
            )
        )
    earliest = earliest_date(invoice, level)
    if earliest is None:
        raise FeeError(_("Reminder 1 must be sent before reminder 2."))
    if today < earliest:
        raise FeeError(
            _(
                "Reminder %(level)s for invoice %(number)s may be sent from %(date)s.",
                level=level,
                number=invoice.number,
                date=earliest.strftime("%d.%m.%Y"),
            )
        )
    contact = invoice_recipient(invoice)
    settings = get_settings()
    reminder = Reminder(
        invoice=invoice,
        level=level,
        sent_on=today,
        new_due_date=today + DEADLINE,
        # A fee saved before the cap existed is still held to it.
        fee_ore=min(settings.reminder_fee_ore, MAX_REMINDER_FEE_ORE) if with_fee else 0,
        email_key=f"reminder:{invoice.id}:{level}",
    )
    db.session.add(reminder)
    refresh_invoices([invoice])
    queue_email(
        to=contact.email,
        to_name=contact.name,
        template="fees/reminder",
        context=email_context(invoice, settings, reminder),
        key=reminder.email_key,
        category="fee",
        contact_id=contact.contact_id,
        attachments=[
            (
                pdf_filename(invoice, reminder),
                "application/pdf",
                invoice_pdf(invoice, settings, reminder),
            )
        ],
        locale="nb",
    )
    return reminder


@dataclass
class ReminderRun:
    sent: list[Reminder] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def send_due_reminders(today: date | None = None, with_fee: bool = True) -> ReminderRun:
    """Send every reminder that is due today; problems (no contact) are listed, not fatal."""
    today = today or today_oslo()
    run = ReminderRun()
    for invoice, level in reminders_due(today):
        # send_reminder refuses before it changes anything, so one refusal
        # leaves the others to go on.
        try:
            run.sent.append(send_reminder(invoice, level, today, with_fee))
        except FeeError as exc:
            run.problems.append(str(exc))
    return run
