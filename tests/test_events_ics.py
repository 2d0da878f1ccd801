"""Acceptance 4: the .ics of a two-session course, and the update after a change."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import icalendar

from crm.events import services
from crm.events.models import Event
from crm.extensions import db
from crm.mail.models import EmailMessage
from tests.events_factories import edit_form, make_event

OSLO = ZoneInfo("Europe/Oslo")


def _vevents(message: EmailMessage) -> list:
    (attachment,) = message.attachments
    calendar = icalendar.Calendar.from_ical(attachment.content)
    return list(calendar.walk("VEVENT"))


def _last_email_to(address: str) -> EmailMessage:
    return db.session.scalar(
        db.select(EmailMessage)
        .where(EmailMessage.to_email == address)
        .order_by(EmailMessage.id.desc())
        .limit(1)
    )


def test_a_two_session_course_gives_two_vevents_at_the_right_oslo_times(app_ctx):
    # 08:00 UTC in March is 09:00 in Oslo (CET); in April after the switch 10:00 (CEST).
    event = make_event(
        "LEAN grunnkurs", sessions=2, starts_at=datetime(2027, 3, 23, 8, 0, tzinfo=UTC), hours=6
    )
    event.sessions[1].starts_at = datetime(2027, 4, 6, 8, 0, tzinfo=UTC)
    event.sessions[1].ends_at = datetime(2027, 4, 6, 14, 0, tzinfo=UTC)
    db.session.commit()
    services.register(
        event.id, name="Kari", email="kari@example.no", now=datetime(2027, 3, 1, tzinfo=UTC)
    )
    db.session.commit()
    vevents = _vevents(_last_email_to("kari@example.no"))
    assert len(vevents) == 2
    starts = [v.decoded("dtstart") for v in vevents]
    assert [(s.tzinfo.key, s.hour, s.minute) for s in starts] == [
        ("Europe/Oslo", 9, 0),
        ("Europe/Oslo", 10, 0),
    ]
    assert [v.decoded("dtend").hour for v in vevents] == [15, 16]
    assert all(v["location"] == "Kongsvinger kunnskapspark" for v in vevents)
    assert len({str(v["uid"]) for v in vevents}) == 2


def test_changing_a_date_sends_the_updated_calendar_with_the_same_uids(app, client, auth):
    with app.app_context():
        event = make_event("LEAN", sessions=2, capacity=10)
        services.register(event.id, name="Kari", email="kari@example.no")
        services.register(event.id, name="Ola", email="ola@example.no")
        db.session.commit()
        first = {str(v["uid"]) for v in _vevents(_last_email_to("kari@example.no"))}
        event_id = event.id
        form = edit_form(event, event.capacity)
    auth.login("staff")
    form["sessions-1-start"] = "12:00"
    form["sessions-1-end"] = "16:00"
    response = client.post(f"/events/{event_id}/edit", data=form, follow_redirects=True)
    assert "2 påmeldte har fått ny dato eller nytt sted" in response.get_data(as_text=True)
    with app.app_context():
        message = _last_email_to("kari@example.no")
        assert message.subject.startswith("Endret dato eller sted")
        vevents = _vevents(message)
        assert {str(v["uid"]) for v in vevents} == first
        assert [int(v["sequence"]) for v in vevents] == [1, 1]
        assert vevents[1].decoded("dtstart").astimezone(OSLO).hour == 12
        assert db.session.get(Event, event_id).sequence == 1
    # Saving again without changes tells nobody anything new.
    with app.app_context():
        event = db.session.get(Event, event_id)
        form = edit_form(event, event.capacity)
        count = db.session.scalar(db.select(db.func.count(EmailMessage.id)))
    client.post(f"/events/{event_id}/edit", data=form)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == count


def test_the_public_feed_lists_every_session_of_upcoming_published_events(app, client):
    with app.app_context():
        make_event("Kurs", sessions=3)
        make_event("Utkast", published=False)
    response = client.get("/arrangementer.ics")
    assert response.mimetype == "text/calendar"
    calendar = icalendar.Calendar.from_ical(response.data)
    summaries = [str(v["summary"]) for v in calendar.walk("VEVENT")]
    assert summaries == ["Kurs", "Kurs", "Kurs"]
