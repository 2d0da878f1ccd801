"""Fee settings and schedules, invoices, credit notes, payments, OCR imports, reminders.

Money is integer øre everywhere in this package (BIGINT: a bank file's totals pass
2**31 øre, 21 million kroner); it becomes `Decimal` kroner only at
the edges (forms, CSV, PDF). An invoice's status is derived from its payments and
credit notes by `crm.fees.services.refresh_invoice`, and stored so lists can filter
on it; every change to it is in the audit log like any other field.
"""

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    case,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.audit import Audited
from crm.extensions import db
from crm.fees.kid import MOD10
from crm.fees.money import plain
from crm.members.models import Company
from crm.timeutil import utcnow
from crm.types import UTCDateTime

INVOICE_STATUSES = ("open", "partially_paid", "paid", "overpaid", "credited")
UNPAID_STATUSES = ("open", "partially_paid")
PAYMENT_KINDS = ("payment", "refund", "write_off")
PAYMENT_SOURCES = ("ocr", "manual")
# duplicate: the same bank transaction came in an earlier transmission.
UNMATCHED_REASONS = ("no_kid", "invalid_kid", "unknown_kid", "duplicate")
UNMATCHED_STATES = ("open", "assigned", "handled")
REMINDER_LEVELS = (1, 2)
INVOICE_KINDS = ("membership", "event", "other")
# year: the whole year's fee whenever one joins; half_year: half the fee when one joins
# in July or later; month: the months from the month of joining, in twelfths.
PRO_RATA_RULES = ("year", "half_year", "month")
# VAT category codes of EN 16931 (UNCL5305 subset used by Peppol BIS Billing 3.0):
# S standard rate, Z zero rated, E exempt, O outside the scope of VAT (membership fees),
# AE reverse charge, K intra-community, G export outside the EEA.
VAT_CATEGORIES = ("S", "Z", "E", "O", "AE", "K", "G")
DELIVERY_CHANNELS = ("email", "ehf", "post")


class FeeSettings(Audited, db.Model):
    """How invoices are numbered and paid; one row (id 1). The sender on invoices (name,
    organisation number, address, email) is the organisation's (crm.organisation.get())."""

    __tablename__ = "fee_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_account: Mapped[str] = mapped_column(String(11), default="")
    next_invoice_number: Mapped[int] = mapped_column(default=1001)
    kid_length: Mapped[int] = mapped_column(default=10)
    kid_scheme: Mapped[str] = mapped_column(String(5), default=MOD10)
    due_days: Mapped[int] = mapped_column(default=30)
    reminder_fee_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    # EHF: the seller's VAT number (NO…MVA) only when VAT-registered; "Foretaksregisteret"
    # on every sales document of an AS/ASA (foretaksregisterloven § 10-2).
    vat_registered: Mapped[bool] = mapped_column(default=False)
    foretaksregisteret: Mapped[bool] = mapped_column(default=False)
    # How a company that joins during the year is billed for it (PRO_RATA_RULES).
    pro_rata: Mapped[str] = mapped_column(String(10), default="year")
    # Ledger accounts of the accounting export (Norsk Standard kontoplan NS 4102 numbers
    # by default; the accountant may use others).
    account_receivable: Mapped[str] = mapped_column(String(10), default="1500")
    account_bank: Mapped[str] = mapped_column(String(10), default="1920")
    account_output_vat: Mapped[str] = mapped_column(String(10), default="2700")
    account_income_vat: Mapped[str] = mapped_column(String(10), default="3000")
    account_income_no_vat: Mapped[str] = mapped_column(String(10), default="3200")
    account_reminder_fees: Mapped[str] = mapped_column(String(10), default="3900")
    account_losses: Mapped[str] = mapped_column(String(10), default="7830")

    def audit_label(self) -> str:
        return "fee settings"


class FeeSchedule(Audited, db.Model):
    """The fee tiers of one year; a year without one uses the latest earlier year's."""

    __tablename__ = "fee_schedule"

    id: Mapped[int] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    tiers: Mapped[list["FeeTier"]] = relationship(
        back_populates="schedule",
        order_by="FeeTier.min_employees",
        cascade="all, delete-orphan",
    )

    def audit_label(self) -> str:
        return str(self.year)


class FeeTier(Audited, db.Model):
    """One employee-count band and its yearly fee; `max_employees` None is open-ended."""

    __tablename__ = "fee_tier"
    __table_args__ = (
        CheckConstraint("amount_ore >= 0", name="amount_not_negative"),
        CheckConstraint("min_employees >= 0", name="min_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("fee_schedule.id", ondelete="CASCADE"), index=True
    )
    min_employees: Mapped[int] = mapped_column()
    max_employees: Mapped[int | None] = mapped_column()
    amount_ore: Mapped[int] = mapped_column(BigInteger)

    schedule: Mapped[FeeSchedule] = relationship(back_populates="tiers")

    @property
    def label(self) -> str:
        if self.max_employees is None:
            return f"{self.min_employees}+"
        return f"{self.min_employees}–{self.max_employees}"

    def audit_label(self) -> str:
        return self.label

    def covers(self, employees: int) -> bool:
        return self.min_employees <= employees and (
            self.max_employees is None or employees <= self.max_employees
        )


class FeeOverride(Audited, db.Model):
    """A company's own price: a fixed amount or a percentage off, always with a reason.

    `year` None applies to every year without a year-specific override.
    """

    __tablename__ = "fee_override"
    __table_args__ = (
        CheckConstraint(
            "(amount_ore IS NULL) <> (discount_percent IS NULL)", name="amount_or_discount"
        ),
        CheckConstraint("amount_ore IS NULL OR amount_ore >= 0", name="amount_not_negative"),
        CheckConstraint(
            "discount_percent IS NULL OR (discount_percent >= 0 AND discount_percent <= 100)",
            name="discount_in_range",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(
        ForeignKey("company.id", ondelete="CASCADE"), index=True
    )
    year: Mapped[int | None] = mapped_column()
    amount_ore: Mapped[int | None] = mapped_column(BigInteger)
    discount_percent: Mapped[int | None] = mapped_column()
    reason: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    company: Mapped[Company] = relationship()

    def audit_label(self) -> str:
        return f"{self.company.name if self.company else self.company_id} {self.year or ''}"

    def apply(self, tier_amount_ore: int) -> int:
        if self.amount_ore is not None:
            return self.amount_ore
        # Round half up to whole øre, in integers.
        return (tier_amount_ore * (100 - (self.discount_percent or 0)) + 50) // 100


class Invoice(Audited, db.Model):
    """An invoice (membership fee, course fee, other); never deleted, cancelled by
    credit notes.

    Its lines (`InvoiceLine`) are what is sold; `net_ore` and `vat_ore` are their sums
    and `amount_ore` the gross total (net + VAT), which is what is paid with the KID and
    what statuses, OCR matching and reminders work from. All three are set together by
    `crm.fees.services.create_invoice` and never change afterwards.

    `year` is the invoice's year in lists and figures (the membership year for membership
    fees, the issue year otherwise). Only membership invoices carry `membership_year`:
    the unique (company_id, membership_year) constraint allows one membership invoice per
    company and year, while event and other invoices (NULL there) are not limited.
    `company_id` is empty for an invoice to a person.
    """

    __tablename__ = "invoice"
    __audit_exclude__ = ("created_at",)
    __table_args__ = (
        UniqueConstraint(
            "company_id", "membership_year", name="uq_invoice_company_id_membership_year"
        ),
        CheckConstraint("amount_ore >= 0", name="amount_not_negative"),
        Index("ix_invoice_year_status", "year", "status"),
        # A year's invoices in number order, a page at a time (/fees/invoices,
        # migration 0024): without it the first page walks the number index past
        # every other year's invoices.
        Index("ix_invoice_year_number", "year", "number"),
        # The few unpaid invoices by due date: the overdue page, its reminder count and
        # the unpaid filter (migration 0023), without reading every invoice ever sent.
        Index(
            "ix_invoice_unpaid_due_date",
            "due_date",
            sqlite_where=text("status IN ('open', 'partially_paid')"),
            postgresql_where=text("status IN ('open', 'partially_paid')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)
    kind: Mapped[str] = mapped_column(String(20), default="membership")
    company_id: Mapped[int | None] = mapped_column(ForeignKey("company.id"), index=True)
    year: Mapped[int] = mapped_column()
    membership_year: Mapped[int | None] = mapped_column()
    kid: Mapped[str] = mapped_column(String(25), unique=True)
    # Gross (net + VAT): what the customer pays with the KID.
    amount_ore: Mapped[int] = mapped_column(BigInteger)
    net_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    vat_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    # Indexed for the accounting page's sums over a period (migration 0029).
    issue_date: Mapped[date] = mapped_column(index=True)
    due_date: Mapped[date] = mapped_column(index=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    # How the amount was found: the tier, or the override and its reason.
    pricing_note: Mapped[str] = mapped_column(String(400), default="")
    # The event an event invoice is for (set when the seat is invoiced, never changed):
    # the event's income counts it whatever became of the registration (migration 0043).
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("event.id", ondelete="SET NULL"), index=True
    )
    # The buyer as it was when the invoice was issued: an invoice does not change later.
    customer_name: Mapped[str] = mapped_column(String(200), default="")
    customer_orgnr: Mapped[str] = mapped_column(String(9), default="")
    customer_address: Mapped[str] = mapped_column(String(300), default="")
    customer_postal_code: Mapped[str] = mapped_column(String(10), default="")
    customer_postal_place: Mapped[str] = mapped_column(String(100), default="")
    # Where an invoice without a company (a person) is emailed.
    customer_email: Mapped[str] = mapped_column(String(254), default="")
    # Derived from payments, reminders and credit notes (services.refresh_invoice).
    status: Mapped[str] = mapped_column(String(20), default="open")
    paid_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    written_off_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    credited_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    # Reminder fees less those credit notes cancelled (CreditNote.fees_cancelled_ore).
    fees_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    send_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    company: Mapped[Company | None] = relationship()
    lines: Mapped[list["InvoiceLine"]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", cascade="all, delete-orphan"
    )
    payments: Mapped[list["Payment"]] = relationship(
        back_populates="invoice", order_by="Payment.paid_on, Payment.id"
    )
    credit_notes: Mapped[list["CreditNote"]] = relationship(
        back_populates="invoice", order_by="CreditNote.id"
    )
    reminders: Mapped[list["Reminder"]] = relationship(
        back_populates="invoice", order_by="Reminder.level"
    )
    deliveries: Mapped[list["InvoiceDelivery"]] = relationship(
        back_populates="invoice", order_by="InvoiceDelivery.delivered_at, InvoiceDelivery.id"
    )

    def audit_label(self) -> str:
        return self.audit_label_of({"number": self.number, "customer_name": self.customer_name})

    @staticmethod
    def audit_label_of(row: Mapping) -> str:
        """The label of an invoice given as column values (bulk updates)."""
        return f"{row['number']} {row['customer_name']}".strip()

    @property
    def due_ore(self) -> int:
        """What the customer owes in all: fee plus reminder fees, less credit."""
        return max(self.amount_ore + self.fees_ore - self.credited_ore, 0)

    @hybrid_property
    def balance_ore(self) -> int:
        """The invoice's receivable in the ledger: amount and reminder fees, less credit
        notes (and the fees they cancelled), payments and write-offs. Negative when money
        is owed back."""
        return (
            self.amount_ore
            + self.fees_ore
            - self.credited_ore
            - self.paid_ore
            - self.written_off_ore
        )

    @hybrid_property
    def outstanding_ore(self) -> int:
        """What is still owed: the positive balance; nothing on a credited invoice."""
        if self.status == "credited":
            return 0
        return max(self.balance_ore, 0)

    @outstanding_ore.inplace.expression
    @classmethod
    def _outstanding_ore_expression(cls):
        return case((cls.status == "credited", 0), (cls.balance_ore > 0, cls.balance_ore), else_=0)

    @hybrid_property
    def refund_due_ore(self) -> int:
        """Money received beyond what is owed, to be paid back: on a credited invoice
        nothing is owed, so all of it; on another, the negative balance, never more than
        was received (with credit notes capped by `creditable_ore` the two are the
        same; the cap keeps rows from before that rule from asking for money that never
        came)."""
        if self.paid_ore <= 0:
            return 0
        if self.status == "credited":
            return self.paid_ore
        return min(max(-self.balance_ore, 0), self.paid_ore)

    @refund_due_ore.inplace.expression
    @classmethod
    def _refund_due_ore_expression(cls):
        return case(
            (cls.paid_ore <= 0, 0),
            (cls.status == "credited", cls.paid_ore),
            (-cls.balance_ore >= cls.paid_ore, cls.paid_ore),
            (cls.balance_ore < 0, -cls.balance_ore),
            else_=0,
        )

    @property
    def creditable_ore(self) -> int:
        """What a credit note may still cancel (see `creditable`)."""
        return creditable(self.amount_ore, self.fees_ore, self.credited_ore, self.written_off_ore)

    def is_overdue(self, today: date) -> bool:
        return self.status in UNPAID_STATUSES and self.due_date < today

    def vat_breakdown(self) -> list["VatGroup"]:
        """Net and VAT per (category, rate), as the invoice shows them."""
        return vat_breakdown(self.lines)


def creditable(amount_ore: int, fees_ore: int, credited_ore: int, written_off_ore: int) -> int:
    """What credit notes may still cancel of an invoice: its amount less what is already
    credited and less what is written off, for a written-off amount is booked as a loss
    already and crediting it too would book it twice. Paid money may be credited (it is
    then owed back).

    Write-offs count against the reminder fees first: credit notes cannot take the fees
    (a fee is not on the invoice), so a write-off of a fee (or of part of one) leaves the
    whole invoice amount creditable, and only what is written off beyond the fees
    lowers it. A credit note that takes all that is creditable cancels the fees not
    written off (`fees_cancelled_by_full_credit`): nothing of the claim is then owed,
    and all money received is owed back.

    A write-off stands when a credit note comes later: it is not turned into credit.
    """
    return max(
        min(amount_ore - credited_ore, amount_ore + fees_ore - credited_ore - written_off_ore),
        0,
    )


def fees_cancelled_by_full_credit(fees_ore: int, written_off_ore: int) -> int:
    """The reminder fees a credit note cancels when it takes all that is creditable: the
    fees still owed (`Invoice.fees_ore`, less earlier cancellations) less the write-offs,
    which settled fees first (see `creditable`). A reminder fee is owed only for a
    claim that stands; once the claim is cancelled, so is the fee."""
    return max(fees_ore - written_off_ore, 0)


def invoice_status(
    amount_ore: int, fees_ore: int, credited_ore: int, paid_ore: int, written_off_ore: int
) -> str:
    """open | partially_paid | paid | overpaid | credited, from the sums alone.

    `fees_ore` is the reminder fees less those credit notes cancelled. An invoice
    written off in part and credited for the rest is paid (or overpaid, with all money
    received owed back), not credited: part of it is a loss, not a cancellation.
    """
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


class CreditNote(Audited, db.Model):
    """Cancels all or part of an invoice; numbered in the invoice series.

    Like a UBL credit note, its amounts are positive: `amount_ore` is the gross credited
    (net + VAT), `net_ore` and `vat_ore` the sums of its lines (`CreditNoteLine`).

    A credit note takes at most what is creditable (`creditable`). The one that takes all
    of it also cancels the invoice's reminder fees not written off: `fees_cancelled_ore`.
    That is not a line of the note (a fee was never on the invoice, and a line outside
    the scope of VAT could not go on an EHF credit note with VAT lines, BR-O-11..14): the
    PDF and EHF say it in words, and the accounting export books it with the note
    (debit reminder fees, credit receivable).
    """

    __tablename__ = "credit_note"
    __table_args__ = (
        CheckConstraint("amount_ore > 0", name="amount_positive"),
        CheckConstraint("fees_cancelled_ore >= 0", name="fees_cancelled_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id"), index=True)
    amount_ore: Mapped[int] = mapped_column(BigInteger)
    net_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    vat_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    fees_cancelled_ore: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    issue_date: Mapped[date] = mapped_column()
    reason: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="credit_notes")
    lines: Mapped[list["CreditNoteLine"]] = relationship(
        back_populates="credit_note",
        order_by="CreditNoteLine.position",
        cascade="all, delete-orphan",
    )

    def audit_label(self) -> str:
        return str(self.number)

    def vat_breakdown(self) -> list["VatGroup"]:
        """Net and VAT per (category, rate) credited."""
        return vat_breakdown(self.lines)


QUANTITY_SCALE = 1000  # quantities are stored in integer thousandths (1.5 = 1500)
RATE_SCALE = 100  # VAT rates are stored in hundredths of a percent (25 % = 2500)


class _LineColumns:
    """What an invoice line and a credit note line have in common.

    Integers only, so SQLite stores no floats: `quantity_milli` is the quantity in
    thousandths (1 = 1000, 2.5 = 2500), `unit_price_ore` the net price of one unit in
    øre (without VAT), `vat_rate_centi` the VAT rate in hundredths of a percent (25 % =
    2500). `quantity` and `vat_rate` give them as `Decimal`. `net_ore` is quantity ×
    unit price rounded half up to the øre; `vat_ore` is the line's share of its VAT
    group's VAT (see `crm.fees.lines`), so a document's lines add up to its VAT per rate.
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(default=1)
    description: Mapped[str] = mapped_column(String(300))
    quantity_milli: Mapped[int] = mapped_column(BigInteger, default=QUANTITY_SCALE)
    unit_price_ore: Mapped[int] = mapped_column(BigInteger)
    vat_category: Mapped[str] = mapped_column(String(2), default="O")
    vat_rate_centi: Mapped[int] = mapped_column(default=0)
    net_ore: Mapped[int] = mapped_column(BigInteger)
    vat_ore: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def quantity(self) -> Decimal:
        return Decimal(self.quantity_milli) / QUANTITY_SCALE

    @property
    def vat_rate(self) -> Decimal:
        """The VAT rate in percent, e.g. Decimal("25.00")."""
        return (Decimal(self.vat_rate_centi) / RATE_SCALE).quantize(Decimal("0.01"))

    @property
    def gross_ore(self) -> int:
        return self.net_ore + self.vat_ore

    def audit_label(self) -> str:
        return f"{self.position} {self.description}"[:300]


class InvoiceLine(_LineColumns, Audited, db.Model):
    """One line of an invoice (see `_LineColumns` for the units)."""

    __tablename__ = "invoice_line"
    __table_args__ = (
        UniqueConstraint("invoice_id", "position", name="uq_invoice_line_invoice_id_position"),
    )

    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id", ondelete="CASCADE"))
    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class CreditNoteLine(_LineColumns, Audited, db.Model):
    """One line of a credit note, positive like the note (see `_LineColumns`)."""

    __tablename__ = "credit_note_line"
    __table_args__ = (
        UniqueConstraint(
            "credit_note_id", "position", name="uq_credit_note_line_credit_note_id_position"
        ),
    )

    credit_note_id: Mapped[int] = mapped_column(ForeignKey("credit_note.id", ondelete="CASCADE"))
    credit_note: Mapped[CreditNote] = relationship(back_populates="lines")


class VatGroup:
    """The lines of one VAT category and rate: their net sum and VAT."""

    __slots__ = ("category", "net_ore", "rate_centi", "vat_ore")

    def __init__(self, category: str, rate_centi: int, net_ore: int = 0, vat_ore: int = 0):
        self.category = category
        self.rate_centi = rate_centi
        self.net_ore = net_ore
        self.vat_ore = vat_ore

    @property
    def rate(self) -> Decimal:
        return (Decimal(self.rate_centi) / RATE_SCALE).quantize(Decimal("0.01"))

    vat_rate = rate  # the same name as on lines

    @property
    def gross_ore(self) -> int:
        return self.net_ore + self.vat_ore

    def __repr__(self) -> str:
        return f"VatGroup({self.category!r}, {self.rate_centi}, {self.net_ore}, {self.vat_ore})"


def vat_breakdown(lines) -> list[VatGroup]:
    """Lines summed per (VAT category, rate), highest rate first."""
    groups: dict[tuple[str, int], VatGroup] = {}
    for line in lines:
        key = (line.vat_category, line.vat_rate_centi)
        group = groups.setdefault(key, VatGroup(*key))
        group.net_ore += line.net_ore
        group.vat_ore += line.vat_ore
    return sorted(groups.values(), key=lambda g: (-g.rate_centi, g.category))


class OcrImport(Audited, db.Model):
    """One imported Nets OCR giro transmission: refused if it comes again."""

    __tablename__ = "ocr_import"
    __table_args__ = (
        UniqueConstraint(
            "data_transmitter", "transmission_number", name="uq_ocr_import_transmission"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    transmission_number: Mapped[str] = mapped_column(String(7))
    data_transmitter: Mapped[str] = mapped_column(String(8))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str] = mapped_column(String(255), default="")
    nets_date: Mapped[date | None] = mapped_column()
    assignment_count: Mapped[int] = mapped_column(default=0)
    transaction_count: Mapped[int] = mapped_column(default=0)
    matched_count: Mapped[int] = mapped_column(default=0)
    unmatched_count: Mapped[int] = mapped_column(default=0)
    total_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    matched_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    unmatched_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    imported_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    imported_by_label: Mapped[str] = mapped_column(String(200), default="")

    imported_by = relationship("User")

    def audit_label(self) -> str:
        return f"OCR {self.transmission_number}"


class Payment(Audited, db.Model):
    """Money in (payment), money back out (refund, negative) or a write-off.

    Write-offs settle an invoice without money; they are kept apart from paid sums.
    """

    __tablename__ = "payment"
    # (invoice_id, kind) also serves lookups by invoice alone.
    __table_args__ = (Index("ix_payment_invoice_kind", "invoice_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id"))
    kind: Mapped[str] = mapped_column(String(10), default="payment")
    source: Mapped[str] = mapped_column(String(10), default="manual")
    amount_ore: Mapped[int] = mapped_column(BigInteger)
    paid_on: Mapped[date] = mapped_column(index=True)
    booked_on: Mapped[date | None] = mapped_column()
    kid: Mapped[str] = mapped_column(String(25), default="")
    transaction_number: Mapped[str] = mapped_column(String(20), default="")
    archive_reference: Mapped[str] = mapped_column(String(20), default="")
    payer_account: Mapped[str] = mapped_column(String(11), default="")
    note: Mapped[str] = mapped_column(String(300), default="")
    ocr_import_id: Mapped[int | None] = mapped_column(ForeignKey("ocr_import.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="payments")
    ocr_import: Mapped[OcrImport | None] = relationship()

    def audit_label(self) -> str:
        return self.audit_label_of({"kind": self.kind, "amount_ore": self.amount_ore})

    @staticmethod
    def audit_label_of(row: Mapping) -> str:
        """The label of a payment given as column values (bulk inserts)."""
        return f"{row['kind']} {plain(row['amount_ore'])}"


class UnmatchedPayment(Audited, db.Model):
    """An OCR transaction no invoice claimed: assigned by hand, or marked handled."""

    __tablename__ = "unmatched_payment"

    id: Mapped[int] = mapped_column(primary_key=True)
    ocr_import_id: Mapped[int] = mapped_column(ForeignKey("ocr_import.id"), index=True)
    reason: Mapped[str] = mapped_column(String(20))
    kid: Mapped[str] = mapped_column(String(25), default="")
    amount_ore: Mapped[int] = mapped_column(BigInteger)
    paid_on: Mapped[date] = mapped_column()
    booked_on: Mapped[date | None] = mapped_column()
    transaction_number: Mapped[str] = mapped_column(String(20), default="")
    archive_reference: Mapped[str] = mapped_column(String(20), default="")
    payer_account: Mapped[str] = mapped_column(String(11), default="")
    text: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(10), default="open", index=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payment.id"))
    handled_note: Mapped[str] = mapped_column(String(300), default="")
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    ocr_import: Mapped[OcrImport] = relationship()
    payment: Mapped[Payment | None] = relationship()

    def audit_label(self) -> str:
        return self.audit_label_of({"kid": self.kid, "amount_ore": self.amount_ore})

    @staticmethod
    def audit_label_of(row: Mapping) -> str:
        """The label of an unmatched payment given as column values (bulk inserts)."""
        return f"{row['kid'] or '-'} {plain(row['amount_ore'])}"


class Reminder(Audited, db.Model):
    """A written reminder (purring): one per invoice and level, at most two."""

    __tablename__ = "reminder"
    __table_args__ = (
        UniqueConstraint("invoice_id", "level", name="uq_reminder_invoice_id_level"),
        CheckConstraint("level IN (1, 2)", name="level_one_or_two"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id"), index=True)
    level: Mapped[int] = mapped_column()
    sent_on: Mapped[date] = mapped_column()
    new_due_date: Mapped[date] = mapped_column()
    fee_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    email_key: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="reminders")

    def audit_label(self) -> str:
        return f"{self.level}"


class InvoiceDelivery(Audited, db.Model):
    """One sending of an invoice or credit note: by email (PDF), as EHF, or by post."""

    __tablename__ = "invoice_delivery"
    __table_args__ = (CheckConstraint("channel IN ('email', 'ehf', 'post')", name="known_channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id"), index=True)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("credit_note.id"))
    channel: Mapped[str] = mapped_column(String(10))
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The email address, or the Peppol participant (0192:orgnr), or the postal address.
    recipient: Mapped[str] = mapped_column(String(300), default="")
    # The mail key or the access point's message id: what to ask about if it went astray.
    reference: Mapped[str] = mapped_column(String(200), default="")

    invoice: Mapped[Invoice] = relationship(back_populates="deliveries")
    credit_note: Mapped[CreditNote | None] = relationship()

    def audit_label(self) -> str:
        return f"{self.channel} {self.recipient}".strip()
