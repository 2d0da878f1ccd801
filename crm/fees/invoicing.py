"""Invoices: who they are to, creating them, the annual run, statuses and credit notes.

Like the rest of the fee services: changes the session and flushes, never commits.
Refusals are `FeeError`s with a message for people.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crm.extensions import db
from crm.fees.errors import FeeError
from crm.fees.lines import LineSpec, build_lines, credit_lines
from crm.fees.lines import totals as line_totals
from crm.fees.models import (
    INVOICE_KINDS,
    CreditNote,
    Invoice,
    Payment,
    Reminder,
    fees_cancelled_by_full_credit,
    invoice_status,
)
from crm.fees.schedules import price_for, pro_rata, schedule_for_year
from crm.fees.settings import _locked_settings, allocate_number, settings_problems
from crm.i18n import format_money
from crm.members.models import Company
from crm.timeutil import today_oslo

# --- invoices -------------------------------------------------------------------------

_IN_CHUNK = 500  # ids per IN (...) list: well inside every database's limits


@dataclass
class InvoiceRun:
    year: int
    created: list[Invoice] = field(default_factory=list)
    existing: int = 0
    problems: list[str] = field(default_factory=list)


def member_companies() -> list[Company]:
    return db.session.scalars(
        select(Company)
        .where(Company.membership_status == "member", Company.archived_at.is_(None))
        .order_by(Company.name, Company.id)
    ).all()


@dataclass
class Customer:
    """Who an invoice is to, as it will be printed on it.

    A company (`Customer.of_company(company)`) or a person: name, email (where the
    invoice is emailed when there is no company), postal address, and no orgnr.
    """

    name: str
    orgnr: str = ""
    email: str = ""
    address: str = ""
    postal_code: str = ""
    postal_place: str = ""
    company: Company | None = None

    @classmethod
    def of_company(cls, company: Company) -> "Customer":
        return cls(
            name=company.name,
            orgnr=company.orgnr or "",
            address=company.street_address or "",
            postal_code=company.postal_code or "",
            postal_place=company.postal_place or "",
            company=company,
        )


def create_invoice(
    customer: Customer | Company,
    lines: Sequence[LineSpec],
    *,
    kind: str = "other",
    today: date | None = None,
    year: int | None = None,
    membership_year: int | None = None,
    description: str = "",
    pricing_note: str = "",
    flush: bool = True,
) -> Invoice:
    """Issue one invoice: the next number of the one series, its KID, lines with VAT.

    customer: a `Company` (its name, orgnr and address are copied onto the invoice) or
        a `Customer` (a person: name, email, address; orgnr empty).
    lines: `crm.fees.lines.LineSpec`s, in order. Unit prices are net øre WITHOUT VAT;
        e.g. a course fee of 1 000 kr + 25 % VAT is
        `LineSpec("Kurs X 12.03.2027", 100_000, vat_category="S", vat_rate=25)` and gives
        an invoice of 1 250,00 kr. A membership fee is category "O", rate 0.
    kind: "membership" | "event" | "other". A membership invoice needs a company and
        `membership_year`; there is one per company and membership year (FeeError if
        there is one already).
    today: the issue date (default: today in Oslo); due date = today + the settings'
        payment terms.
    year: the year the invoice counts in lists and figures (default: membership_year,
        else today's year).
    description: a summary for lists (default: the first line's description).
    pricing_note: how the price was found, shown on the invoice page.
    flush: False leaves flushing to the caller (the annual run flushes once).

    Returns the Invoice, added to the session (flushed unless flush=False, never
    committed) with `amount_ore` = gross, `net_ore` and `vat_ore` from the lines, and
    status "open". Raises FeeError when the fee settings are incomplete, the lines are
    invalid (see `build_lines`), or numbers no longer fit the KID length.
    """
    if kind not in INVOICE_KINDS:
        raise FeeError(_("Unknown kind of invoice."))
    if isinstance(customer, Company):
        customer = Customer.of_company(customer)
    if not (customer.name or "").strip():
        raise FeeError(_("An invoice needs the customer's name."))
    if kind == "membership" and (customer.company is None or membership_year is None):
        raise FeeError(_("A membership invoice needs a company and a membership year."))
    if kind != "membership":
        membership_year = None

    def duplicate() -> str:
        return _(
            "%(customer)s already has a membership invoice for %(year)s.",
            customer=customer.name,
            year=membership_year,
        )

    if flush and membership_year is not None:
        taken = db.session.scalar(
            select(Invoice.id).where(
                Invoice.company_id == customer.company.id,
                Invoice.membership_year == membership_year,
            )
        )
        if taken is not None:
            raise FeeError(duplicate())
    invoice_lines = build_lines(lines)
    net, vat, gross = line_totals(invoice_lines)
    settings = _locked_settings()
    problems = settings_problems(settings)
    if problems:
        raise FeeError(" ".join(problems))
    today = today or today_oslo()
    number, kid = allocate_number(settings)
    invoice = Invoice(
        number=number,
        kid=kid,
        kind=kind,
        company=customer.company,
        year=year or membership_year or today.year,
        membership_year=membership_year,
        amount_ore=gross,
        net_ore=net,
        vat_ore=vat,
        issue_date=today,
        due_date=today + timedelta(days=settings.due_days),
        description=(description or invoice_lines[0].description)[:300],
        pricing_note=(pricing_note or "")[:400],
        customer_name=customer.name.strip()[:200],
        customer_orgnr=(customer.orgnr or "")[:9],
        customer_email=(customer.email or "").strip()[:254],
        customer_address=(customer.address or "")[:300],
        customer_postal_code=(customer.postal_code or "")[:10],
        customer_postal_place=(customer.postal_place or "")[:100],
        lines=invoice_lines,
    )
    set_status(invoice)
    db.session.add(invoice)
    if flush:
        try:
            db.session.flush()
        except IntegrityError as exc:  # a membership invoice made at the same moment
            raise FeeError(duplicate()) from exc
    return invoice


def run_annual_invoicing(year: int, today: date | None = None) -> InvoiceRun:
    """One membership invoice per member company for `year`; companies that have one
    are left alone. Each is made by `create_invoice`: one line, outside the scope of VAT.

    Running it again creates nothing new (and the (company, membership year) unique
    constraint makes sure of it even when two runs race).
    """
    today = today or today_oslo()
    settings = _locked_settings()
    problems = settings_problems(settings)
    if problems:
        raise FeeError(" ".join(problems))
    schedule = schedule_for_year(year)
    if schedule is None:
        raise FeeError(_("There is no fee schedule for %(year)s or any year before.", year=year))
    invoiced = set(
        db.session.scalars(select(Invoice.company_id).where(Invoice.membership_year == year))
    )
    run = InvoiceRun(year=year)
    with force_locale("nb"):
        description = _("Membership fee %(year)s", year=year)
    for company in member_companies():
        if company.id in invoiced:
            run.existing += 1
            continue
        # The price basis is stored on the invoice, a Norwegian document: in Norwegian,
        # whichever language the person (or the CLI) running the invoicing uses.
        with force_locale("nb"):
            price = price_for(company, year, schedule)
        if price is None:
            run.problems.append(
                _(
                    "%(company)s: no tier covers %(employees)s employees.",
                    company=company.name,
                    employees=company.employees,
                )
            )
            continue
        if company.member_since is not None and company.member_since.year > year:
            run.problems.append(
                _(
                    "%(company)s joined after %(year)s and was not invoiced for it.",
                    company=company.name,
                    year=year,
                )
            )
            continue
        share = pro_rata(price.amount_ore, settings.pro_rata, company.member_since, year)
        line_text = f"{description} ({share.explanation})" if share.explanation else description
        invoice = create_invoice(
            company,
            [LineSpec(line_text, share.amount_ore, vat_category="O", vat_rate=0)],
            kind="membership",
            membership_year=year,
            today=today,
            description=description,
            pricing_note=f"{price.note}; {share.explanation}" if share.explanation else price.note,
            flush=False,
        )
        run.created.append(invoice)
    try:
        db.session.flush()
    except IntegrityError as exc:
        raise FeeError(
            _("Another invoice run for %(year)s got there first; nothing was created.", year=year)
        ) from exc
    return run


def set_status(invoice: Invoice) -> None:
    invoice.status = invoice_status(
        invoice.amount_ore or 0,
        invoice.fees_ore or 0,
        invoice.credited_ore or 0,
        invoice.paid_ore or 0,
        invoice.written_off_ore or 0,
    )


def refresh_invoices(invoices: Iterable[Invoice]) -> None:
    """Recompute paid, written-off, credited and fee sums and the status from the rows
    (the fees less those credit notes cancelled).

    The invoice rows are locked first (SELECT … FOR UPDATE on PostgreSQL; SQLite has one
    writer at a time anyway): a concurrent payment, import or credit note on the same
    invoice waits for this transaction, and the sums read after the lock include every
    committed row, so two requests cannot each write a total missing the other's.
    """
    by_id = {invoice.id: invoice for invoice in invoices}
    if not by_id:
        return
    db.session.flush()
    locked = sorted(by_id)  # one lock order everywhere, so two refreshes cannot deadlock
    for start in range(0, len(locked), _IN_CHUNK):
        db.session.execute(
            select(Invoice.id)
            .where(Invoice.id.in_(locked[start : start + _IN_CHUNK]))
            .order_by(Invoice.id)
            .with_for_update()
        )
    paid = dict.fromkeys(by_id, 0)
    written_off = dict.fromkeys(by_id, 0)
    credited = dict.fromkeys(by_id, 0)
    fees = dict.fromkeys(by_id, 0)
    ids = list(by_id)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for invoice_id, kind, total in db.session.execute(
            select(Payment.invoice_id, Payment.kind, func.sum(Payment.amount_ore))
            .where(Payment.invoice_id.in_(chunk))
            .group_by(Payment.invoice_id, Payment.kind)
        ):
            target = written_off if kind == "write_off" else paid
            target[invoice_id] += int(total or 0)
        for invoice_id, total, fees_cancelled in db.session.execute(
            select(
                CreditNote.invoice_id,
                func.sum(CreditNote.amount_ore),
                func.sum(CreditNote.fees_cancelled_ore),
            )
            .where(CreditNote.invoice_id.in_(chunk))
            .group_by(CreditNote.invoice_id)
        ):
            credited[invoice_id] = int(total or 0)
            fees[invoice_id] -= int(fees_cancelled or 0)
        for invoice_id, total in db.session.execute(
            select(Reminder.invoice_id, func.sum(Reminder.fee_ore))
            .where(Reminder.invoice_id.in_(chunk))
            .group_by(Reminder.invoice_id)
        ):
            fees[invoice_id] += int(total or 0)
    for invoice_id, invoice in by_id.items():
        invoice.paid_ore = paid[invoice_id]
        invoice.written_off_ore = written_off[invoice_id]
        invoice.credited_ore = credited[invoice_id]
        invoice.fees_ore = fees[invoice_id]
        set_status(invoice)


def credit_invoice(
    invoice: Invoice, reason: str, amount_ore: int | None = None, today: date | None = None
) -> CreditNote:
    """A credit note for all (default) or part of what is creditable on `invoice`.

    Creditable is the invoice amount less earlier credit notes and less what is written
    off beyond the reminder fees (`Invoice.creditable_ore`, `crm.fees.models.creditable`):
    a write-off is a loss booked already, so it stands and no credit note covers it
    again. Paid money may be credited; it is then owed back. A larger amount is refused
    with a FeeError saying how much may be credited.

    The credit note that takes all that is creditable also cancels the reminder fees
    not written off (`CreditNote.fees_cancelled_ore`): nothing is then owed on the
    invoice, and every krone received is owed back.

    `amount_ore` is gross (VAT included); its lines split it over the invoice's VAT
    rates as `crm.fees.lines.credit_lines` describes.
    """
    reason = (reason or "").strip()
    if not reason:
        raise FeeError(_("A credit note needs a reason."))
    # The number series' lock first, then the invoice's sums as committed: a credit note
    # made meanwhile by another request (which held that lock) is counted, so two at
    # once cannot both credit the same amount.
    settings = _locked_settings()
    db.session.flush()
    db.session.refresh(invoice, with_for_update=True)  # (no-op on SQLite: one writer)
    creditable = invoice.creditable_ore
    if creditable <= 0:
        if invoice.credited_ore >= invoice.amount_ore:
            raise FeeError(_("This invoice is already credited in full."))
        raise FeeError(
            _(
                "Nothing is left to credit on this invoice: what is not credited is written "
                "off, and a write-off is not credited again."
            )
        )
    amount_ore = creditable if amount_ore is None else amount_ore
    if amount_ore <= 0 or amount_ore > creditable:
        raise FeeError(
            _(
                "A credit note on this invoice can be at most %(max)s: the invoice amount "
                "less what is already credited and what is written off. Nothing was changed.",
                max=format_money(creditable, ore=True),
            )
        )
    number, _kid = allocate_number(settings)
    lines = credit_lines(invoice, amount_ore)
    net, vat, gross = line_totals(lines)
    fees_cancelled = 0
    if gross == creditable:
        fees_cancelled = fees_cancelled_by_full_credit(invoice.fees_ore, invoice.written_off_ore)
    note = CreditNote(
        number=number,
        invoice=invoice,
        amount_ore=gross,
        net_ore=net,
        vat_ore=vat,
        fees_cancelled_ore=fees_cancelled,
        issue_date=today or today_oslo(),
        reason=reason[:300],
        lines=lines,
    )
    db.session.add(note)
    refresh_invoices([invoice])
    return note
