"""The results page: two years of a small cluster, every figure counted here by hand.

Companies join and resign, take part in activities, networks, a course and a seminar,
get a newsletter; subscribers come and go; fees are invoiced and paid. The page, its
XLSX and the member list must say what the story says, year by year.
"""

import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from crm.events.models import Certificate, Event, EventSession, Registration
from crm.extensions import db
from crm.fees.models import Payment
from crm.fees.services import run_annual_invoicing
from crm.members.models import Activity
from crm.newsletters import ledger
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions import ledger as ledger_of_consent
from crm.subscriptions import topics as topic_rules
from crm.timeutil import today_oslo
from tests.factories import make_company, make_contact, make_fee_schedule, make_fee_settings


def _at(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _story() -> None:
    a = make_company(
        "Alfa Mek AS", municipality_number="3401", employees=12, nace_code="25.110",
        member_since=date(2024, 3, 1), membership_status="member",
    )  # fmt: skip
    b = make_company(
        "Beta Handel AS", municipality_number="3417", municipality_name="Grue", employees=300,
        nace_code="46.900", member_since=date(2025, 6, 1), resigned_on=date(2026, 3, 31),
        membership_status="resigned",
    )  # fmt: skip
    c = make_company(
        "Oslo Konsult AS", municipality_number="0301", municipality_name="Oslo",
        member_since=date(2020, 1, 1), membership_status="member",
    )  # fmt: skip
    make_company("Delta Prospekt AS", municipality_number="3401")
    e = make_company(
        "Eidskog Mat AS", municipality_number="3416", municipality_name="Eidskog", employees=5,
        nace_code="10.110", member_since=date(2026, 2, 1), membership_status="member",
    )  # fmt: skip
    kari = make_contact("Kari", "Alfa", email="kari@alfa.no", company_id=a.id)
    ola = make_contact("Ola", "Oslo", email="ola@oslo.no", company_id=c.id, networks=["Logistikk"])
    eva = make_contact("Eva", "Eidskog", email="eva@eidskog.no", company_id=e.id)
    db.session.add_all(
        [
            Activity(
                kind="meeting", occurred_on=date(2025, 5, 5), summary="Besøk", company_id=a.id
            ),
            Activity(kind="call", occurred_on=date(2026, 4, 2), summary="Ring", company_id=e.id),
        ]
    )
    course = Event(title="LEAN grunnkurs", kind="course", published=True)
    course.sessions = [
        EventSession(starts_at=_at(date(2026, 9, 1)), ends_at=_at(date(2026, 9, 1), 14)),
        EventSession(starts_at=_at(date(2026, 9, 8)), ends_at=_at(date(2026, 9, 8), 14)),
    ]
    seminar = Event(title="Styrketrening", kind="seminar", published=True)
    seminar.sessions = [
        EventSession(starts_at=_at(date(2025, 11, 3)), ends_at=_at(date(2025, 11, 3), 12))
    ]
    db.session.add_all([course, seminar])
    db.session.flush()
    on_course = Registration(
        event_id=course.id, contact_id=kari.id, name="Kari Alfa", email="kari@alfa.no",
        company_id=a.id, participant_type="member_employee", status="confirmed",
    )  # fmt: skip
    db.session.add_all(
        [
            on_course,
            Registration(
                event_id=course.id, name="Per Politiker", email="per@kommune.no",
                participant_type="politician", status="confirmed",
            ),
            Registration(
                event_id=course.id, contact_id=eva.id, name="Eva Eidskog", email="eva@eidskog.no",
                company_id=e.id, participant_type="member_employee", status="cancelled",
            ),
            Registration(
                event_id=seminar.id, name="Berit Beta", email="berit@beta.no", company_id=b.id,
                participant_type="member_employee", status="confirmed",
            ),
        ]
    )  # fmt: skip
    db.session.flush()
    db.session.add(
        Certificate(
            registration_id=on_course.id, code="abc123", sessions_attended=2, hours=Decimal(8)
        )
    )
    letter = Newsletter(subject="Nytt i september", state="finished",
                        finished_at=_at(date(2026, 9, 15)))  # fmt: skip
    db.session.add(letter)
    db.session.flush()
    for n, (contact, delivered, opened) in enumerate(
        [(kari, True, True), (eva, True, False), (ola, False, False)]
    ):
        db.session.add(
            NewsletterRecipient(
                newsletter_id=letter.id, contact_id=contact.id, batch_number=n, state="pending",
                delivered_at=_at(date(2026, 9, 15)) if delivered else None,
                opened_at=_at(date(2026, 9, 16)) if opened else None,
            )
        )  # fmt: skip
    db.session.flush()
    ledger.mark_sent(NewsletterRecipient.newsletter_id == letter.id)  # as the 202 is recorded
    topic_rules.sync_topics()
    general = topic_rules.topic_by_slug("generelt")
    wording = topic_rules.current_wording()
    # A confirmation counts only after its grant (the consent rule, ledger.next_status).
    for contact, kind, day in (
        (kari, "granted", date(2025, 12, 19)),
        (kari, "confirmed", date(2025, 12, 20)),
        (eva, "granted", date(2026, 1, 9)),
        (eva, "confirmed", date(2026, 1, 10)),
        (kari, "withdrawn", date(2026, 3, 5)),
    ):
        ledger_of_consent.record_event(contact, general, kind, "web_form", at=_at(day),
                                       wording=wording if kind == "granted" else None)  # fmt: skip
    db.session.commit()


def _figures(html: str, key: str) -> str:
    marker = f'data-figure="{key}">'
    return html.split(marker, 1)[1].split("<", 1)[0]


def _table(html: str, key: str) -> list[list[str]]:
    section = html.split(f'id="{key}"', 1)[1].split("</section>", 1)[0]
    if "<tbody>" not in section:
        return []  # "Nothing in this period."
    rows = []
    for row in section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]:
        cells = [c.split(">", 1)[1].split("</td>", 1)[0] for c in row.split("<td")[1:]]
        rows.append([c.replace("\u00a0", " ").strip() for c in cells])
    return rows


@pytest.fixture
def story(app):
    with app.app_context():
        _story()


def test_2025_counts_members_active_companies_and_the_seminar(story, auth, client):
    auth.login("staff")
    html = client.get("/reports/2025").get_data(as_text=True)
    # Alfa, Beta (joined June) and Oslo Konsult; Eidskog joined 2026, Delta is a prospect.
    assert _figures(html, "members") == "3"
    # Alfa (meeting), Beta (seminar), Oslo Konsult (network member).
    assert _figures(html, "active") == "3"
    assert _table(html, "municipalities") == [
        ["Kongsvinger", "1", "1"],
        ["Grue", "1", "1"],
        ["Andre kommuner", "1", "1"],
    ]
    assert _table(html, "sizes") == [["10–49", "1"], ["250+", "1"], ["Ukjent", "1"]]
    assert [r[0][:1] for r in _table(html, "industries")] == ["C", "G", "U"]
    assert _table(html, "growth")[:4] == [
        ["Medlemmer ved starten", "2"],
        ["Innmeldt", "1"],
        ["Utmeldt", "0"],
        ["Medlemmer ved slutten", "3"],
    ]
    assert _table(html, "participants") == [["Ansatt i medlemsbedrift", "1"]]
    assert _table(html, "courses") == []
    assert _table(html, "subscribers")[-1] == ["12.2025", "1"]


def test_2026_counts_joined_resigned_course_newsletter_subscribers_and_fees(
    story, app, auth, client
):
    with app.app_context():
        make_fee_settings()
        make_fee_schedule(2026)
        run_annual_invoicing(2026)  # Alfa, Oslo Konsult and Eidskog: the members today
        db.session.commit()
        invoice_total = sum(i.amount_ore for i in _invoices())
        first = _invoices()[0]
        first_ore = first.amount_ore
        db.session.add(Payment(invoice_id=first.id, amount_ore=first_ore, paid_on=date(2026, 3, 1)))
        db.session.commit()
    auth.login("staff")
    html = client.get("/reports/2026").get_data(as_text=True)
    assert _figures(html, "members") == "4"  # Alfa, Beta (until March), Oslo Konsult, Eidskog
    assert _figures(html, "active") == "3"  # Alfa (course), Oslo (network), Eidskog (call)
    assert _table(html, "growth")[:4] == [
        ["Medlemmer ved starten", "3"],
        ["Innmeldt", "1"],
        ["Utmeldt", "1"],
        ["Medlemmer ved slutten", "3"],
    ]
    assert _table(html, "growth")[4] == ["Frafall (utmeldte av medlemmer ved starten)", "33,3 %"]
    assert _table(html, "participants") == [
        ["Ansatt i medlemsbedrift", "1"],
        ["Politiker", "1"],
    ]
    assert _table(html, "courses") == [["LEAN grunnkurs", "2", "1", "8,0"]]
    assert _table(html, "newsletters") == [["Nytt i september", "3", "2", "1"]]
    subscribers = dict(_table(html, "subscribers"))
    assert (subscribers["01.2026"], subscribers["02.2026"], subscribers["03.2026"]) == (
        "2",
        "2",
        "1",
    )
    assert _table(html, "networks") == [["Logistikk", "1"]]
    fees = dict(_table(html, "fees"))
    kr = lambda ore: f"kr {ore // 100:,}".replace(",", " ") + f",{ore % 100:02d}"  # noqa: E731
    assert fees["Fakturert"] == kr(invoice_total)
    assert fees["Betalt"] == kr(first_ore)

    workbook = load_workbook(io.BytesIO(client.get("/reports/2026/results.xlsx").data))
    sheets = {ws.title: list(ws.iter_rows(values_only=True)) for ws in workbook.worksheets}
    growth = next(rows for title, rows in sheets.items() if title.startswith("Innmeldte"))
    assert growth[1:5] == [
        ("Medlemmer ved starten", 3),
        ("Innmeldt", 1),
        ("Utmeldt", 1),
        ("Medlemmer ved slutten", 3),
    ]
    courses = next(rows for title, rows in sheets.items() if title.startswith("Kurs"))
    assert courses[1] == ("LEAN grunnkurs", 2, 1, 8)

    members = load_workbook(io.BytesIO(client.get("/reports/2026/members.xlsx").data))
    names = [row[1] for row in list(members.worksheets[0].iter_rows(values_only=True))[1:]]
    assert names == ["Alfa Mek AS", "Beta Handel AS", "Eidskog Mat AS", "Oslo Konsult AS"]


def _invoices():
    from crm.fees.models import Invoice

    return db.session.scalars(db.select(Invoice).order_by(Invoice.id)).all()


def test_a_period_within_the_year_and_a_bad_period(story, auth, client):
    auth.login("staff")
    html = client.get("/reports/2026?start=2026-04-01&end=2026-12-31").get_data(as_text=True)
    assert _figures(html, "members") == "3"  # Beta resigned 31 March
    response = client.get("/reports/2026?start=2026-12-31&end=2026-01-01")
    assert response.status_code == 200
    assert "Perioden ble ikke forstått" in response.get_data(as_text=True)
    assert client.get("/reports/2026?start=%00&end=x").status_code == 200
    assert client.get("/reports/99999").status_code == 404


def test_the_annual_report_is_a_pdf_with_the_tables(story, auth, client):
    auth.login("staff")
    response = client.get("/reports/2026/results.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    assert len(response.data) > 2000


def test_subscribers_at_month_end_are_the_contacts_whose_consent_is_active(app_ctx):
    """A staff grant is active at once; a signup withdrawn before it was confirmed and
    the merged half of a contact subscribed twice change nothing."""
    from crm.members.services import merge_contacts
    from crm.reports.services import _subscriber_counts
    from crm.subscriptions import ledger as consent_ledger
    from tests.factories import make_subscriber, make_user

    topic_rules.sync_topics()
    general = topic_rules.topic_by_slug("generelt")
    wording = topic_rules.current_wording()
    by_phone = make_contact("Per", email="per@example.no")
    consent_ledger.record_event(
        by_phone, general, "granted", "staff", user=make_user("staff"), wording=wording
    )
    unconfirmed = make_contact("Ola", email="ola@example.no")
    consent_ledger.record_event(unconfirmed, general, "granted", "web_form", wording=wording)
    consent_ledger.withdraw_all(unconfirmed, source="email_link")
    twice = make_subscriber("kari@example.no")
    merge_contacts(twice, make_subscriber("kari.nordmann@example.no"))
    db.session.commit()
    today = today_oslo()
    assert _subscriber_counts(today.replace(day=1), today) == [2]  # Per and Kari


def test_two_courses_of_the_same_title_each_count_their_own_certificates(app_ctx):
    from crm.reports.services import period_figures
    from tests.events_factories import make_event

    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    spring = make_event("LEAN grunnkurs", sessions=2, starts_at=start, completion_percent=50)
    autumn = make_event(
        "LEAN grunnkurs", sessions=2, starts_at=start.replace(month=9), completion_percent=50
    )
    for event, people in ((spring, 2), (autumn, 1)):
        for n in range(people):
            db.session.add(
                Registration(
                    event_id=event.id, name=f"P{n}", email=f"p{n}@example.no", status="confirmed"
                )
            )
    db.session.flush()
    (first, *_rest) = db.session.scalars(
        db.select(Registration).where(Registration.event_id == spring.id)
    ).all()
    db.session.add(Certificate(registration_id=first.id, code="c1", hours=Decimal("6")))
    db.session.commit()
    rows = period_figures(date(2026, 1, 1), date(2026, 12, 31))["courses"]
    assert sorted(row[1:3] for row in rows) == [[1, 0], [2, 1]]
