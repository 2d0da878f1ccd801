"""Payments: registering them, unmatched payments and the OCR file import.

Like the rest of the fee services: changes the session and flushes, never commits.
Refusals are `FeeError`s with a message for people.
"""

from dataclasses import dataclass
from datetime import date

from flask_babel import gettext as _
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager

from crm import audit
from crm.audit import current_actor
from crm.bulk import paused_gc
from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.errors import DuplicateTransmissionError, FeeError
from crm.fees.invoicing import _IN_CHUNK, invoice_status, refresh_invoices
from crm.fees.models import (
    Invoice,
    OcrImport,
    Payment,
    UnmatchedPayment,
)
from crm.fees.ocr import OcrTransmission, parse_ocr
from crm.fees.settings import get_settings
from crm.members.importing.uploads import clean_filename
from crm.numbers import is_digits
from crm.timeutil import utcnow

# --- payments -------------------------------------------------------------------------


def register_payment(
    invoice: Invoice,
    amount_ore: int,
    paid_on: date,
    *,
    kind: str = "payment",
    note: str = "",
    payer_account: str = "",
) -> Payment:
    """Record a payment by hand (bank transfer without KID), a refund or a write-off.

    Payments and write-offs are positive amounts; a refund is money paid back, stored
    negative. A write-off of more than is outstanding, or a refund of more than was
    paid, is refused.
    """
    if kind not in ("payment", "refund", "write_off"):
        raise FeeError(_("Unknown kind of payment."))
    if amount_ore <= 0:
        raise FeeError(_("The amount must be more than zero."))
    # The invoice's sums as committed, locked: a write-off, refund or credit note made
    # meanwhile by another request is counted before the checks below.
    db.session.flush()
    db.session.refresh(invoice, with_for_update=True)
    if kind == "refund" and amount_ore > invoice.paid_ore:
        raise FeeError(_("A refund cannot be more than has been paid."))
    if kind == "write_off" and amount_ore > invoice.outstanding_ore:
        raise FeeError(_("A write-off cannot be more than is outstanding."))
    if (kind == "payment" or kind == "write_off") and invoice.status == "credited":
        raise FeeError(_("This invoice is credited; nothing is owed on it."))
    payment = Payment(
        invoice=invoice,
        kind=kind,
        source="manual",
        amount_ore=-amount_ore if kind == "refund" else amount_ore,
        paid_on=paid_on,
        booked_on=paid_on,
        payer_account=payer_account,
        note=(note or "").strip()[:300],
    )
    db.session.add(payment)
    refresh_invoices([invoice])
    return payment


MAX_INVOICE_NUMBER = 2**31  # above PostgreSQL's INTEGER


def find_invoice(reference: str) -> Invoice | None:
    """An invoice by its number or its KID, as a treasurer would type either."""
    reference = (reference or "").strip()
    if not is_digits(reference):
        return None
    invoice = db.session.scalar(select(Invoice).where(Invoice.kid == reference))
    # Invoice numbers are INTEGER columns: a longer number (a KID that matched nothing)
    # would overflow PostgreSQL's parameter, and cannot be an invoice number anyway.
    if invoice is None and int(reference) < MAX_INVOICE_NUMBER:
        invoice = db.session.scalar(select(Invoice).where(Invoice.number == int(reference)))
    return invoice


def _claim_unmatched(unmatched: UnmatchedPayment, state: str) -> None:
    """Take an open unmatched payment for this transaction, or refuse (FeeError).

    The object in hand may be stale (two clicks, two tabs): a conditional UPDATE on
    state = 'open' decides in the database, which also holds the row until commit, so
    only one of two concurrent requests books the payment. The ORM then sets the same
    state again, which is what the audit log records.
    """
    if unmatched.state != "open":
        raise FeeError(_("This payment has already been dealt with."))
    claimed = db.session.execute(
        update(UnmatchedPayment)
        .where(UnmatchedPayment.id == unmatched.id, UnmatchedPayment.state == "open")
        .values(state=state)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        raise FeeError(
            _("This payment was dealt with a moment ago by someone else; nothing was changed.")
        )


def assign_unmatched(unmatched: UnmatchedPayment, invoice: Invoice, note: str = "") -> Payment:
    """Book an unmatched OCR payment on `invoice`; the OCR details go along."""
    _claim_unmatched(unmatched, "assigned")
    payment = Payment(
        invoice=invoice,
        kind="payment",
        source="ocr",
        amount_ore=unmatched.amount_ore,
        paid_on=unmatched.paid_on,
        booked_on=unmatched.booked_on,
        kid=unmatched.kid,
        transaction_number=unmatched.transaction_number,
        archive_reference=unmatched.archive_reference,
        payer_account=unmatched.payer_account,
        ocr_import_id=unmatched.ocr_import_id,
        note=(note or "").strip()[:300],
    )
    db.session.add(payment)
    unmatched.payment = payment
    unmatched.state = "assigned"
    unmatched.handled_note = (note or "").strip()[:300]
    unmatched.handled_at = utcnow()
    refresh_invoices([invoice])
    return payment


def mark_unmatched_handled(unmatched: UnmatchedPayment, note: str) -> None:
    """Close an unmatched payment that belongs to no invoice (returned, other income…)."""
    note = (note or "").strip()
    if not note:
        raise FeeError(_("Say what was done with the payment."))
    _claim_unmatched(unmatched, "handled")
    unmatched.state = "handled"
    unmatched.handled_note = note[:300]
    unmatched.handled_at = utcnow()
    db.session.flush()


# --- OCR import -----------------------------------------------------------------------


@dataclass
class ImportResult:
    ocr_import: OcrImport
    matched: int
    unmatched: int
    total: int


def check_not_imported(transmission: OcrTransmission) -> None:
    """Refuse a transmission seen before, by its number (per sender) or its content."""
    previous = db.session.scalar(
        select(OcrImport).where(
            (OcrImport.content_hash == transmission.content_hash)
            | (
                (OcrImport.transmission_number == transmission.number)
                & (OcrImport.data_transmitter == transmission.data_transmitter)
            )
        )
    )
    if previous is not None:
        raise DuplicateTransmissionError(
            _(
                "Transmission %(number)s was already imported on %(date)s (%(file)s); "
                "nothing was changed.",
                number=transmission.number,
                date=previous.imported_at.strftime("%d.%m.%Y"),
                file=previous.file_name or "-",
            )
        )


@paused_gc()
def import_ocr_file(data: bytes | str, file_name: str = "") -> ImportResult:
    """Parse, check and book a Nets OCR giro file in the current transaction.

    Each transaction is matched to an invoice by its KID and booked as a Payment;
    transactions without a KID, with an invalid KID or with one no invoice has go to
    the unmatched list, and so does a transaction an earlier transmission held (the
    same dates, archive reference, KID, amount and payer): never booked twice.
    Raises OcrFileError (malformed file, with line and record) or
    DuplicateTransmissionError (imported before) before anything is written.

    Payments, unmatched payments and invoice updates are written in bulk, each with
    its audit entry (crm.audit.bulk_create): a bank file can hold a hundred thousand.
    The garbage collector waits meanwhile (see crm.bulk.paused_gc).
    """
    transmission = parse_ocr(data)
    check_not_imported(transmission)
    user_id, actor = current_actor()
    record = OcrImport(
        transmission_number=transmission.number,
        data_transmitter=transmission.data_transmitter,
        content_hash=transmission.content_hash,
        # The browser's name for the upload: no NUL (PostgreSQL refuses it) or other
        # control character reaches the page or the log.
        file_name=clean_filename(file_name) if file_name else "",
        nets_date=transmission.nets_date,
        assignment_count=len(transmission.assignments),
        transaction_count=len(transmission.transactions),
        total_ore=transmission.total_ore,
        imported_by_id=user_id,
        imported_by_label=actor[:200],
    )
    db.session.add(record)
    try:
        db.session.flush()
    except IntegrityError as exc:  # the same file imported at the same moment elsewhere
        raise DuplicateTransmissionError(
            _(
                "Transmission %(number)s was already imported; nothing was changed.",
                number=transmission.number,
            )
        ) from exc

    invoice_ids = _invoice_ids_by_kid({t.kid for t in transmission.transactions if t.kid})
    booked_before = _booked_transactions(
        {t.bank_date or t.nets_date for t in transmission.transactions}
    )
    scheme = get_settings().kid_scheme
    payments, unmatched = [], []
    for t in transmission.transactions:
        row = {
            "amount_ore": t.amount_ore,
            "paid_on": t.bank_date or t.nets_date,
            "booked_on": t.nets_date,
            "kid": t.kid or "",
            "transaction_number": f"{t.assignment_number}-{t.number}",
            "archive_reference": t.archive_reference,
            "payer_account": t.payer_account,
            "ocr_import_id": record.id,
        }
        invoice_id = invoice_ids.get(t.kid) if t.kid else None
        if _identity(row) in booked_before:
            # The bank's transaction came before in another transmission (a file
            # delivered again under a new number): not booked twice, listed for staff.
            unmatched.append({**row, "reason": "duplicate", "text": t.text[:100], "state": "open"})
        elif invoice_id is not None:
            payments.append({**row, "invoice_id": invoice_id, "kind": "payment", "source": "ocr"})
        else:
            if not t.kid:
                reason = "no_kid"
            elif kidlib.is_valid(t.kid, scheme):
                reason = "unknown_kid"
            else:
                reason = "invalid_kid"
            unmatched.append({**row, "reason": reason, "text": t.text[:100], "state": "open"})
    # transaction_number ("assignment-transaction") is unique within one transmission.
    scope = ("ocr_import_id", record.id)
    audit.bulk_create(
        Payment,
        payments,
        key="transaction_number",
        scope=scope,
    )
    audit.bulk_create(
        UnmatchedPayment,
        unmatched,
        key="transaction_number",
        scope=scope,
    )
    record.matched_count = len(payments)
    record.unmatched_count = len(unmatched)
    record.matched_ore = sum(p["amount_ore"] for p in payments)
    record.unmatched_ore = sum(u["amount_ore"] for u in unmatched)
    added: dict[int, int] = {}
    for payment in payments:
        added[payment["invoice_id"]] = added.get(payment["invoice_id"], 0) + payment["amount_ore"]
    add_paid_sums(record.id, added)
    db.session.flush()
    return ImportResult(record, len(payments), len(unmatched), len(transmission.transactions))


def _identity(row) -> tuple | None:
    """What tells one bank transaction from another across transmissions: its dates,
    the bank's archive reference, KID, amount and payer; None without a reference."""
    if not row["archive_reference"].strip("0 "):
        return None
    return (
        row["paid_on"],
        row["booked_on"],
        row["archive_reference"],
        row["kid"] or "",
        row["amount_ore"],
        row["payer_account"] or "",
    )


def _booked_transactions(days: set[date]) -> set[tuple]:
    """The identities of OCR transactions paid on `days` that earlier imports booked or
    listed as unmatched (whatever became of them)."""
    found: set[tuple] = set()
    if not days:
        return found
    for model, where in (
        (Payment, Payment.ocr_import_id.is_not(None)),
        (UnmatchedPayment, UnmatchedPayment.ocr_import_id.is_not(None)),
    ):
        rows = db.session.execute(
            select(
                model.paid_on,
                model.booked_on,
                model.archive_reference,
                model.kid,
                model.amount_ore,
                model.payer_account,
            ).where(model.paid_on.in_(sorted(days)), where)
        )
        found.update(_identity(row._mapping) for row in rows)
    found.discard(None)
    return found


def payments_of_import(ocr_import_id: int) -> list[Payment]:
    """The payments an OCR import booked on invoices (matched by KID, or assigned by
    hand later from its unmatched list), with their invoices, by invoice number."""
    return db.session.scalars(
        select(Payment)
        .join(Invoice, Payment.invoice_id == Invoice.id)
        .options(contains_eager(Payment.invoice))
        .where(Payment.ocr_import_id == ocr_import_id)
        .order_by(Invoice.number, Payment.id)
    ).all()


def add_paid_sums(ocr_import_id: int, added: dict[int, int]) -> None:
    """Add an import's payments (øre per invoice id) to the invoices' paid sums and
    statuses, in bulk. The stored sums are kept right by every other payment change
    (refresh_invoices), and the rows are locked (PostgreSQL) while this adds to them."""
    touched = select(Payment.invoice_id).where(Payment.ocr_import_id == ocr_import_id)
    changes = []
    rows = db.session.execute(
        select(
            Invoice.id,
            Invoice.number,
            Invoice.customer_name,
            Invoice.amount_ore,
            Invoice.fees_ore,
            Invoice.credited_ore,
            Invoice.paid_ore,
            Invoice.written_off_ore,
            Invoice.status,
        )
        .where(Invoice.id.in_(touched))
        .with_for_update()
    )
    for row in rows:
        paid = row.paid_ore + added.get(row.id, 0)
        status = invoice_status(
            row.amount_ore, row.fees_ore, row.credited_ore, paid, row.written_off_ore
        )
        changes.append(
            (
                row.id,
                Invoice.audit_label_of(row._mapping),
                {"paid_ore": row.paid_ore, "status": row.status},
                {"paid_ore": paid, "status": status},
            )
        )
    audit.bulk_update(Invoice, changes)
    # Invoices loaded in this session before the bulk update would show old sums.
    for obj in list(db.session.identity_map.values()):
        if isinstance(obj, Invoice):
            db.session.expire(obj)


def _invoice_ids_by_kid(kids: set[str]) -> dict[str, int]:
    if len(kids) > _IN_CHUNK * 4:
        # A big file: one pass over all KIDs beats hundreds of IN (...) queries.
        rows = db.session.execute(select(Invoice.kid, Invoice.id))
        return {kid: invoice_id for kid, invoice_id in rows if kid in kids}
    found: dict[str, int] = {}
    ordered = sorted(kids)
    for start in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[start : start + _IN_CHUNK]
        rows = db.session.execute(select(Invoice.kid, Invoice.id).where(Invoice.kid.in_(chunk)))
        found.update((kid, invoice_id) for kid, invoice_id in rows)
    return found
