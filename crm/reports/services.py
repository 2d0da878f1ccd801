"""The cluster's results for a period: what the board, the municipalities and the
national cluster programme ask for.

Every figure is one aggregate query (or a handful), so the page costs the same with 150
member companies or 20,000. A company counts as a member in the period when it was one
on any day of it (`member_since` on or before the last day, not resigned before the
first). "Active" member companies took part in an activity or an event in the period,
or have a contact in a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from babel.numbers import format_decimal
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, exists, func, or_, select

from crm.events.models import PARTICIPANT_TYPES, Certificate, Event, EventSession, Registration
from crm.extensions import db
from crm.fees.models import Invoice, Payment
from crm.members.models import Activity, Company, Contact, Network, contact_network
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions.models import GENERAL_TOPIC, ConsentEvent, Topic
from crm.timeutil import OSLO

SIZE_BANDS = ((0, 9, "0–9"), (10, 49, "10–49"), (50, 249, "50–249"), (250, None, "250+"))
# NACE Rev. 2 (SN2007) sections by two-digit division.
NACE_SECTIONS = (
    ("A", 1, 3), ("B", 5, 9), ("C", 10, 33), ("D", 35, 35), ("E", 36, 39), ("F", 41, 43),
    ("G", 45, 47), ("H", 49, 53), ("I", 55, 56), ("J", 58, 63), ("K", 64, 66), ("L", 68, 68),
    ("M", 69, 75), ("N", 77, 82), ("O", 84, 84), ("P", 85, 85), ("Q", 86, 88), ("R", 90, 93),
    ("S", 94, 96), ("T", 97, 98), ("U", 99, 99),
)  # fmt: skip
# The words people read for a section letter (SSB's short titles).
NACE_TITLES = {
    "A": _l("Agriculture, forestry and fishing"),
    "B": _l("Mining and quarrying"),
    "C": _l("Manufacturing"),
    "D": _l("Electricity and gas supply"),
    "E": _l("Water supply, sewerage, waste"),
    "F": _l("Construction"),
    "G": _l("Wholesale and retail trade"),
    "H": _l("Transportation and storage"),
    "I": _l("Accommodation and food"),
    "J": _l("Information and communication"),
    "K": _l("Financial and insurance activities"),
    "L": _l("Real estate activities"),
    "M": _l("Professional, scientific and technical"),
    "N": _l("Administrative and support services"),
    "O": _l("Public administration"),
    "P": _l("Education"),
    "Q": _l("Health and social work"),
    "R": _l("Arts, entertainment and recreation"),
    "S": _l("Other service activities"),
    "T": _l("Households as employers"),
    "U": _l("Extraterritorial organisations"),
}
UNKNOWN = _l("Unknown")
OTHER_MUNICIPALITIES = _l("Other municipalities")
STARTING_KINDS = ("confirmed",)
ENDING_KINDS = ("withdrawn", "bounced", "complained", "objected")


@dataclass
class Table:
    """One table of the report: its rows are (label, numbers…)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    chart: str = "bars"  # bars | none

    def column(self, index: int = 1) -> list[tuple[str, int]]:
        return [(str(row[0]), int(row[index] or 0)) for row in self.rows]


@dataclass
class Report:
    start: date
    end: date
    members: int
    active: int
    tables: list[Table]

    def table(self, key: str) -> Table:
        return next(t for t in self.tables if t.key == key)

    @property
    def active_share(self) -> int | None:
        """Per cent of member companies that were active, rounded."""
        return round(100 * self.active / self.members) if self.members else None


def section_of(nace_code: str) -> str | None:
    digits = (nace_code or "")[:2]
    if len(digits) != 2 or not digits.isascii() or not digits.isdigit():
        return None
    division = int(digits)
    return next((s for s, low, high in NACE_SECTIONS if low <= division <= high), None)


def band_of(employees: int | None) -> str:
    if employees is None:
        return str(UNKNOWN)
    return next(label for low, high, label in SIZE_BANDS if high is None or employees <= high)


def _utc(day: date) -> datetime:
    return datetime.combine(day, time.min, OSLO).astimezone(UTC)


def _locale() -> str:
    return str(get_locale() or "nb")


def member_condition(start: date, end: date):
    """Member on at least one day of [start, end].

    A member without a `member_since` has been one as long as we know; a resigned
    company without a `resigned_on` is counted in no period (when it left is unknown).
    """
    return and_(
        or_(
            Company.membership_status == "member",
            and_(Company.membership_status == "resigned", Company.resigned_on.is_not(None)),
        ),
        or_(Company.member_since.is_(None), Company.member_since <= end),
        or_(Company.resigned_on.is_(None), Company.resigned_on >= start),
    )


def _member_rows(start: date, end: date):
    return db.session.execute(
        select(Company.id, Company.municipality_number, Company.employees, Company.nace_code).where(
            member_condition(start, end)
        )
    ).all()


def _active_ids(start: date, end: date) -> set[int]:
    """Member companies with an activity or event in the period, or a contact in a network."""
    after, before = _utc(start), _utc(end + timedelta(days=1))
    activity = exists().where(
        Activity.company_id == Company.id,
        Activity.occurred_on >= start,
        Activity.occurred_on <= end,
    )
    event = exists().where(
        Registration.company_id == Company.id,
        Registration.status == "confirmed",
        exists().where(
            EventSession.event_id == Registration.event_id,
            EventSession.starts_at >= after,
            EventSession.starts_at < before,
        ),
    )
    network = exists().where(
        Contact.company_id == Company.id,
        Contact.archived_at.is_(None),
        contact_network.c.contact_id == Contact.id,
    )
    stmt = select(Company.id).where(member_condition(start, end), or_(activity, event, network))
    return set(db.session.scalars(stmt))


def _count_by(rows, key) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        label = key(row)
        counts[label] = counts.get(label, 0) + 1
    return counts


def _municipality(number: str) -> str:
    return CLUSTER_MUNICIPALITIES.get(number) or str(OTHER_MUNICIPALITIES)


def year_report(start: date, end: date) -> Report:
    """Every table of the results page for the period [start, end]."""
    members = _member_rows(start, end)
    active = _active_ids(start, end)
    tables = [
        _by_municipality(members, active),
        _by_size(members),
        _by_nace(members),
        _growth(start, end),
        _active_by_network(start, end, active),
        _participations(start, end),
        _courses(start, end),
        _newsletters(start, end),
        _subscribers(start, end),
        _fees(start, end),
    ]
    return Report(start=start, end=end, members=len(members), active=len(active), tables=tables)


def _by_municipality(members, active: set[int]) -> Table:
    order = list(CLUSTER_MUNICIPALITIES.values()) + [str(OTHER_MUNICIPALITIES)]
    counts = _count_by(members, lambda r: _municipality(r.municipality_number))
    active_counts = _count_by(
        [r for r in members if r.id in active], lambda r: _municipality(r.municipality_number)
    )
    rows = [[name, counts[name], active_counts.get(name, 0)] for name in order if name in counts]
    return Table(
        "municipalities",
        str(_l("Member companies by municipality")),
        [str(_l("Municipality")), str(_l("Member companies")), str(_l("Active"))],
        rows,
    )


def _by_size(members) -> Table:
    counts = _count_by(members, lambda r: band_of(r.employees))
    labels = [label for _low, _high, label in SIZE_BANDS] + [str(UNKNOWN)]
    return Table(
        "sizes",
        str(_l("Member companies by number of employees")),
        [str(_l("Employees")), str(_l("Member companies"))],
        [[label, counts[label]] for label in labels if label in counts],
    )


def _by_nace(members) -> Table:
    counts = _count_by(members, lambda r: section_of(r.nace_code) or "?")
    rows = [[f"{s} {NACE_TITLES[s]}", counts[s]] for s, _low, _high in NACE_SECTIONS if s in counts]
    if "?" in counts:
        rows.append([str(UNKNOWN), counts["?"]])
    return Table(
        "industries",
        str(_l("Member companies by industry (NACE section)")),
        [str(_l("Industry")), str(_l("Member companies"))],
        rows,
    )


def _growth(start: date, end: date) -> Table:
    at_start = db.session.scalar(
        select(func.count()).where(member_condition(start, start), Company.member_since < start)
    )
    joined = db.session.scalar(
        select(func.count()).where(Company.member_since >= start, Company.member_since <= end)
    )
    resigned = db.session.scalar(
        select(func.count()).where(Company.resigned_on >= start, Company.resigned_on <= end)
    )
    at_end = db.session.scalar(select(func.count()).where(member_condition(end, end)))
    churn = "—"
    if at_start:
        churn = f"{format_decimal(Decimal(100 * resigned) / at_start, '0.0', locale=_locale())} %"
    return Table(
        "growth",
        str(_l("Joined and resigned")),
        [str(_l("Figure")), str(_l("Companies"))],
        [
            [str(_l("Members at the start")), at_start],
            [str(_l("Joined")), joined],
            [str(_l("Resigned")), resigned],
            [str(_l("Members at the end")), at_end],
            [str(_l("Churn (resigned of members at the start)")), churn],
        ],
        chart="none",
    )


def _active_by_network(start: date, end: date, active: set[int]) -> Table:
    stmt = (
        select(Network.name, func.count(func.distinct(Contact.company_id)))
        .join(contact_network, contact_network.c.network_id == Network.id)
        .join(Contact, Contact.id == contact_network.c.contact_id)
        .join(Company, Company.id == Contact.company_id)
        .where(member_condition(start, end), Contact.archived_at.is_(None))
        .group_by(Network.name)
        .order_by(Network.name)
    )
    rows = [[name, count] for name, count in db.session.execute(stmt)]
    return Table(
        "networks",
        str(_l("Member companies in each network")),
        [str(_l("Network")), str(_l("Member companies"))],
        rows,
    )


def _event_in_period(start: date, end: date):
    return exists().where(
        EventSession.event_id == Registration.event_id,
        EventSession.starts_at >= _utc(start),
        EventSession.starts_at < _utc(end + timedelta(days=1)),
    )


def _participations(start: date, end: date) -> Table:
    stmt = (
        select(Registration.participant_type, func.count())
        .where(Registration.status == "confirmed", _event_in_period(start, end))
        .group_by(Registration.participant_type)
    )
    counts = dict(db.session.execute(stmt).all())
    rows = [[str(label), counts[key]] for key, label in PARTICIPANT_TYPES.items() if key in counts]
    return Table(
        "participants",
        str(_l("Participations in events by participant type")),
        [str(_l("Participant type")), str(_l("Participations"))],
        rows,
    )


def _courses(start: date, end: date) -> Table:
    in_period = _event_in_period(start, end)
    participants = db.session.execute(
        select(Event.title, func.count(Registration.id))
        .join(Registration, Registration.event_id == Event.id)
        .where(Event.kind == "course", Registration.status == "confirmed", in_period)
        .group_by(Event.id, Event.title)
        .order_by(Event.title)
    ).all()
    certificates = dict(
        db.session.execute(
            select(Event.title, func.count(Certificate.id))
            .join(Registration, Registration.event_id == Event.id)
            .join(Certificate, Certificate.registration_id == Registration.id)
            .where(Event.kind == "course", in_period)
            .group_by(Event.title)
        ).all()
    )
    hours = dict(
        db.session.execute(
            select(Event.title, func.coalesce(func.sum(Certificate.hours), 0))
            .join(Registration, Registration.event_id == Event.id)
            .join(Certificate, Certificate.registration_id == Registration.id)
            .where(Event.kind == "course", in_period)
            .group_by(Event.title)
        ).all()
    )
    rows = [
        [title, count, certificates.get(title, 0), Decimal(hours.get(title, 0) or 0)]
        for title, count in participants
    ]
    return Table(
        "courses",
        str(_l("Courses: participants, certificates and certified hours")),
        [
            str(_l("Course")),
            str(_l("Participants")),
            str(_l("Certificates")),
            str(_l("Certified hours")),
        ],
        rows,
    )


def _newsletters(start: date, end: date) -> Table:
    # The newsletter's counters, kept with its ledger (crm.newsletters.ledger).
    N = Newsletter
    stmt = (
        select(N.subject, N.sent_count, N.delivered_count, N.opened_count)
        .where(
            N.finished_at >= _utc(start),
            N.finished_at < _utc(end + timedelta(days=1)),
            # as before: the newsletters that had a ledger
            exists().where(NewsletterRecipient.newsletter_id == N.id),
        )
        .order_by(N.finished_at)
    )
    rows = [[subject, int(s), int(d), int(o)] for subject, s, d, o in db.session.execute(stmt)]
    return Table(
        "newsletters",
        str(_l("Newsletter reach")),
        [str(_l("Newsletter")), str(_l("Sent")), str(_l("Delivered")), str(_l("Opened"))],
        rows,
    )


def _month_starts(start: date, end: date) -> list[date]:
    months, day = [], start.replace(day=1)
    while day <= end:
        months.append(day)
        day = (day + timedelta(days=32)).replace(day=1)
    return months


def _subscribers(start: date, end: date) -> Table:
    """Subscribers of the general newsletter at each month's end: subscriptions started
    (confirmed) less those ended (withdrawn, bounced, complained, objected)."""
    months = _month_starts(start, end)
    ends = [min((m + timedelta(days=32)).replace(day=1) - timedelta(days=1), end) for m in months]
    sign = case(
        (ConsentEvent.kind.in_(STARTING_KINDS), 1),
        (ConsentEvent.kind.in_(ENDING_KINDS), -1),
        else_=0,
    )
    columns = [
        func.coalesce(func.sum(case((ConsentEvent.at < _utc(day + timedelta(days=1)), sign))), 0)
        for day in ends
    ]
    general = select(Topic.id).where(Topic.slug == GENERAL_TOPIC).scalar_subquery()
    values = db.session.execute(select(*columns).where(ConsentEvent.topic_id == general)).one()
    return Table(
        "subscribers",
        str(_l("Newsletter subscribers at each month's end")),
        [str(_l("Month")), str(_l("Subscribers"))],
        [[day.strftime("%m.%Y"), int(v or 0)] for day, v in zip(months, values, strict=True)],
    )


def _fees(start: date, end: date) -> Table:
    invoiced = db.session.scalar(
        select(func.coalesce(func.sum(Invoice.amount_ore), 0)).where(
            Invoice.issue_date >= start, Invoice.issue_date <= end
        )
    )
    paid = db.session.scalar(
        select(func.coalesce(func.sum(Payment.amount_ore), 0)).where(
            Payment.kind == "payment", Payment.paid_on >= start, Payment.paid_on <= end
        )
    )
    return Table(
        "fees",
        str(_l("Fees and course income")),
        [str(_l("Figure")), str(_l("Amount (NOK)"))],
        [
            [str(_l("Invoiced")), Decimal(int(invoiced)) / 100],
            [str(_l("Paid")), Decimal(int(paid)) / 100],
        ],
        chart="none",
    )


def member_companies(start: date, end: date) -> tuple[list[str], list[list]]:
    """The list the cluster programme's effect measurement asks for: member companies in
    the period with orgnr, name, NACE, municipality, employees, member since."""
    headers = [
        str(_l("Organisation number")),
        str(_l("Name")),
        str(_l("Industry code")),
        str(_l("Industry")),
        str(_l("Municipality number")),
        str(_l("Municipality")),
        str(_l("Employees")),
        str(_l("Member since")),
        str(_l("Resigned")),
    ]
    companies = db.session.scalars(
        select(Company).where(member_condition(start, end)).order_by(Company.name, Company.id)
    )
    rows = [
        [
            c.orgnr,
            c.name,
            c.nace_code,
            c.nace_text,
            c.municipality_number,
            c.municipality,
            c.employees,
            c.member_since,
            c.resigned_on,
        ]
        for c in companies
    ]
    return headers, rows
