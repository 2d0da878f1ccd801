"""Fee schedules, tiers, per-company overrides and what a company pays (pricing, pro rata).

Like the rest of the fee services: changes the session and flushes, never commits.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select

from crm.extensions import db
from crm.fees.errors import FeeError
from crm.fees.models import (
    FeeOverride,
    FeeSchedule,
    FeeTier,
)
from crm.members.models import Company

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
