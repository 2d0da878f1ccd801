"""The cluster's results for a period: what the board, the municipalities and the
national cluster programme ask for.

Every figure is counted by the database in one aggregate query (or a handful), so the
page asks the same number of queries with 150 member companies or 20,000; the counts are
kept in Redis until a table they read changes (crm.table_versions), so a second view
costs two Redis round trips and one small query. A company counts as a member in the
period when it was one on any day of it (`member_since` on or before the last day, not
resigned before the first). Two rules that are not sums are kept by the database with
the rows they come from, and summed here: which networks a company takes part in through
its contacts (migration 0039) and when each contact's consent became active or ended
(migration 0040). "Active" member companies took part in an activity or an event in the
period, or have a current contact in a network.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from babel.numbers import format_decimal
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, exists, func, or_, select, union

from crm.events.models import PARTICIPANT_TYPES, Certificate, Event, EventSession, Registration
from crm.extensions import db
from crm.fees.models import Invoice, Payment
from crm.members.models import Activity, Company, Contact, Network, company_network, contact_network
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions.models import GENERAL_TOPIC, ConsentChange, ConsentEvent, Topic
from crm.table_versions import cached_many, watch
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


def _band_index():
    """The size band's index in SIZE_BANDS, counted by the database (-1: not known)."""
    bands = enumerate(SIZE_BANDS)
    whens = [(Company.employees <= high, i) for i, (_low, high, _label) in bands if high]
    return case((Company.employees.is_(None), -1), *whens, else_=len(SIZE_BANDS) - 1)


def _engaged_company_ids(start: date, end: date):
    """Companies with an activity or event in the period."""
    return union(
        select(Activity.company_id).where(
            Activity.company_id.is_not(None),
            Activity.occurred_on >= start,
            Activity.occurred_on <= end,
        ),
        select(Registration.company_id).where(
            Registration.company_id.is_not(None),
            Registration.status == "confirmed",
            _event_in_period(start, end),
        ),
    )


def active_condition(start: date, end: date):
    """Active in the period: a current contact in a network (kept on the company by the
    database, migration 0039) or an activity or event in the period."""
    return or_(Company.in_network, Company.id.in_(_engaged_company_ids(start, end)))


def _member_counts(start: date, end: date) -> list[list]:
    """Member companies counted by municipality, size band, NACE division and whether
    they were active: [municipality number, band index, division, active, count]."""
    active = case((active_condition(start, end), 1), else_=0)
    division = func.substr(Company.nace_code, 1, 2)
    band = _band_index()
    stmt = (
        select(Company.municipality_number, band, division, active, func.count())
        .where(member_condition(start, end))
        .group_by(Company.municipality_number, band, division, active)
    )
    return [list(row) for row in db.session.execute(stmt)]


def _sum_by(rows: list[list], key, only_active: bool = False) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        if not only_active or row[3]:
            label = key(row)
            counts[label] = counts.get(label, 0) + row[4]
    return counts


def _municipality(number: str) -> str:
    return CLUSTER_MUNICIPALITIES.get(number) or str(OTHER_MUNICIPALITIES)


def _band_label(index: int) -> str:
    return SIZE_BANDS[index][2] if index >= 0 else str(UNKNOWN)


# What each cached part of the report reads (crm.table_versions: a change to one of these
# tables has the part counted again). Contacts and their memberships stand for
# company.in_network and company_network, which triggers write with them.
_MEMBERSHIP = (Company.__table__.name,)
_ENGAGEMENT = _MEMBERSHIP + tuple(
    t.name
    for t in (
        Activity.__table__, Registration.__table__, EventSession.__table__,
        Contact.__table__, contact_network,
    )
)  # fmt: skip
_NETWORKS = _ENGAGEMENT + (Network.__table__.name,)
_EVENTS = tuple(
    t.name for t in (Event.__table__, EventSession.__table__, Registration.__table__,
                     Certificate.__table__)
)  # fmt: skip
# consent_change is written with the ledger's events (crm.subscriptions.ledger).
_CONSENTS = (ConsentEvent.__table__.name, Topic.__table__.name)
_MONEY = (Invoice.__table__.name, Payment.__table__.name)
watch(*_NETWORKS, *_EVENTS, *_CONSENTS, *_MONEY)


def period_figures(start: date, end: date) -> dict:
    """The report's counts, plain numbers and labels (no words in a language): each
    part from the cache while the tables it reads are unchanged.

    Parts to count are counted two at a time, the dearest first (the database counts
    them side by side on two connections): after a change to companies the members per
    network, the members and the growth figures are counted again, 36 + 27 + 7 ms one
    after the other in the scale set."""
    parts = {
        "subscribers": (_CONSENTS, lambda: _subscriber_counts(start, end)),
        "networks": (_NETWORKS, lambda: _network_counts(start, end)),
        "members": (_ENGAGEMENT, lambda: _member_counts(start, end)),
        "growth": (_MEMBERSHIP, lambda: _growth_counts(start, end)),
        "participants": (_EVENTS, lambda: _participation_counts(start, end)),
        "courses": (_EVENTS, lambda: _course_counts(start, end)),
        "fees": (_MONEY, lambda: _fee_sums(start, end)),
    }
    return cached_many(f"report:{start.isoformat()}:{end.isoformat()}", parts, threads=2)


def year_report(start: date, end: date) -> Report:
    """Every table of the results page for the period [start, end]."""
    figures = period_figures(start, end)
    members = figures["members"]
    tables = [
        _by_municipality(members),
        _by_size(members),
        _by_nace(members),
        _growth(figures["growth"]),
        _active_by_network(figures["networks"]),
        _participations(figures["participants"]),
        _courses(figures["courses"]),
        _newsletters(start, end),  # the newsletters' own counters: one small query
        _subscribers(start, end, figures["subscribers"]),
        _fees(figures["fees"]),
    ]
    return Report(
        start=start,
        end=end,
        members=sum(row[4] for row in members),
        active=sum(row[4] for row in members if row[3]),
        tables=tables,
    )


def _by_municipality(members: list[list]) -> Table:
    order = list(CLUSTER_MUNICIPALITIES.values()) + [str(OTHER_MUNICIPALITIES)]
    counts = _sum_by(members, lambda r: _municipality(r[0]))
    active_counts = _sum_by(members, lambda r: _municipality(r[0]), only_active=True)
    rows = [[name, counts[name], active_counts.get(name, 0)] for name in order if name in counts]
    return Table(
        "municipalities",
        str(_l("Member companies by municipality")),
        [str(_l("Municipality")), str(_l("Member companies")), str(_l("Active"))],
        rows,
    )


def _by_size(members: list[list]) -> Table:
    counts = _sum_by(members, lambda r: _band_label(r[1]))
    labels = [label for _low, _high, label in SIZE_BANDS] + [str(UNKNOWN)]
    return Table(
        "sizes",
        str(_l("Member companies by number of employees")),
        [str(_l("Employees")), str(_l("Member companies"))],
        [[label, counts[label]] for label in labels if label in counts],
    )


def _by_nace(members: list[list]) -> Table:
    counts = _sum_by(members, lambda r: section_of(r[2]) or "?")
    rows = [[f"{s} {NACE_TITLES[s]}", counts[s]] for s, _low, _high in NACE_SECTIONS if s in counts]
    if "?" in counts:
        rows.append([str(UNKNOWN), counts["?"]])
    return Table(
        "industries",
        str(_l("Member companies by industry (NACE section)")),
        [str(_l("Industry")), str(_l("Member companies"))],
        rows,
    )


def _growth_counts(start: date, end: date) -> list[int]:
    """[members at the start, joined, resigned, members at the end], in one scan."""

    def count(*conditions):
        return func.count().filter(and_(*conditions))

    return list(
        db.session.execute(
            select(
                count(member_condition(start, start), Company.member_since < start),
                count(Company.member_since >= start, Company.member_since <= end),
                count(Company.resigned_on >= start, Company.resigned_on <= end),
                count(member_condition(end, end)),
            ).select_from(Company)
        ).one()
    )


def _growth(counts: list[int]) -> Table:
    at_start, joined, resigned, at_end = counts
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


def _network_counts(start: date, end: date) -> list[list]:
    # From the (company, network) pairs the database keeps (migration 0039): counted from
    # the memberships and their contacts each time, this took 130–240 ms in the scale set.
    counts = (
        select(company_network.c.network_id, func.count().label("companies"))
        .join(Company, Company.id == company_network.c.company_id)
        .where(member_condition(start, end))
        .group_by(company_network.c.network_id)
        .subquery()
    )
    stmt = (
        select(Network.name, counts.c.companies)
        .join(counts, counts.c.network_id == Network.id)
        .order_by(Network.name)
    )
    return [[name, count] for name, count in db.session.execute(stmt)]


def _active_by_network(rows: list[list]) -> Table:
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


def _participation_counts(start: date, end: date) -> dict[str, int]:
    stmt = (
        select(Registration.participant_type, func.count())
        .where(Registration.status == "confirmed", _event_in_period(start, end))
        .group_by(Registration.participant_type)
    )
    return dict(db.session.execute(stmt).all())


def _participations(counts: dict[str, int]) -> Table:
    rows = [[str(label), counts[key]] for key, label in PARTICIPANT_TYPES.items() if key in counts]
    return Table(
        "participants",
        str(_l("Participations in events by participant type")),
        [str(_l("Participant type")), str(_l("Participations"))],
        rows,
    )


def _course_counts(start: date, end: date) -> list[list]:
    """[title, participants, certificates, certified hours (text)] for each course."""
    in_period = _event_in_period(start, end)
    participants = db.session.execute(
        select(Event.id, Event.title, func.count(Registration.id))
        .join(Registration, Registration.event_id == Event.id)
        .where(Event.kind == "course", Registration.status == "confirmed", in_period)
        .group_by(Event.id, Event.title)
        .order_by(Event.title)
    ).all()
    # Only a confirmed seat's certificate counts (one left on a registration cancelled
    # before cancelling revoked them does not); per course, as the participants are.
    certified = {
        event_id: (count, hours)
        for event_id, count, hours in db.session.execute(
            select(
                Event.id,
                func.count(Certificate.id),
                func.coalesce(func.sum(Certificate.hours), 0),
            )
            .join(Registration, Registration.event_id == Event.id)
            .join(Certificate, Certificate.registration_id == Registration.id)
            .where(Event.kind == "course", Registration.status == "confirmed", in_period)
            .group_by(Event.id)
        )
    }
    rows = []
    for event_id, title, count in participants:
        certificates, hours = certified.get(event_id, (0, 0))
        rows.append([title, count, certificates, str(Decimal(hours or 0))])
    return rows


def _courses(rows: list[list]) -> Table:
    return Table(
        "courses",
        str(_l("Courses: participants, certificates and certified hours")),
        [
            str(_l("Course")),
            str(_l("Participants")),
            str(_l("Certificates")),
            str(_l("Certified hours")),
        ],
        [[title, count, certs, Decimal(hours)] for title, count, certs, hours in rows],
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


def _subscriber_counts(start: date, end: date) -> list[int]:
    """Subscribers of the general newsletter at each month's end: contacts whose consent
    became active (a confirmed signup, a grant by staff or on the preferences page) by
    then, less those whose consent ended (withdrawn, bounced, complained, objected).

    Summed from `ConsentChange`, the events that changed whether a contact's consent is
    active by the consent rule (`ledger.next_status`), kept with the ledger: a signup
    withdrawn before it was confirmed, a second grant or the merged half of a contact
    counts nothing. One aggregate, per month end, of the changes before it.
    """
    months = _month_starts(start, end)
    ends = [min((m + timedelta(days=32)).replace(day=1) - timedelta(days=1), end) for m in months]
    cutoffs = [_utc(day + timedelta(days=1)) for day in ends]
    general = select(Topic.id).where(Topic.slug == GENERAL_TOPIC).scalar_subquery()
    # Each change's month as the index of the first month end after it.
    month = case(
        *[(ConsentChange.at < cutoff, index) for index, cutoff in enumerate(cutoffs)],
        else_=len(cutoffs),
    )
    sums = dict(
        db.session.execute(
            select(month, func.sum(ConsentChange.change))
            .where(ConsentChange.topic_id == general, ConsentChange.at < cutoffs[-1])
            .group_by(month)
        ).all()
    )
    changes = [int(sums.get(index) or 0) for index in range(len(cutoffs))]
    return list(itertools.accumulate(changes))


def _subscribers(start: date, end: date, counts: list[int]) -> Table:
    return Table(
        "subscribers",
        str(_l("Newsletter subscribers at each month's end")),
        [str(_l("Month")), str(_l("Subscribers"))],
        [[m.strftime("%m.%Y"), n] for m, n in zip(_month_starts(start, end), counts, strict=True)],
    )


def _fee_sums(start: date, end: date) -> list[int]:
    """[invoiced, paid] in øre, one query."""
    invoiced = (
        select(func.coalesce(func.sum(Invoice.amount_ore), 0))
        .where(Invoice.issue_date >= start, Invoice.issue_date <= end)
        .scalar_subquery()
    )
    paid = (
        select(func.coalesce(func.sum(Payment.amount_ore), 0))
        .where(Payment.kind == "payment", Payment.paid_on >= start, Payment.paid_on <= end)
        .scalar_subquery()
    )
    return [int(v) for v in db.session.execute(select(invoiced, paid)).one()]


def _fees(sums: list[int]) -> Table:
    invoiced, paid = sums
    return Table(
        "fees",
        str(_l("Fees and course income")),
        [str(_l("Figure")), str(_l("Amount (NOK)"))],
        [
            [str(_l("Invoiced")), Decimal(invoiced) / 100],
            [str(_l("Paid")), Decimal(paid) / 100],
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
