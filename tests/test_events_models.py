"""The events tables: what the schema itself guarantees."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from crm.audit import history_for
from crm.events.models import Event, EventSession, Registration
from crm.extensions import db


def _event(**fields) -> Event:
    start = datetime(2027, 3, 4, 8, 0, tzinfo=UTC)
    event = Event(title=fields.pop("title", "LEAN grunnkurs"), **fields)
    event.sessions = [
        EventSession(starts_at=start, ends_at=start + timedelta(hours=6)),
        EventSession(
            starts_at=start + timedelta(days=7), ends_at=start + timedelta(days=7, hours=3)
        ),
    ]
    db.session.add(event)
    db.session.commit()
    return event


def test_an_event_keeps_its_sessions_in_time_order_with_hours(app_ctx):
    event = _event(kind="course", capacity=10)
    assert [s.credited_hours for s in event.sessions] == [6, 3]
    assert event.starts_at == datetime(2027, 3, 4, 8, 0, tzinfo=UTC)
    assert len({s.uid for s in event.sessions}) == 2


def test_changes_to_events_and_registrations_are_in_the_audit_log(app_ctx):
    event = _event()
    registration = Registration(event_id=event.id, name="Kari", email="kari@example.no")
    db.session.add(registration)
    db.session.commit()
    event.venue = "Kongsvinger"
    db.session.commit()
    assert [e.action for e in history_for(event)] == ["update", "create"]
    assert history_for(registration)[0].action == "create"


def test_the_same_address_cannot_register_twice_for_one_event(app_ctx):
    event = _event()
    db.session.add(Registration(event_id=event.id, name="A", email="a@example.no"))
    db.session.commit()
    db.session.add(Registration(event_id=event.id, name="A2", email="a@example.no"))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_two_waitlisted_registrations_cannot_share_a_position(app_ctx):
    event = _event()
    db.session.add(
        Registration(
            event_id=event.id,
            name="A",
            email="a@example.no",
            status="waitlisted",
            waitlist_position=1,
        )
    )
    db.session.commit()
    db.session.add(
        Registration(
            event_id=event.id,
            name="B",
            email="b@example.no",
            status="waitlisted",
            waitlist_position=1,
        )
    )
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
