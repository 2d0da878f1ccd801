"""Every staff list, search and dashboard page asks the database the same number of
questions whatever the number of rows it shows: no query per row (N+1).

Each page is loaded with a few records of every kind, then again with four times as
many, and the SQL statements of each request are counted. Pages are found from the app's
routes (every staff GET page without URL arguments, plus searches and the detail pages
of a company, a contact, a network and an event), so a page added later is covered too.
"""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event

from crm.extensions import db
from crm.members.models import Activity, Network
from tests.cached_figures import forget_cached_figures
from tests.factories import make_contact, make_invoiced_members
from tests.routes import staff_rules

# Pages whose work is a file or a job, not a page of rows.
SKIP_ENDPOINTS = {"auth.logout"}
SEARCHES = (
    "/companies?q=medlem",
    "/contacts?q=frida",
    "/contacts?q=kontakt",
    "/contacts?topic=any&kind=company",
    "/reports/2026",
)


ANNUAL_MEETING = "Årsmøte"


def _seed(start: int, count: int) -> dict:
    """`count` member companies (invoiced, each with contacts in networks, an activity
    and an event registration) numbered from `start`; returns ids for detail pages."""
    networks = db.session.scalars(db.select(Network).order_by(Network.id)).all()
    if start == 0:
        make_invoiced_members(count, year=2026)
    else:
        _more_members(start, count)
    from crm.members.models import Company

    companies = db.session.scalars(db.select(Company).order_by(Company.id)).all()
    for i, company in enumerate(companies[start : start + count], start=start):
        contact = make_contact(
            "Kontakt",
            f"Nummer {i}",
            email=f"kontakt{i}@example.no",
            company_id=company.id,
            is_primary_contact=True,
            networks=[networks[i % len(networks)], networks[(i + 1) % len(networks)]],
        )
        db.session.add(
            Activity(
                kind="meeting",
                occurred_on=date(2026, 1, 1) + timedelta(days=i),
                summary=f"Møte {i}",
                company_id=company.id,
                contact_id=contact.id,
            )
        )
        _register(contact, company, i)
    db.session.commit()
    return {"company": companies[0].id, "contact": companies[0].contacts[0].id}


def _more_members(start: int, count: int) -> None:
    from crm.fees.services import run_annual_invoicing
    from tests.factories import make_member

    for i in range(start, start + count):
        make_member(f"Medlem {i:04d} AS", employees=5 + i)
    run_annual_invoicing(2026)
    db.session.commit()


def _register(contact, company, i: int) -> None:
    try:
        from crm.events.models import Event, EventSession, Registration
    except ImportError:  # pragma: no cover - before events existed
        return
    starts = datetime(2027, 1, 10, 8, 0, tzinfo=UTC) + timedelta(days=i)
    event_ = Event(title=f"Seminar {i}", kind="seminar", published=True, capacity=30)
    event_.sessions = [EventSession(starts_at=starts, ends_at=starts + timedelta(hours=3))]
    db.session.add(event_)
    db.session.flush()
    # Everyone also comes to the annual meeting: its page lists a registration per company.
    annual = db.session.scalar(db.select(Event).where(Event.title == ANNUAL_MEETING))
    if annual is None:
        annual = Event(title=ANNUAL_MEETING, kind="seminar", published=True)
        starts = datetime(2027, 3, 1, 16, 0, tzinfo=UTC)
        annual.sessions = [EventSession(starts_at=starts, ends_at=starts + timedelta(hours=2))]
        db.session.add(annual)
        db.session.flush()
    for event_id in (event_.id, annual.id):
        db.session.add(
            Registration(
                event_id=event_id,
                contact_id=contact.id,
                name=contact.name,
                email=contact.email,
                company_id=company.id,
                company_name=company.name,
                status="confirmed",
            )
        )


def _pages(app, ids: dict) -> list[str]:
    pages = []
    for rule in staff_rules(app):
        if "GET" not in rule.methods or rule.endpoint in SKIP_ENDPOINTS or rule.arguments:
            continue
        pages.append(rule.rule)
    pages += list(SEARCHES)
    pages += [f"/companies/{ids['company']}", f"/contacts/{ids['contact']}"]
    network = db.session.scalar(db.select(Network.id).order_by(Network.id))
    pages.append(f"/networks/{network}")
    from crm.events.models import Event

    annual = db.session.scalar(db.select(Event.id).where(Event.title == ANNUAL_MEETING))
    pages.append(f"/events/{annual}")
    return sorted(set(pages))


def _count_queries(app, client, pages: list[str]) -> dict[str, int]:
    counts = {}
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for page in pages:
            client.get(page)  # warm caches (topics, settings made on first use)
            forget_cached_figures(app)  # but count the figures in the database
            statements.clear()
            response = client.get(page)
            assert response.status_code in (200, 302), (page, response.status_code)
            counts[page] = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return counts


@pytest.mark.slow
def test_no_staff_page_asks_one_query_per_row(app, auth, client):
    with app.app_context():
        ids = _seed(0, 3)
        pages = _pages(app, ids)
    auth.login("admin")
    few = _count_queries(app, client, pages)
    with app.app_context():
        _seed(3, 9)
    many = _count_queries(app, client, pages)
    grew = {page: (few[page], many[page]) for page in pages if many[page] > few[page]}
    assert not grew, "queries grow with the rows (page: 3 records → 12 records): " + ", ".join(
        f"{page}: {a} → {b}" for page, (a, b) in sorted(grew.items())
    )
