"""Staff event pages: lists, month view, creating, duplicating, publishing, the event page;
and the command line and demo data SPEC.md fixes."""

import json

from crm.events import services
from crm.events.models import Event, Registration
from crm.extensions import db
from tests.events_factories import make_event
from tests.factories import make_company


def _new_event_form(**fields) -> dict:
    data = {
        "title": "Nettverksmøte HR",
        "kind": "network_meeting",
        "audience": "open",
        "venue": "Rådhuset",
        "description": "**Velkommen**",
        "capacity": "30",
        "vat_percent": "25",
        "sessions-0-date": "2031-05-06",
        "sessions-0-start": "09:00",
        "sessions-0-end": "11:30",
        "networks": "3",
    }
    data.update(fields)
    return data


def test_staff_create_an_event_with_sessions_and_it_starts_as_a_draft(app, client, auth):
    auth.login("staff")
    response = client.post("/events/new", data=_new_event_form(), follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "Nettverksmøte HR" in page
    with app.app_context():
        event = db.session.scalar(db.select(Event))
        assert not event.published
        (session,) = event.sessions
        assert session.starts_at.isoformat() == "2031-05-06T07:00:00+00:00"  # 09:00 CEST
        assert [n.name for n in event.networks] == ["HR"]
        event_id = event.id
    drafts = client.get("/events?show=drafts").get_data(as_text=True)
    assert "Nettverksmøte HR" in drafts
    client.post(f"/events/{event_id}/publish")
    assert "Nettverksmøte HR" in client.get("/events").get_data(as_text=True)
    assert client.get(f"/arrangementer/{event_id}").status_code == 200


def test_an_event_needs_a_title_and_a_whole_session(app, client, auth):
    auth.login("staff")
    response = client.post("/events/new", data=_new_event_form(title="", **{"sessions-0-end": ""}))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Gi arrangementet en tittel." in page
    assert "Hver økt trenger dato, start og slutt." in page
    backwards = client.post(
        "/events/new", data=_new_event_form(**{"sessions-0-end": "08:00"})
    ).get_data(as_text=True)
    assert "En økt må slutte etter at den starter." in backwards
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Event.id))) == 0


def test_an_edit_naming_one_session_in_two_rows_is_refused_and_changes_nothing(app, client, auth):
    with app.app_context():
        event = make_event(sessions=2, capacity=5)
        db.session.commit()
        event_id, (first, second) = event.id, [(s.uid, s.starts_at) for s in event.sessions]
    auth.login("staff")
    rows = {}
    for i, day in enumerate(("2031-05-06", "2031-05-07")):
        rows |= {
            f"sessions-{i}-date": day,
            f"sessions-{i}-start": "09:00",
            f"sessions-{i}-end": "11:30",
            f"sessions-{i}-uid": first[0],
        }
    response = client.post(f"/events/{event_id}/edit", data=_new_event_form(**rows))
    assert response.status_code == 200
    assert "En økt står to ganger. Last inn siden på nytt og prøv igjen." in response.get_data(
        as_text=True
    )
    with app.app_context():
        sessions = db.session.get(Event, event_id).sessions
        assert [(s.uid, s.starts_at) for s in sessions] == [first, second]


def test_duplicating_copies_sessions_with_new_calendar_uids_and_no_registrations(app, client, auth):
    with app.app_context():
        event = make_event(sessions=2, capacity=5)
        services.register(event.id, name="Kari", email="kari@example.no")
        db.session.commit()
        event_id, uids = event.id, {s.uid for s in event.sessions}
    auth.login("staff")
    response = client.post(f"/events/{event_id}/duplicate")
    assert response.status_code == 302
    with app.app_context():
        copy = db.session.scalar(db.select(Event).where(Event.duplicated_from_id == event_id))
        assert not copy.published and len(copy.sessions) == 2
        assert not uids & {s.uid for s in copy.sessions}
        assert services.seat_counts(copy.id)["confirmed"] == 0


def test_the_event_page_shows_registrations_and_the_waitlist_in_order(app, client, auth):
    with app.app_context():
        event = make_event(capacity=1)
        for name in ("Anne", "Bjørn", "Cecilie"):
            services.register(event.id, name=name, email=f"{len(name)}{name[0]}@example.no")
        db.session.commit()
        event_id = event.id
    auth.login("treasurer")  # treasurers may look
    page = client.get(f"/events/{event_id}").get_data(as_text=True)
    assert "Anne" in page
    assert page.index("Bjørn") < page.index("Cecilie")
    assert "Dupliser" not in page  # but not change anything


def test_staff_cancel_a_registration_and_the_seat_is_offered_on(app, client, auth):
    with app.app_context():
        event = make_event(capacity=1)
        first = services.register(event.id, name="A", email="a@example.no").registration
        second = services.register(event.id, name="B", email="b@example.no").registration
        db.session.commit()
        first_id, second_id = first.id, second.id
    auth.login("staff")
    client.post(f"/events/registrations/{first_id}/cancel")
    with app.app_context():
        assert db.session.get(Registration, first_id).status == "cancelled"
        assert db.session.get(Registration, second_id).status == "offered"


def test_the_month_view_shows_the_sessions_of_the_month(app, client, auth):
    with app.app_context():
        event = make_event("Frokostmøte")
        start = event.starts_at
    auth.login("staff")
    page = client.get(f"/events/month?year={start.year}&month={start.month}").get_data(as_text=True)
    assert "Frokostmøte" in page
    assert client.get("/events/month?year=abc&month=99").status_code == 200


def test_cli_lists_events_and_registrations_as_spec_fixes(app, runner):
    with app.app_context():
        company = make_company("Medlem AS", membership_status="member")
        event = make_event("Seminar", capacity=1)
        services.register(event.id, name="A", email="a@example.no", company=company)
        services.register(event.id, name="B", email="b@example.no")
        db.session.commit()
        event_id, orgnr = event.id, company.orgnr
    listed = json.loads(runner.invoke(args=["events", "list", "--json"]).output)
    assert listed == [
        {
            "id": event_id,
            "title": "Seminar",
            "kind": "seminar",
            "starts_at": listed[0]["starts_at"],
            "capacity": 1,
            "confirmed": 1,
            "waitlisted": 1,
            "published": True,
        }
    ]
    assert listed[0]["starts_at"].endswith("+00:00")
    rows = json.loads(
        runner.invoke(args=["events", "registrations", str(event_id), "--format", "json"]).output
    )
    assert rows == [
        {
            "email": "a@example.no",
            "name": "A",
            "company_orgnr": orgnr,
            "status": "confirmed",
            "position": None,
            "attended_sessions": 0,
        },
        {
            "email": "b@example.no",
            "name": "B",
            "company_orgnr": None,
            "status": "waitlisted",
            "position": 1,
            "attended_sessions": 0,
        },
    ]
    csv_out = runner.invoke(args=["events", "registrations", str(event_id), "--format", "csv"])
    assert csv_out.output.splitlines()[0] == (
        "email,name,company_orgnr,status,position,attended_sessions"
    )
    missing = runner.invoke(args=["events", "registrations", "99999"])
    assert missing.exit_code != 0


def test_demo_makes_a_small_free_seminar_and_a_paid_multi_session_course(app, runner):
    result = runner.invoke(args=["demo", "--companies", "40", "--subscribers", "0"])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(args=["events", "list", "--json"]).output)
    with app.app_context():
        events = {e.kind: e for e in db.session.scalars(db.select(Event))}
        seminar, course = events["seminar"], events["course"]
        assert seminar.is_free and seminar.capacity <= 20 and seminar.published
        assert not course.is_free and len(course.sessions) >= 2 and course.published
        assert "Styrketrening" in seminar.title and "LEAN" in course.title
        # The course's seats are invoiced, as registering makes them (the event page's
        # "Fakturert" said kr 0,00 for 16 seats), and some of them paid.
        confirmed = [r for r in course.registrations if r.status == "confirmed"]
        income = services.event_income(course)
        assert confirmed and all(r.invoice_id for r in confirmed)
        assert 0 < income["paid"] < income["invoiced"] and income["count"] == len(confirmed)
    assert all(row["published"] for row in listed)


def test_participants_export_as_csv_and_xlsx_and_name_badges(app, client, auth):
    import io

    from openpyxl import load_workbook

    with app.app_context():
        event = make_event(capacity=1)
        services.register(event.id, name="Anne Berg", email="anne@example.no", note="Vegan")
        services.register(event.id, name="Bjørn Dahl", email="bjorn@example.no")
        db.session.commit()
        event_id = event.id
    auth.login("treasurer")
    csv_text = client.get(f"/events/{event_id}/participants.csv").data.decode("utf-8-sig")
    assert "Anne Berg" in csv_text and "Vegan" in csv_text and "Bjørn Dahl" in csv_text
    workbook = load_workbook(io.BytesIO(client.get(f"/events/{event_id}/participants.xlsx").data))
    names = [row[0] for row in workbook.active.iter_rows(min_row=2, values_only=True)]
    assert names == ["Anne Berg", "Bjørn Dahl"]
    badges = client.get(f"/events/{event_id}/badges.pdf")
    assert badges.mimetype == "application/pdf" and badges.data.startswith(b"%PDF")
