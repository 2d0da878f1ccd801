"""The rules of membership fees: pricing, the annual run, credit notes, payments, OCR import.

Functions here change the session and flush, but never commit: the CLI command, the
request or the RQ job that calls them commits (or rolls back) the whole unit of work.
Refusals are `FeeError`s with a message for people.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from crm import audit
from crm.audit import current_actor
from crm.bulk import paused_gc
from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.errors import DuplicateTransmissionError, FeeError
from crm.fees.lines import LineSpec, build_lines, credit_lines
from crm.fees.lines import totals as line_totals
from crm.fees.models import (
    INVOICE_KINDS,
    UNPAID_STATUSES,
    CreditNote,
    FeeOverride,
    FeeSchedule,
    FeeSettings,
    FeeTier,
    Invoice,
    OcrImport,
    Payment,
    Reminder,
    UnmatchedPayment,
)
from crm.fees.money import plain
from crm.fees.ocr import OcrTransmission, parse_ocr
from crm.members.models import Company, Contact
from crm.numbers import is_digits
from crm.organisation import services as organisation
from crm.timeutil import OSLO, today_oslo, utcnow

SETTINGS_ID = 1
_IN_CHUNK = 500  # ids per IN (...) list: well inside every database's limits

# --- settings -------------------------------------------------------------------------


def get_settings() -> FeeSettings:
    """The fee settings row, created with defaults the first time it is asked for."""
    settings = db.session.get(FeeSettings, SETTINGS_ID)
    if settings is None:
        settings = FeeSettings(id=SETTINGS_ID)
        db.session.add(settings)
        db.session.flush()
    return settings


def settings_problems(settings: FeeSettings) -> list[str]:
    """What must be filled in before invoices can be issued."""
    problems = []
    seller = organisation.get()
    if not seller.name:
        problems.append(_("The organisation's name is missing in its settings (Admin)."))
    if not seller.orgnr:
        problems.append(
            _("The organisation number is missing in the organisation's settings (Admin).")
        )
    if not settings.bank_account:
        problems.append(_("The bank account is missing in the fee settings."))
    return problems


# --- schedules and pricing ------------------------------------------------------------


def schedule_for_year(year: int) -> FeeSchedule | None:
    """Year's own schedule or, where it has none, the latest earlier one."""
    return db.session.scalar(
        select(FeeSchedule).where(FeeSchedule.year <= year).order_by(FeeSchedule.year.desc())
    )


def save_schedule(year: int, tiers: Sequence[tuple[int, int | None, int]]) -> FeeSchedule:
    """Create or replace the tiers of `year`: (min employees, max or None, amount øre).

    Tiers must be ordered, must not overlap or leave gaps, and only the last may be
    open-ended; otherwise a FeeError says what is wrong.
    """
    check_tiers(tiers)
    schedule = db.session.scalar(select(FeeSchedule).where(FeeSchedule.year == year))
    if schedule is None:
        schedule = FeeSchedule(year=year)
        db.session.add(schedule)
    schedule.tiers = [
        FeeTier(min_employees=low, max_employees=high, amount_ore=amount)
        for low, high, amount in tiers
    ]
    db.session.flush()
    return schedule


def check_tiers(tiers: Sequence[tuple[int, int | None, int]]) -> None:
    if not tiers:
        raise FeeError(_("A fee schedule needs at least one tier."))
    expected_low = None
    for position, (low, high, amount) in enumerate(tiers):
        if low < 0 or amount < 0:
            raise FeeError(_("Employee counts and amounts cannot be negative."))
        if high is not None and high < low:
            raise FeeError(_("A tier's upper bound is below its lower bound."))
        if expected_low is not None and low != expected_low:
            raise FeeError(_("Tiers must follow each other without gaps or overlaps."))
        if high is None and position != len(tiers) - 1:
            raise FeeError(_("Only the last tier can be open-ended."))
        expected_low = None if high is None else high + 1


def tier_for(schedule: FeeSchedule, employees: int | None) -> FeeTier | None:
    """The tier covering `employees`; unknown or fewer than the first tier's count the
    lowest tier (a member without registered employees still pays the smallest fee)."""
    if not schedule.tiers:
        return None
    count = max(employees or 0, schedule.tiers[0].min_employees)
    return next((tier for tier in schedule.tiers if tier.covers(count)), None)


def override_for(company_id: int, year: int) -> FeeOverride | None:
    """The company's override for `year`, else its standing one (year left empty).

    add_override keeps one per company and year; should older data hold two, the
    oldest wins, the same one every time.
    """
    return db.session.scalars(
        select(FeeOverride)
        .where(
            FeeOverride.company_id == company_id,
            (FeeOverride.year == year) | FeeOverride.year.is_(None),
        )
        .order_by(FeeOverride.year.is_(None), FeeOverride.id)
        .limit(1)
    ).first()


def company_overrides(company_id: int) -> list[FeeOverride]:
    """A company's price overrides: year by year, the standing one (every year) last."""
    return db.session.scalars(
        select(FeeOverride)
        .where(FeeOverride.company_id == company_id)
        .order_by(FeeOverride.year.is_(None), FeeOverride.year, FeeOverride.id)
    ).all()


def add_override(
    company_id: int,
    year: int | None,
    *,
    amount_ore: int | None = None,
    discount_percent: int | None = None,
    reason: str,
) -> FeeOverride:
    """A company's own price for `year` (None: every year); one per company and year."""
    same_year = FeeOverride.year.is_(None) if year is None else FeeOverride.year == year
    existing = db.session.scalar(
        select(FeeOverride.id).where(FeeOverride.company_id == company_id, same_year).limit(1)
    )
    if existing is not None:
        if year is None:
            raise FeeError(_("This company already has a price for every year; remove it first."))
        raise FeeError(
            _("This company already has a price for %(year)s; remove it first.", year=year)
        )
    override = FeeOverride(
        company_id=company_id,
        year=year,
        amount_ore=amount_ore,
        discount_percent=discount_percent,
        reason=reason.strip()[:300],
    )
    db.session.add(override)
    db.session.flush()
    return override


@dataclass
class Price:
    amount_ore: int
    note: str


def price_for(company: Company, year: int, schedule: FeeSchedule) -> Price | None:
    """The fee of `company` for `year`: the tier's amount, then its override if any."""
    tier = tier_for(schedule, company.employees)
    if tier is None:
        return None
    note = _("Tier %(tier)s employees (schedule %(year)s)", tier=tier.label, year=schedule.year)
    override = override_for(company.id, year)
    if override is None:
        return Price(tier.amount_ore, note)
    return Price(override.apply(tier.amount_ore), f"{note}; {override.reason}")


@dataclass
class ProRata:
    """The share of a year's fee a company pays for the year it joined."""

    amount_ore: int
    explanation: str  # for the invoice line, in Norwegian; empty for the whole fee


def pro_rata(amount_ore: int, rule: str, joined: date | None, year: int) -> ProRata:
    """The fee for `year` of a member who joined on `joined`, by the settings' rule:

    - "year": the whole fee, whenever in the year one joins;
    - "half_year": half the fee (rounded half up to the øre) when one joins on
      1 July or later, the whole fee before;
    - "month": the fee × the months left of the year counting the month of joining
      / 12, rounded half up (joining in December: 1/12).

    A member since an earlier year (or with no joining date) pays the whole fee.
    """
    if rule == "year" or joined is None or joined.year != year:
        return ProRata(amount_ore, "")
    whole = nok_plain(amount_ore)
    with force_locale("nb"):
        if rule == "half_year":
            if joined.month < 7:
                return ProRata(amount_ore, "")
            return ProRata(
                (amount_ore + 1) // 2,
                _(
                    "joined %(date)s: half a year (second half) of %(amount)s",
                    date=joined.strftime("%d.%m.%Y"),
                    amount=whole,
                ),
            )
        months = 12 - joined.month + 1
        if months == 12:
            return ProRata(amount_ore, "")
        return ProRata(
            (amount_ore * months * 2 + 12) // 24,
            _(
                "joined %(date)s: %(months)s of 12 months of %(amount)s",
                date=joined.strftime("%d.%m.%Y"),
                months=months,
                amount=whole,
            ),
        )


def nok_plain(ore: int) -> str:
    """`kr 7 500,00` (plain spaces) for text stored on invoices."""
    from babel.numbers import format_decimal

    from crm.fees.money import kroner

    number = format_decimal(kroner(ore), format="#,##0.00", locale="nb")
    return "kr " + number.replace("\u00a0", " ").replace("\u202f", " ")


# --- invoices -------------------------------------------------------------------------


def allocate_number(settings: FeeSettings) -> tuple[int, str]:
    """The next invoice number and its KID; MOD11 numbers without a KID are skipped."""
    try:
        number, kid = kidlib.next_kid(
            settings.next_invoice_number, settings.kid_length, settings.kid_scheme
        )
    except kidlib.KidError as exc:
        raise FeeError(
            _("Invoice numbers no longer fit in the KID length; make the KID longer.")
        ) from exc
    # Written with a plain UPDATE and set on the object as already saved: taking a
    # number is not a change of the settings, and the audit log (settings history)
    # records only what a person changes. Every invoice and credit note it numbers is
    # in the audit log itself.
    db.session.execute(
        update(FeeSettings)
        .where(FeeSettings.id == settings.id)
        .values(next_invoice_number=number + 1)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(settings, "next_invoice_number", number + 1)
    return number, kid


def highest_used_number() -> int:
    """The highest number taken in the one series invoices and credit notes share."""
    invoices = db.session.scalar(select(func.max(Invoice.number))) or 0
    notes = db.session.scalar(select(func.max(CreditNote.number))) or 0
    return max(invoices, notes)


def _locked_settings() -> FeeSettings:
    # On PostgreSQL two annual runs at once would otherwise hand out the same numbers
    # (the unique constraints would then refuse one of them at commit).
    settings = get_settings()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.refresh(settings, with_for_update=True)
    return settings


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


def invoice_status(
    amount_ore: int, fees_ore: int, credited_ore: int, paid_ore: int, written_off_ore: int
) -> str:
    """open | partially_paid | paid | overpaid | credited, from the sums alone."""
    if credited_ore >= amount_ore and credited_ore > 0:
        return "credited"
    due = amount_ore + fees_ore - credited_ore
    settled = paid_ore + written_off_ore
    if settled <= 0:
        return "paid" if due <= 0 else "open"
    if settled < due:
        return "partially_paid"
    if settled == due:
        return "paid"
    return "overpaid"


def set_status(invoice: Invoice) -> None:
    invoice.status = invoice_status(
        invoice.amount_ore or 0,
        invoice.fees_ore or 0,
        invoice.credited_ore or 0,
        invoice.paid_ore or 0,
        invoice.written_off_ore or 0,
    )


def refresh_invoices(invoices: Iterable[Invoice]) -> None:
    """Recompute paid, written-off, credited and fee sums and the status from the rows.

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
        for invoice_id, total in db.session.execute(
            select(CreditNote.invoice_id, func.sum(CreditNote.amount_ore))
            .where(CreditNote.invoice_id.in_(chunk))
            .group_by(CreditNote.invoice_id)
        ):
            credited[invoice_id] = int(total or 0)
        for invoice_id, total in db.session.execute(
            select(Reminder.invoice_id, func.sum(Reminder.fee_ore))
            .where(Reminder.invoice_id.in_(chunk))
            .group_by(Reminder.invoice_id)
        ):
            fees[invoice_id] = int(total or 0)
    for invoice_id, invoice in by_id.items():
        invoice.paid_ore = paid[invoice_id]
        invoice.written_off_ore = written_off[invoice_id]
        invoice.credited_ore = credited[invoice_id]
        invoice.fees_ore = fees[invoice_id]
        set_status(invoice)


def credit_invoice(
    invoice: Invoice, reason: str, amount_ore: int | None = None, today: date | None = None
) -> CreditNote:
    """A credit note for all (default) or part of what is left to credit on `invoice`.

    `amount_ore` is gross (VAT included); its lines split it over the invoice's VAT
    rates as `crm.fees.lines.credit_lines` describes.
    """
    reason = (reason or "").strip()
    if not reason:
        raise FeeError(_("A credit note needs a reason."))
    creditable = invoice.amount_ore - invoice.credited_ore
    if creditable <= 0:
        raise FeeError(_("This invoice is already credited in full."))
    amount_ore = creditable if amount_ore is None else amount_ore
    if amount_ore <= 0 or amount_ore > creditable:
        raise FeeError(
            _("A credit note must be more than zero and at most what is left to credit.")
        )
    number, _kid = allocate_number(_locked_settings())
    lines = credit_lines(invoice, amount_ore)
    net, vat, gross = line_totals(lines)
    note = CreditNote(
        number=number,
        invoice=invoice,
        amount_ore=gross,
        net_ore=net,
        vat_ore=vat,
        issue_date=today or today_oslo(),
        reason=reason[:300],
        lines=lines,
    )
    db.session.add(note)
    refresh_invoices([invoice])
    return note


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
    the unmatched list. Raises OcrFileError (malformed file, with line and record) or
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
        file_name=(file_name or "")[:255],
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
        if invoice_id is not None:
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


# --- lists and figures ----------------------------------------------------------------


def invoice_years() -> list[int]:
    years = set(db.session.scalars(select(Invoice.year).distinct()))
    years |= set(db.session.scalars(select(FeeSchedule.year)))
    years.add(today_oslo().year)
    return sorted(years, reverse=True)


# Invoices holding money to pay back (Invoice.refund_due_ore > 0), as a query condition.
REFUND_DUE = (Invoice.status == "overpaid") | (
    (Invoice.status == "credited") & (Invoice.paid_ore > 0)
)


def invoices_for_year(
    year: int, status: str | None = None, *, refund_due: bool = False
) -> list[Invoice]:
    """`year`'s invoices by number; `status` may also be "unpaid" (open or partly paid)."""
    query = select(Invoice).where(Invoice.year == year).order_by(Invoice.number)
    if status == "unpaid":
        query = query.where(Invoice.status.in_(UNPAID_STATUSES))
    elif status:
        query = query.where(Invoice.status == status)
    if refund_due:
        query = query.where(REFUND_DUE)
    return db.session.scalars(query).all()


def overdue_invoices(today: date | None = None, year: int | None = None) -> list[Invoice]:
    """Unpaid invoices past their due date, oldest first."""
    today = today or today_oslo()
    query = (
        select(Invoice)
        .options(selectinload(Invoice.reminders))  # the list shows them per invoice
        .where(Invoice.status.in_(UNPAID_STATUSES), Invoice.due_date < today)
        .order_by(Invoice.due_date, Invoice.number)
    )
    if year is not None:
        query = query.where(Invoice.year == year)
    return db.session.scalars(query).all()


@dataclass
class Figure:
    count: int
    ore: int


@dataclass
class Dashboard:
    year: int
    invoiced: Figure
    paid: Figure
    outstanding: Figure
    overdue: Figure
    credited: Figure
    written_off_ore: int
    unmatched_open: int
    refund_due: Figure = field(default_factory=lambda: Figure(0, 0))

    @property
    def share_paid(self) -> int:
        """Per mille of the invoiced amount that has been paid or written off."""
        if self.invoiced.ore <= 0:
            return 0
        settled = min(self.paid.ore + self.written_off_ore, self.invoiced.ore)
        return settled * 1000 // self.invoiced.ore


def dashboard(year: int, today: date | None = None) -> Dashboard:
    """Invoiced, paid, outstanding and overdue for `year`, in øre and counts."""
    today = today or today_oslo()
    invoiced = Figure(0, 0)
    paid = Figure(0, 0)
    outstanding = Figure(0, 0)
    overdue = Figure(0, 0)
    credited = Figure(0, 0)
    written_off = 0
    rows = db.session.execute(
        select(
            Invoice.status,
            Invoice.due_date,
            Invoice.amount_ore,
            Invoice.fees_ore,
            Invoice.credited_ore,
            Invoice.paid_ore,
            Invoice.written_off_ore,
        ).where(Invoice.year == year)
    )
    refund_due = Figure(0, 0)
    for status, due_date, amount, fees, credit, paid_ore, off in rows:
        if status == "credited":
            # Nothing is invoiced on a credited invoice, so money received on it is not
            # paid towards the invoiced amount (it would inflate the share paid): it is
            # owed back, and shown as a refund due until it is refunded.
            credited.count += 1
            credited.ore += credit
            if paid_ore > 0:
                refund_due.count += 1
                refund_due.ore += paid_ore
            continue
        paid.ore += paid_ore
        written_off += off
        if status == "overpaid":
            refund_due.count += 1
            refund_due.ore += max(paid_ore + off - (amount + fees - credit), 0)
        invoiced.count += 1
        invoiced.ore += amount + fees - credit
        if status in ("paid", "overpaid"):
            paid.count += 1
        if status in UNPAID_STATUSES:
            left = max(amount + fees - credit - paid_ore - off, 0)
            outstanding.count += 1
            outstanding.ore += left
            if due_date < today:
                overdue.count += 1
                overdue.ore += left
    unmatched_open = db.session.scalar(
        select(func.count(UnmatchedPayment.id)).where(UnmatchedPayment.state == "open")
    )
    return Dashboard(
        year,
        invoiced,
        paid,
        outstanding,
        overdue,
        credited,
        written_off,
        unmatched_open or 0,
        refund_due,
    )


def payments_by_day(year: int) -> list[tuple[date, int]]:
    """Money received per day (payments less refunds) on `year`'s invoices."""
    rows = db.session.execute(
        select(Payment.paid_on, func.sum(Payment.amount_ore))
        .join(Invoice, Payment.invoice_id == Invoice.id)
        .where(Invoice.year == year, Payment.kind != "write_off")
        .group_by(Payment.paid_on)
        .order_by(Payment.paid_on)
    )
    return [(day, int(total or 0)) for day, total in rows]


def payments_for_year(year: int) -> list[Payment]:
    """`year`'s payments with their invoices, loaded in the same query."""
    return db.session.scalars(
        select(Payment)
        .join(Invoice, Payment.invoice_id == Invoice.id)
        .options(contains_eager(Payment.invoice))
        .where(Invoice.year == year)
        .order_by(Payment.paid_on, Payment.id)
    ).all()
