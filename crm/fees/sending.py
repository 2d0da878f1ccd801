"""Sending invoices: recipient, email or post, what is still unsent, texts for emails.

Like the rest of the fee services: changes the session and flushes, never commits.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.fees.errors import FeeError
from crm.fees.models import (
    FeeSettings,
    Invoice,
    Reminder,
)
from crm.fees.money import plain
from crm.fees.settings import get_settings
from crm.members.models import Company, Contact
from crm.numbers import is_digits
from crm.organisation import services as organisation
from crm.timeutil import OSLO, today_oslo, utcnow


def invoice_contact(company: Company) -> Contact:
    """Who gets the invoice: the active invoice contact with a usable email, else the
    primary contact; FeeError when there is neither."""
    from crm.mail.services import InvalidAddress, normalize_address

    candidates = []
    for contact in company.contacts:
        if not contact.active or not contact.email or contact.archived_at:
            continue
        try:
            normalize_address(contact.email)
        except InvalidAddress:
            continue
        candidates.append(contact)
    contact = next((c for c in candidates if c.is_invoice_contact), None) or next(
        (c for c in candidates if c.is_primary_contact), None
    )
    if contact is None:
        raise FeeError(
            _("%(company)s has no invoice contact with an email address.", company=company.name)
        )
    return contact


@dataclass
class Recipient:
    email: str
    name: str
    contact_id: int | None = None


def invoice_recipient(invoice: Invoice) -> Recipient:
    """Where an invoice (or its reminder) is emailed: the company's invoice contact
    (see `invoice_contact`), or for an invoice to a person their email on the invoice;
    FeeError when there is none."""
    if invoice.company is not None:
        contact = invoice_contact(invoice.company)
        return Recipient(contact.email, contact.name, contact.id)
    if not invoice.customer_email:
        raise FeeError(_("%(customer)s has no email address.", customer=invoice.customer_name))
    return Recipient(invoice.customer_email, invoice.customer_name)


def sending_time(today: date | None) -> datetime:
    """Now, or noon in Oslo of `today` when the caller names the sending day."""
    if today is None or today == today_oslo():
        return utcnow()
    return datetime.combine(today, time(12), OSLO).astimezone(UTC)


def prepare_first_sending(invoice: Invoice, today: date | None = None) -> None:
    """Before an invoice first goes out (email, EHF or post): its payment terms run from
    that day, so an invoice sent weeks after it was made never arrives already due.
    The due date moves to today + the settings' payment terms when that is later; a
    resend changes nothing."""
    if invoice.sent_at is not None or invoice.send_count:
        return
    terms = (today or today_oslo()) + timedelta(days=get_settings().due_days)
    if invoice.due_date < terms:
        invoice.due_date = terms


def queue_invoice_email(invoice: Invoice, *, to: str | None = None, today: date | None = None):
    """Queue the invoice with its PDF to its recipient (`invoice_recipient`), or to the
    address `to` typed by the treasurer; re-sendable.

    The first sending sets the due date from the day it goes out
    (`prepare_first_sending`). Each sending gets its own key (`invoice:<id>:<n>`), so a
    resend is a new email while a retried job of the same sending is not.
    """
    from crm.fees.pdf import invoice_pdf, pdf_filename
    from crm.mail.services import InvalidAddress, normalize_address, queue_email

    if invoice.status == "credited":
        raise FeeError(_("A credited invoice is not sent."))
    if to is not None:
        try:
            recipient = Recipient(normalize_address(to), invoice.customer_name)
        except InvalidAddress as exc:
            raise FeeError(_("%(address)s is not a usable email address.", address=to)) from exc
    else:
        recipient = invoice_recipient(invoice)
    settings = get_settings()
    prepare_first_sending(invoice, today)
    invoice.send_count = (invoice.send_count or 0) + 1
    invoice.sent_at = sending_time(today)
    message = queue_email(
        to=recipient.email,
        to_name=recipient.name,
        template="fees/invoice",
        context=email_context(invoice, settings),
        key=f"invoice:{invoice.id}:{invoice.send_count}",
        category="fee",
        contact_id=recipient.contact_id,
        attachments=[(pdf_filename(invoice), "application/pdf", invoice_pdf(invoice, settings))],
        locale="nb",
    )
    from crm.fees.delivery import record_delivery

    record_delivery(invoice, "email", recipient.email, f"invoice:{invoice.id}:{invoice.send_count}")
    db.session.flush()
    return message


def mark_sent_by_post(invoices: Iterable[Invoice], today: date | None = None) -> list[Invoice]:
    """Record that these invoices go out by post (printed from the PDF batch): they
    count as sent today, with due dates from today (`prepare_first_sending`), and the
    delivery is recorded (channel "post"). Credited invoices are left out."""
    from crm.fees.delivery import record_delivery

    marked = []
    for invoice in invoices:
        if invoice.status == "credited":
            continue
        prepare_first_sending(invoice, today)
        invoice.send_count = (invoice.send_count or 0) + 1
        invoice.sent_at = sending_time(today)
        address = ", ".join(
            part
            for part in (
                invoice.customer_address,
                f"{invoice.customer_postal_code} {invoice.customer_postal_place}".strip(),
            )
            if part
        )
        record_delivery(invoice, "post", address)
        marked.append(invoice)
    db.session.flush()
    return marked


@dataclass
class Skipped:
    """An unsent invoice that cannot be emailed, and why."""

    invoice: Invoice
    reason: str


def unsent_invoices(year: int | None = None) -> list[Invoice]:
    """Invoices never sent (and not credited), by number, with their companies' contacts."""
    query = (
        select(Invoice)
        .options(selectinload(Invoice.company).selectinload(Company.contacts))
        .where(Invoice.send_count == 0, Invoice.status != "credited")
        .order_by(Invoice.number)
    )
    if year is not None:
        query = query.where(Invoice.year == year)
    return db.session.scalars(query).all()


def split_sendable(invoices: Iterable[Invoice]) -> tuple[list[Invoice], list[Skipped]]:
    """Unsent invoices that can go out, and those that cannot, with the reason: no
    invoice contact with a usable address (or a person without an email) and no EHF
    address either. The access point is asked only about the ones without email."""
    from crm.fees.delivery import receives_ehf

    sendable, skipped = [], []
    for invoice in invoices:
        try:
            invoice_recipient(invoice)
        except FeeError as exc:
            try:
                ehf = bool(invoice.customer_orgnr) and receives_ehf(invoice)
            except FeeError:
                ehf = False  # the access point cannot answer now: treat as no EHF
            if ehf:
                sendable.append(invoice)
            else:
                skipped.append(Skipped(invoice, str(exc)))
        else:
            sendable.append(invoice)
    return sendable, skipped


def amount_to_pay_ore(invoice: Invoice, reminder: Reminder | None = None) -> int:
    """What the invoice or reminder asks for: the amount less credit notes, plus reminder
    fees, less what is paid or written off (the PDF and the emails say the same)."""
    settled = invoice.paid_ore + invoice.written_off_ore
    return invoice.outstanding_ore if (reminder or settled) else invoice.due_ore


def email_context(invoice: Invoice, settings: FeeSettings, reminder: Reminder | None = None):
    return {
        "cluster_name": organisation.get().name,
        "cluster_email": organisation.invoice_email(),
        "company_name": invoice.customer_name,
        "invoice_number": invoice.number,
        "year": invoice.year,
        "kid": invoice.kid,
        "account": format_account(settings.bank_account),
        "amount": plain(invoice.amount_ore),
        "amount_ore": invoice.amount_ore,
        "outstanding_ore": invoice.outstanding_ore,
        "credited_ore": invoice.credited_ore,
        "settled_ore": invoice.paid_ore + invoice.written_off_ore,
        "to_pay_ore": amount_to_pay_ore(invoice, reminder),
        "due_date": (reminder.new_due_date if reminder else invoice.due_date).isoformat(),
        "due_date_display": (reminder.new_due_date if reminder else invoice.due_date).strftime(
            "%d.%m.%Y"
        ),
        "reminder_level": reminder.level if reminder else None,
        "reminder_fee_ore": reminder.fee_ore if reminder else 0,
        "kind": invoice.kind,
        "description": invoice.description,
        "lines": [
            {
                "description": line.description,
                "quantity": format_quantity(line.quantity),
                "unit_price_ore": line.unit_price_ore,
                "vat_rate": format_rate(line),
                "net_ore": line.net_ore,
            }
            for line in invoice.lines
        ],
        "vat_groups": [
            {"rate": format_rate(g), "net_ore": g.net_ore, "vat_ore": g.vat_ore}
            for g in invoice.vat_breakdown()
            if g.vat_ore
        ],
        "net_ore": invoice.net_ore,
        "vat_ore": invoice.vat_ore,
    }


def format_quantity(quantity) -> str:
    """`1`, `2,5`: a quantity as Norwegians write it, without trailing zeros."""
    text = f"{quantity.normalize():f}"
    return text.replace(".", ",")


def format_rate(line_or_group) -> str:
    """`25 %` for a rate, `0 %` where there is none."""
    return f"{format_quantity(line_or_group.vat_rate)} %"


def format_account(account: str) -> str:
    """`1234.56.78903`, as Norwegian account numbers are written."""
    if len(account) == 11 and is_digits(account):
        return f"{account[:4]}.{account[4:6]}.{account[6:]}"
    return account
