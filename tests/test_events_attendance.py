"""Check-in at the door (one tap per session, undo), attendance per session, no-shows,
course certificates (PDF by email, public verification, listed on the contact page)."""

from datetime import timedelta

import pytest

from crm.events import services
from crm.events.models import Certificate, Registration
from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.timeutil import OSLO, utcnow
from tests.events_factories import make_event
from tests.factories import make_company


@pytest.fixture
def course(app):
    """A four-session course that began three weeks ago; Anne, Bjørn and Cecilie take part."""
    with app.app_context():
        company = make_company("Kurs AS", membership_status="member")
        start = (utcnow() - timedelta(weeks=3)).replace(hour=8, minute=0, second=0, microsecond=0)
        event = make_event(
            "LEAN grunnkurs", sessions=4, starts_at=start, completion_percent=75, capacity=10
        )
        ids = {}
        for name in ("Anne", "Bjørn", "Cecilie"):
            registration = Registration(
                event_id=event.id,
                name=f"{name} Deltaker",
                email=f"{name.lower()}@example.no",
                company_id=company.id,
                status="confirmed",
            )
            db.session.add(registration)
            db.session.flush()
            ids[name] = registration.id
        db.session.commit()
        return event.id, [s.id for s in event.sessions], ids


def _tap(client, event_id, registration_id, session_id):
    return client.post(f"/events/{event_id}/checkin/{registration_id}/{session_id}")


def test_one_tap_marks_present_and_a_second_tap_undoes_it(app, client, auth, course):
    event_id, sessions, ids = course
    auth.login("staff")
    page = client.get(f"/events/{event_id}/checkin?session={sessions[0]}&q=bjørn")
    text = page.get_data(as_text=True)
    assert "Bjørn Deltaker" in text and "Anne Deltaker" not in text
    _tap(client, event_id, ids["Bjørn"], sessions[0])
    text = client.get(f"/events/{event_id}/checkin?session={sessions[0]}").get_data(as_text=True)
    assert "1 av 3 til stede" in text
    _tap(client, event_id, ids["Bjørn"], sessions[0])
    text = client.get(f"/events/{event_id}/checkin?session={sessions[0]}").get_data(as_text=True)
    assert "0 av 3 til stede" in text


def test_attendance_per_session_and_no_shows_on_the_event_page(app, client, auth, course):
    event_id, sessions, ids = course
    auth.login("staff")
    _tap(client, event_id, ids["Anne"], sessions[0])
    _tap(client, event_id, ids["Anne"], sessions[1])
    _tap(client, event_id, ids["Bjørn"], sessions[1])
    with app.app_context():
        event = services.lock_event(event_id)
        counts = [count for _session, count in services.attendance_per_session(event)]
        assert counts == [1, 2, 0, 0]
        assert [r.name for r in services.no_shows(event)] == ["Cecilie Deltaker"]
        db.session.rollback()
    page = client.get(f"/events/{event_id}").get_data(as_text=True)
    assert "Ikke møtt" in page and "Cecilie Deltaker" in page


def test_certificates_go_to_those_who_reached_the_threshold_once(app, client, auth, course):
    event_id, sessions, ids = course
    auth.login("staff")
    for session_id in sessions[:3]:  # 3 of 4 = 75 %
        _tap(client, event_id, ids["Anne"], session_id)
    for session_id in sessions[:2]:  # 50 %: no certificate
        _tap(client, event_id, ids["Bjørn"], session_id)
    client.post(f"/events/{event_id}/certificates")
    client.post(f"/events/{event_id}/certificates")  # again: nothing new
    with app.app_context():
        (certificate,) = db.session.scalars(db.select(Certificate)).all()
        assert certificate.registration_id == ids["Anne"]
        assert certificate.sessions_attended == 3 and certificate.hours == 9
        (message,) = db.session.scalars(
            db.select(EmailMessage).where(EmailMessage.template == "events/certificate")
        ).all()
        assert message.to_email == "anne@example.no"
        assert message.attachments[0].content.startswith(b"%PDF")
        code, certificate_id = certificate.code, certificate.id
    verify = client.get(f"/sertifikat/{code}").get_data(as_text=True)
    assert "Anne Deltaker" in verify and "LEAN grunnkurs" in verify
    assert client.get("/sertifikat/not-a-code").status_code == 404
    pdf = client.get(f"/events/certificates/{certificate_id}.pdf")
    assert pdf.mimetype == "application/pdf"


def test_participation_shows_on_the_contact_and_company_pages(app, client, auth):
    with app.app_context():
        company = make_company("Deltar AS", membership_status="member")
        event = make_event("Nettverksmøte", networks=[])
        registration = services.register(
            event.id, name="Kari Nordmann", email="kari@example.no", company=company
        ).registration
        db.session.commit()
        contact_id, company_id = registration.contact_id, company.id
    auth.login("staff")
    contact_page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert "Nettverksmøte" in contact_page
    company_page = client.get(f"/companies/{company_id}").get_data(as_text=True)
    assert "Nettverksmøte" in company_page and "Kari Nordmann" in company_page


def test_cancelled_and_waitlisted_people_cannot_be_checked_in(app, client, auth, course):
    event_id, sessions, ids = course
    with app.app_context():
        db.session.get(Registration, ids["Cecilie"]).status = "cancelled"
        db.session.commit()
    auth.login("staff")
    _tap(client, event_id, ids["Cecilie"], sessions[0])
    with app.app_context():
        assert services.present_ids(sessions[0]) == set()


def test_merging_contacts_keeps_their_event_history(app_ctx):
    from crm.members.services import merge_contacts
    from tests.factories import make_contact

    event = make_event()
    duplicate = make_contact("Kari", "Dobbel", email="kari2@example.no")
    kept = make_contact("Kari", "Nordmann", email="kari@example.no")
    registration = services.register(event.id, name="Kari", email="kari2@example.no").registration
    db.session.commit()
    assert registration.contact_id == duplicate.id
    merge_contacts(kept, duplicate)
    db.session.commit()
    assert db.session.get(Registration, registration.id).contact_id == kept.id


def _course_row(event) -> list:
    """The results report's course table row of `event`, over the days of its sessions."""
    from crm.reports.services import period_figures

    days = [s.starts_at.astimezone(OSLO).date() for s in event.sessions]
    (row,) = period_figures(min(days), max(days))["courses"]
    return row


def _certify_anne(client, event_id, sessions, ids):
    for session_id in sessions[:3]:
        _tap(client, event_id, ids["Anne"], session_id)
    client.post(f"/events/{event_id}/certificates")


def test_staff_cancelling_a_checked_in_registration_is_asked_first_then_clears_and_revokes(
    app, client, auth, course
):
    from crm.audit import AuditEntry

    event_id, sessions, ids = course
    auth.login("staff")
    _certify_anne(client, event_id, sessions, ids)
    with app.app_context():
        code = db.session.scalar(db.select(Certificate.code))
    first = client.post(f"/events/registrations/{ids['Anne']}/cancel")
    text = first.get_data(as_text=True)
    assert first.status_code == 200 and "Avmelde påmeldingen?" in text
    assert "registrert til stede på 3 samlinger og har kursbevis" in text
    with app.app_context():  # nothing changed yet
        assert db.session.get(Registration, ids["Anne"]).status == "confirmed"
        assert db.session.scalar(db.select(Certificate.code)) == code
    page = client.post(
        f"/events/registrations/{ids['Anne']}/cancel",
        data={"clear_attendance": "1"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "oppmøtet på 3 samlinger er slettet og kursbeviset trukket tilbake" in page
    with app.app_context():
        assert db.session.get(Registration, ids["Anne"]).status == "cancelled"
        assert db.session.scalars(db.select(Certificate)).all() == []
        event = db.session.get(Registration, ids["Anne"]).event
        assert [n for _s, n in services.attendance_per_session(event)] == [0, 0, 0, 0]
        deleted = db.session.scalars(
            db.select(AuditEntry.record_type).where(AuditEntry.action == "delete")
        ).all()
        assert sorted(deleted) == ["attendance"] * 3 + ["event_certificate"]
        assert _course_row(event)[1:3] == [2, 0]
    assert client.get(f"/sertifikat/{code}").status_code == 404


def test_a_certificate_left_on_a_cancelled_registration_is_counted_nowhere_and_not_issued(
    app, client, auth, course
):
    # As a registration cancelled before the rule came in: marks and certificate kept.
    event_id, sessions, ids = course
    auth.login("staff")
    _certify_anne(client, event_id, sessions, ids)
    with app.app_context():
        anne = db.session.get(Registration, ids["Anne"])
        anne.status = "cancelled"
        db.session.commit()
        certificate = db.session.scalar(db.select(Certificate))
        code, certificate_id = certificate.code, certificate.id
        event = anne.event
        assert [n for _s, n in services.attendance_per_session(event)] == [0, 0, 0, 0]
        assert services.attended_sessions([ids["Anne"]]) == {}
        assert _course_row(event)[1:4] == [2, 0, "0"]
        assert services.participation(contact_id=None, company_id=anne.company_id)[0][1] is None
    pdf = client.get(f"/events/certificates/{certificate_id}.pdf", follow_redirects=True)
    assert pdf.mimetype == "text/html" and "ikke lenger gyldig" in pdf.get_data(as_text=True)
    assert client.get(f"/sertifikat/{code}").status_code == 404
    page = client.get(f"/events/{event_id}").get_data(as_text=True)
    assert f"/events/certificates/{certificate_id}.pdf" not in page


def test_the_person_cannot_cancel_a_seat_they_were_checked_in_at_by_their_link(app, client, auth):
    with app.app_context():
        event = make_event("Styrketrening", capacity=5)
        registration = services.register(event.id, name="Kari", email="kari@example.no")
        db.session.commit()
        registration = registration.registration
        services.toggle_attendance(registration, event.sessions[0], None)
        db.session.commit()
        url = services.manage_url(registration).removeprefix("http://127.0.0.1:5000")
        registration_id = registration.id
    page = client.post(url + "/avmeld", follow_redirects=True).get_data(as_text=True)
    assert "Du er registrert til stede" in page
    with app.app_context():
        assert db.session.get(Registration, registration_id).status == "confirmed"
