"""The company page shows the company's engagement over the last five years at a glance:
membership, meetings, other activities, event participations, fees paid (for those who
see fees) and network members, from one query whatever the number of years."""

import re
from datetime import UTC, date, datetime

from sqlalchemy import event

from crm.events.models import Registration
from crm.extensions import db
from crm.fees.models import Invoice
from crm.members.models import Activity, Company
from crm.reports.engagement import company_engagement, membership_in
from crm.timeutil import today_oslo
from tests.events_factories import make_event
from tests.factories import make_company, make_contact

THIS = today_oslo().year


def _seed() -> int:
    """Member since two years ago; meetings and calls, a network meeting one of its
    people attended, events, and fee invoices over the years."""
    company = make_company(
        "Kongsvinger Støperi AS",
        membership_status="member",
        member_since=date(THIS - 2, 3, 1),
    )
    other = make_company("Annen AS")
    kari = make_contact("Kari", "Støper", email="kari@stoperi.no", company_id=company.id)
    make_contact("Ola", "Støper", email="ola@stoperi.no", company_id=company.id, networks=["HR"])
    make_contact("Per", "Annen", email="per@annen.no", company_id=other.id, networks=["HR"])
    db.session.add_all(
        [
            Activity(
                kind="meeting", occurred_on=date(THIS, 1, 5), summary="Møte", company_id=company.id
            ),
            Activity(
                kind="call", occurred_on=date(THIS, 2, 5), summary="Ring", company_id=company.id
            ),
            Activity(
                kind="call", occurred_on=date(THIS - 1, 6, 1), summary="Ring", company_id=company.id
            ),
            # Six years ago: outside the panel.
            Activity(
                kind="meeting",
                occurred_on=date(THIS - 6, 6, 1),
                summary="Gammelt",
                company_id=company.id,
            ),
            # Another company's meeting does not count.
            Activity(
                kind="meeting", occurred_on=date(THIS, 1, 5), summary="Annen", company_id=other.id
            ),
        ]
    )
    network_meeting = Activity(kind="meeting", occurred_on=date(THIS - 1, 9, 1), summary="HR-møte")
    network_meeting.participants = [kari]
    db.session.add(network_meeting)
    db.session.commit()
    # An event early on 1 January (Oslo) of last year counts in last year, not the year before.
    new_year = datetime(THIS - 2, 12, 31, 23, 30, tzinfo=UTC)  # 00:30 in Oslo
    for starts, status in (
        (new_year, "confirmed"),
        (datetime(THIS - 1, 5, 1, 8, tzinfo=UTC), "confirmed"),
        (datetime(THIS - 1, 6, 1, 8, tzinfo=UTC), "cancelled"),
    ):
        ev = make_event(f"Seminar {starts:%Y-%m-%d}", starts_at=starts)
        db.session.add(
            Registration(
                event_id=ev.id,
                contact_id=kari.id,
                name="Kari Støper",
                email="kari@stoperi.no",
                company_id=company.id,
                company_name=company.name,
                status=status,
            )
        )
    for year, amount, paid in ((THIS - 1, 750_000, 750_000), (THIS, 750_000, 250_000)):
        db.session.add(
            Invoice(
                number=year,
                kind="membership",
                company_id=company.id,
                year=year,
                kid=f"{year}0001",
                amount_ore=amount,
                paid_ore=paid,
                issue_date=date(year, 1, 15),
                due_date=date(year, 2, 15),
                status="paid" if paid == amount else "partially_paid",
            )
        )
    db.session.commit()
    return company.id


def _cells(page: str, year: int) -> dict[str, str]:
    row = re.search(rf'<tr data-year="{year}">(.*?)</tr>', page, re.S).group(1)
    cells = dict(re.findall(r"data-(meetings|activities|events|fee)>(.*?)</td>", row, re.S))
    cells["membership"] = re.findall(r"<td>(.*?)</td>", row, re.S)[0]
    return {k: re.sub(r"<[^>]+>|\s+", " ", v).strip() for k, v in cells.items()}


def test_company_page_shows_five_years_of_engagement(app, client, auth):
    with app.app_context():
        company_id = _seed()
    auth.login("staff")
    page = client.get(f"/companies/{company_id}").get_data(as_text=True)
    assert "Engasjement gjennom årene" in page
    assert re.findall(r'data-year="(\d+)"', page) == [str(THIS - i) for i in range(5)]
    this_year, last_year, before = (
        _cells(page, THIS),
        _cells(page, THIS - 1),
        _cells(page, THIS - 2),
    )
    assert (this_year["meetings"], this_year["activities"], this_year["events"]) == ("1", "1", "·")
    # The network meeting Kari attended counts for her company; the cancelled event does not.
    assert (last_year["meetings"], last_year["activities"], last_year["events"]) == ("1", "1", "2")
    assert before["events"] == "·"
    assert before["membership"] == "Innmeldt"
    assert last_year["membership"] == "Medlem"
    assert _cells(page, THIS - 3)["membership"] == "—"
    assert "1 person i et nettverk nå" in page
    # Fees are not staff business.
    assert "data-fee" not in page


def test_treasurers_see_the_fee_paid_each_year(app, client, auth):
    with app.app_context():
        company_id = _seed()
    auth.login("treasurer")
    page = client.get(f"/companies/{company_id}").get_data(as_text=True)
    assert _cells(page, THIS - 1)["fee"].replace("\xa0", " ").startswith("kr 7 500")
    this_year = _cells(page, THIS)["fee"].replace("\xa0", " ")
    assert this_year.startswith("kr 2 500") and "7 500" in this_year
    assert _cells(page, THIS - 2)["fee"] == "—"


def test_engagement_is_one_query_whatever_the_years(app):
    with app.app_context():
        company = db.session.get(Company, _seed())
        statements = []

        def count(*args):
            statements.append(args[2])

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            five = company_engagement(company, years=5)
            fifteen = company_engagement(company, years=15)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(statements) == 2
        assert len(five.years) == 5 and len(fifteen.years) == 15
        assert fifteen.years[6].meetings == 1  # the meeting six years ago


def test_membership_in_a_year_follows_joining_and_resigning():
    company = Company(
        membership_status="resigned", member_since=date(2021, 5, 1), resigned_on=date(2024, 3, 1)
    )
    assert [membership_in(company, y) for y in range(2020, 2026)] == [
        "",
        "joined",
        "member",
        "member",
        "resigned",
        "",
    ]
    assert membership_in(Company(membership_status="prospect"), 2024) == ""
