"""How an invoice reaches the customer: as EHF where the company can receive it, else by
email with the PDF; every sending recorded as an `InvoiceDelivery`.

Like the other services: changes the session, never commits.
"""

from __future__ import annotations

from flask import current_app
from flask_babel import gettext as _

from crm.extensions import db
from crm.fees.access_point import AccessPoint, AccessPointError, get_access_point, participant
from crm.fees.ehf import credit_note_document, invoice_document
from crm.fees.errors import FeeError
from crm.fees.models import CreditNote, Invoice, InvoiceDelivery
from crm.organisation import services as organisation
from crm.timeutil import utcnow


def record_delivery(
    invoice: Invoice,
    channel: str,
    recipient: str = "",
    reference: str = "",
    credit_note: CreditNote | None = None,
) -> InvoiceDelivery:
    """Note that `invoice` (or its `credit_note`) went out by `channel` just now."""
    delivery = InvoiceDelivery(
        invoice=invoice,
        credit_note=credit_note,
        channel=channel,
        delivered_at=utcnow(),
        recipient=recipient[:300],
        reference=reference[:200],
    )
    db.session.add(delivery)
    return delivery


def checked_document(document: bytes, label: str) -> bytes:
    """`document` if it passes the UBL schema (and the official rules, where
    PEPPOL_RULES_DIR holds them); FeeError naming the failed rules otherwise, so an
    access point never gets a document it would reject."""
    from crm.fees.ehf_validation import ValidationUnavailable, validate_ehf

    try:
        report = validate_ehf(document, current_app.config.get("PEPPOL_RULES_DIR") or None)
    except ValidationUnavailable as exc:
        raise FeeError(str(exc)) from exc
    if not report.valid:
        rules = ", ".join(sorted(report.failed_rules))
        raise FeeError(
            _("The EHF of %(label)s is not valid (%(rules)s).", label=label, rules=rules)
        )
    return document


def receives_ehf(invoice: Invoice, access_point: AccessPoint | None = None) -> bool:
    """Whether the buyer is registered to receive EHF (asks the access point)."""
    access_point = access_point or get_access_point(current_app.config)
    try:
        return access_point.can_receive(invoice.customer_orgnr)
    except AccessPointError as exc:
        raise FeeError(str(exc)) from exc


def send_invoice_as_ehf(invoice: Invoice, access_point: AccessPoint | None = None):
    """Send the invoice through the access point and record it; FeeError if refused."""
    from crm.fees.services import get_settings, prepare_first_sending

    if invoice.status == "credited":
        raise FeeError(_("A credited invoice is not sent."))
    access_point = access_point or get_access_point(current_app.config)
    settings = get_settings()
    # The due date in the document runs from the day it goes out (first sending).
    prepare_first_sending(invoice)
    document = checked_document(
        invoice_document(invoice, settings), _("invoice %(number)s", number=invoice.number)
    )
    send_count = (invoice.send_count or 0) + 1
    try:
        message_id = access_point.send(
            document,
            sender=participant(organisation.get().orgnr),
            receiver=participant(invoice.customer_orgnr),
            kind="invoice",
            reference=f"invoice-{invoice.id}-{send_count}",
        )
    except AccessPointError as exc:
        raise FeeError(str(exc)) from exc
    invoice.send_count = send_count
    invoice.sent_at = utcnow()
    delivery = record_delivery(
        invoice, "ehf", participant(invoice.customer_orgnr), message_id or ""
    )
    db.session.flush()
    return delivery


def send_credit_note_as_ehf(note: CreditNote, access_point: AccessPoint | None = None):
    """Send a credit note through the access point and record it on its invoice."""
    from crm.fees.services import get_settings

    access_point = access_point or get_access_point(current_app.config)
    settings = get_settings()
    invoice = note.invoice
    if not receives_ehf(invoice, access_point):
        raise FeeError(_("%(customer)s does not receive EHF.", customer=invoice.customer_name))
    document = checked_document(
        credit_note_document(note, settings), _("credit note %(number)s", number=note.number)
    )
    try:
        message_id = access_point.send(
            document,
            sender=participant(organisation.get().orgnr),
            receiver=participant(invoice.customer_orgnr),
            kind="credit-note",
            reference=f"credit-note-{note.id}",
        )
    except AccessPointError as exc:
        raise FeeError(str(exc)) from exc
    delivery = record_delivery(
        invoice, "ehf", participant(invoice.customer_orgnr), message_id or "", credit_note=note
    )
    db.session.flush()
    return delivery


def deliver_invoice(invoice: Invoice) -> InvoiceDelivery:
    """Send the invoice the way its customer takes invoices: EHF through the access point
    when the company is registered for it, otherwise email with the PDF (the fallback).
    FeeError when neither is possible."""
    from crm.fees.services import queue_invoice_email

    access_point = get_access_point(current_app.config)
    if invoice.status != "credited" and receives_ehf(invoice, access_point):
        return send_invoice_as_ehf(invoice, access_point)
    queue_invoice_email(invoice)
    return invoice.deliveries[-1]
