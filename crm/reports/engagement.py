"""A company's engagement over the years, for the panel on its page.

One query whatever the number of years: each figure is a column per year of small
aggregates over the company's own rows (activities, event registrations, fee invoices,
network members), so the panel costs the same for a company of one year or twenty.
Years follow the calendar in Oslo; membership in a year follows the results page's
rule (`crm.reports.services.member_condition`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import and_, case, func, or_, select, true

from crm.events.models import EventSession, Registration
from crm.extensions import db
from crm.fees.models import Invoice
from crm.members.models import Activity, Company, Contact, activity_participant, contact_network
from crm.reports.services import _utc
from crm.timeutil import today_oslo

YEARS_SHOWN = 5


@dataclass(frozen=True)
class EngagementYear:
    year: int
    membership: str  # "member" | "joined" | "resigned" | "" (not a member that year)
    meetings: int
    activities: int  # other activities: calls, seminars, emails, notes
    events: int  # confirmed event participations
    invoiced_ore: int | None  # None: no membership invoice for the year
    paid_ore: int


@dataclass(frozen=True)
class Engagement:
    years: list[EngagementYear]
    network_members: int  # the company's current contacts in a network (now)

    @property
    def any(self) -> bool:
        return bool(self.network_members) or any(
            y.membership or y.meetings or y.activities or y.events or y.invoiced_ore
            for y in self.years
        )


def membership_in(company: Company, year: int) -> str:
    """How the company stood in `year`: joined or resigned in it, a member, or ""."""
    start, end = date(year, 1, 1), date(year, 12, 31)
    status, since, resigned = company.membership_status, company.member_since, company.resigned_on
    if status not in ("member", "resigned") or (status == "resigned" and resigned is None):
        return ""
    if (since and since > end) or (resigned and resigned < start):
        return ""
    if resigned and resigned <= end:
        return "resigned"
    if since and since >= start:
        return "joined"
    return "member"


def _count_if(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def company_engagement(company: Company, years: int = YEARS_SHOWN) -> Engagement:
    """The company's engagement in each of the last `years` calendar years (newest
    first): membership, meetings and other activities (its own, or with its people
    taking part), confirmed event participations, membership fee invoiced and paid;
    and how many of its current contacts sit in a network."""
    last = today_oslo().year
    shown = list(range(last, last - years, -1))
    first_day = date(shown[-1], 1, 1)

    took_part = select(activity_participant.c.activity_id).join(
        Contact, Contact.id == activity_participant.c.contact_id
    )
    activities = (
        select(
            *[
                _count_if(
                    and_(
                        Activity.occurred_on.between(date(y, 1, 1), date(y, 12, 31)),
                        Activity.kind == "meeting",
                    )
                ).label(f"meetings_{y}")
                for y in shown
            ],
            *[
                _count_if(
                    and_(
                        Activity.occurred_on.between(date(y, 1, 1), date(y, 12, 31)),
                        Activity.kind != "meeting",
                    )
                ).label(f"activities_{y}")
                for y in shown
            ],
        )
        .where(
            Activity.occurred_on >= first_day,
            or_(
                Activity.company_id == company.id,
                Activity.id.in_(took_part.where(Contact.company_id == company.id)),
            ),
        )
        .subquery()
    )
    # An event counts in the year of its first session.
    first_session = (
        select(EventSession.event_id, func.min(EventSession.starts_at).label("starts_at"))
        .where(
            EventSession.event_id.in_(
                select(Registration.event_id).where(Registration.company_id == company.id)
            )
        )
        .group_by(EventSession.event_id)
        .subquery()
    )
    events = (
        select(
            *[
                _count_if(
                    and_(
                        first_session.c.starts_at >= _utc(date(y, 1, 1)),
                        first_session.c.starts_at < _utc(date(y, 12, 31) + timedelta(days=1)),
                    )
                ).label(f"events_{y}")
                for y in shown
            ]
        )
        .select_from(Registration)
        .join(first_session, first_session.c.event_id == Registration.event_id)
        .where(Registration.company_id == company.id, Registration.status == "confirmed")
        .subquery()
    )
    fees = (
        select(
            *[
                func.sum(case((Invoice.year == y, Invoice.amount_ore))).label(f"invoiced_{y}")
                for y in shown
            ],
            *[
                func.coalesce(func.sum(case((Invoice.year == y, Invoice.paid_ore))), 0).label(
                    f"paid_{y}"
                )
                for y in shown
            ],
        )
        .where(
            Invoice.company_id == company.id,
            Invoice.kind == "membership",
            Invoice.status != "credited",
            Invoice.year >= shown[-1],
        )
        .subquery()
    )
    networks = (
        select(func.count(func.distinct(Contact.id)).label("network_members"))
        .join(contact_network, contact_network.c.contact_id == Contact.id)
        .where(Contact.company_id == company.id, Contact.archived_at.is_(None))
        .subquery()
    )
    row = (
        db.session.execute(
            select(*activities.c, *events.c, *fees.c, *networks.c).select_from(
                activities.join(events, true()).join(fees, true()).join(networks, true())
            )
        )
        .one()
        ._mapping
    )
    return Engagement(
        years=[
            EngagementYear(
                year=y,
                membership=membership_in(company, y),
                meetings=int(row[f"meetings_{y}"]),
                activities=int(row[f"activities_{y}"]),
                events=int(row[f"events_{y}"]),
                invoiced_ore=None if row[f"invoiced_{y}"] is None else int(row[f"invoiced_{y}"]),
                paid_ore=int(row[f"paid_{y}"]),
            )
            for y in shown
        ],
        network_members=int(row["network_members"]),
    )
