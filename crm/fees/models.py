"""Fee settings and schedules, invoices, credit notes, payments, OCR imports, reminders.

Money is integer øre everywhere in this package (BIGINT: a bank file's totals pass
2**31 øre, 21 million kroner); it becomes `Decimal` kroner only at
the edges (forms, CSV, PDF). An invoice's status is derived from its payments and
credit notes by `crm.fees.services.refresh_invoice`, and stored so lists can filter
on it; every change to it is in the audit log like any other field.
"""

from collections.abc import Mapping
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
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
UNMATCHED_REASONS = ("no_kid", "invalid_kid", "unknown_kid")
UNMATCHED_STATES = ("open", "assigned", "handled")
REMINDER_LEVELS = (1, 2)


class FeeSettings(Audited, db.Model):
    """The cluster as the sender of invoices; one row (id 1)."""

    __tablename__ = "fee_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(200), default="")
    orgnr: Mapped[str] = mapped_column(String(9), default="")
    bank_account: Mapped[str] = mapped_column(String(11), default="")
    street_address: Mapped[str] = mapped_column(String(300), default="")
    postal_code: Mapped[str] = mapped_column(String(10), default="")
    postal_place: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    next_invoice_number: Mapped[int] = mapped_column(default=1001)
    kid_length: Mapped[int] = mapped_column(default=10)
    kid_scheme: Mapped[str] = mapped_column(String(5), default=MOD10)
    due_days: Mapped[int] = mapped_column(default=30)
    reminder_fee_ore: Mapped[int] = mapped_column(BigInteger, default=0)

    def audit_label(self) -> str:
        return self.cluster_name or "fee settings"


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
    """A membership fee invoice; never deleted, cancelled by credit notes."""

    __tablename__ = "invoice"
    __audit_exclude__ = ("created_at",)
    __table_args__ = (
        UniqueConstraint("company_id", "year", name="uq_invoice_company_id_year"),
        CheckConstraint("amount_ore >= 0", name="amount_not_negative"),
        Index("ix_invoice_year_status", "year", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id"), index=True)
    year: Mapped[int] = mapped_column()
    kid: Mapped[str] = mapped_column(String(25), unique=True)
    amount_ore: Mapped[int] = mapped_column(BigInteger)
    issue_date: Mapped[date] = mapped_column()
    due_date: Mapped[date] = mapped_column(index=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    # How the amount was found: the tier, or the override and its reason.
    pricing_note: Mapped[str] = mapped_column(String(400), default="")
    # The buyer as it was when the invoice was issued: an invoice does not change later.
    customer_name: Mapped[str] = mapped_column(String(200), default="")
    customer_orgnr: Mapped[str] = mapped_column(String(9), default="")
    customer_address: Mapped[str] = mapped_column(String(300), default="")
    customer_postal_code: Mapped[str] = mapped_column(String(10), default="")
    customer_postal_place: Mapped[str] = mapped_column(String(100), default="")
    # Derived from payments, reminders and credit notes (services.refresh_invoice).
    status: Mapped[str] = mapped_column(String(20), default="open")
    paid_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    written_off_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    credited_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    fees_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    send_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    company: Mapped[Company] = relationship()
    payments: Mapped[list["Payment"]] = relationship(
        back_populates="invoice", order_by="Payment.paid_on, Payment.id"
    )
    credit_notes: Mapped[list["CreditNote"]] = relationship(
        back_populates="invoice", order_by="CreditNote.id"
    )
    reminders: Mapped[list["Reminder"]] = relationship(
        back_populates="invoice", order_by="Reminder.level"
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

    @property
    def outstanding_ore(self) -> int:
        if self.status == "credited":
            return 0
        return max(self.due_ore - self.paid_ore - self.written_off_ore, 0)

    @property
    def refund_due_ore(self) -> int:
        """Money received beyond what is owed, to be paid back: on a credited invoice
        nothing is owed, so all of it; on an overpaid one, the excess."""
        owed = 0 if self.status == "credited" else self.due_ore - self.written_off_ore
        return max(self.paid_ore - max(owed, 0), 0)

    def is_overdue(self, today: date) -> bool:
        return self.status in UNPAID_STATUSES and self.due_date < today


class CreditNote(Audited, db.Model):
    """Cancels all or part of an invoice; numbered in the invoice series."""

    __tablename__ = "credit_note"
    __table_args__ = (CheckConstraint("amount_ore > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id"), index=True)
    amount_ore: Mapped[int] = mapped_column(BigInteger)
    issue_date: Mapped[date] = mapped_column()
    reason: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="credit_notes")

    def audit_label(self) -> str:
        return str(self.number)


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
