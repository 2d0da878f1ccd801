"""Lists and figures for the fee pages: years, invoice lists, overdue, the dashboard."""

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import contains_eager, selectinload

from crm.extensions import db
from crm.fees.models import (
    UNPAID_STATUSES,
    FeeSchedule,
    Invoice,
    Payment,
    UnmatchedPayment,
)
from crm.table_versions import cached_many, watch
from crm.timeutil import today_oslo

# --- lists and figures ----------------------------------------------------------------


def invoice_years() -> list[int]:
    years = set(db.session.scalars(select(Invoice.year).distinct()))
    years |= set(db.session.scalars(select(FeeSchedule.year)))
    years.add(today_oslo().year)
    return sorted(years, reverse=True)


# Invoices holding money to pay back (Invoice.refund_due_ore > 0), as a query condition;
# the status first, so the (year, status) index narrows it. An invoice settled beyond
# what is owed by write-offs alone holds no money to pay back.
REFUND_DUE = Invoice.status.in_(("overpaid", "credited")) & (Invoice.refund_due_ore > 0)


def invoices_for_year_query(
    year: int, status: str | None = None, *, refund_due: bool = False
) -> Select:
    """`year`'s invoices by number; `status` may also be "unpaid" (open or partly paid)."""
    query = select(Invoice).where(Invoice.year == year).order_by(Invoice.number)
    if status == "unpaid":
        query = query.where(Invoice.status.in_(UNPAID_STATUSES))
    elif status:
        query = query.where(Invoice.status == status)
    if refund_due:
        query = query.where(REFUND_DUE)
    return query


def invoices_for_year(
    year: int, status: str | None = None, *, refund_due: bool = False
) -> list[Invoice]:
    """All of `year`'s invoices by number (see invoices_for_year_query)."""
    return db.session.scalars(invoices_for_year_query(year, status, refund_due=refund_due)).all()


def overdue_invoices_query(today: date | None = None, year: int | None = None) -> Select:
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
    return query


def overdue_invoices(today: date | None = None, year: int | None = None) -> list[Invoice]:
    """All unpaid invoices past their due date, oldest first."""
    return db.session.scalars(overdue_invoices_query(today, year)).all()


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


# What the dashboard's sums read (crm.table_versions): payments change invoices' paid
# amounts, so the invoice table says it all.
_SUMS_READ = watch(Invoice.__table__.name)
_UNMATCHED_READ = watch(UnmatchedPayment.__table__.name)


def _sums_by_status(year: int, today: date) -> list[list]:
    """Summed by the database per status (and overdue or not): a year holds one invoice
    per member, and reading them all into Python took longer than the page may."""

    owed = Invoice.amount_ore + Invoice.fees_ore - Invoice.credited_ore
    past_due = case((Invoice.due_date < today, 1), else_=0)
    # Outstanding and refund due are the invoice's own (Invoice.outstanding_ore and
    # Invoice.refund_due_ore, the rule in one place), summed by the database.
    rows = db.session.execute(
        select(
            Invoice.status,
            past_due,
            func.count(),
            func.coalesce(func.sum(owed), 0),
            func.coalesce(func.sum(Invoice.credited_ore), 0),
            func.coalesce(func.sum(Invoice.paid_ore), 0),
            func.coalesce(func.sum(Invoice.written_off_ore), 0),
            func.count(case((Invoice.refund_due_ore > 0, 1))),
            func.coalesce(func.sum(Invoice.refund_due_ore), 0),
            func.coalesce(func.sum(Invoice.outstanding_ore), 0),
        )
        .where(Invoice.year == year)
        .group_by(Invoice.status, past_due)
    )
    return [[status, flag, *(int(n) for n in numbers)] for status, flag, *numbers in rows]


def _unmatched_open() -> int:
    return (
        db.session.scalar(
            select(func.count(UnmatchedPayment.id)).where(UnmatchedPayment.state == "open")
        )
        or 0
    )


def dashboard(year: int, today: date | None = None) -> Dashboard:
    """Invoiced, paid, outstanding and overdue for `year`, in øre and counts (the sums
    kept in Redis until an invoice changes)."""
    today = today or today_oslo()
    invoiced = Figure(0, 0)
    paid = Figure(0, 0)
    outstanding = Figure(0, 0)
    overdue = Figure(0, 0)
    credited = Figure(0, 0)
    written_off = 0
    figures = cached_many(
        # v2: the sums' columns changed (0041); never read a cached row of the old shape.
        f"fee-dashboard-v2:{year}:{today.isoformat()}",
        {
            "sums": (_SUMS_READ, lambda: _sums_by_status(year, today)),
            "unmatched": (_UNMATCHED_READ, _unmatched_open),
        },
    )
    refund_due = Figure(0, 0)
    for status, overdue_flag, count, owed_ore, credit, paid_ore, off, *rest in figures["sums"]:
        refund_count, refund_ore, left = rest
        # Money owed back: all received on a credited invoice, the excess on an overpaid
        # one (overpaid by money, not by write-offs alone).
        refund_due.count += refund_count
        refund_due.ore += refund_ore
        if status == "credited":
            # Nothing is invoiced on a credited invoice, so money received on it is not
            # paid towards the invoiced amount (it would inflate the share paid).
            credited.count += count
            credited.ore += credit
            continue
        paid.ore += paid_ore
        written_off += off
        invoiced.count += count
        invoiced.ore += owed_ore
        if status in ("paid", "overpaid"):
            paid.count += count
        if status in UNPAID_STATUSES:
            outstanding.count += count
            outstanding.ore += left
            if overdue_flag:
                overdue.count += count
                overdue.ore += left
    return Dashboard(
        year,
        invoiced,
        paid,
        outstanding,
        overdue,
        credited,
        written_off,
        figures["unmatched"],
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
