"""Factories for the events tests: an event with sessions, a registration posted like a person."""

from datetime import UTC, datetime, timedelta

from crm.events.models import Event, EventSession
from crm.extensions import db
from crm.subscriptions.tokens import make_form_token
from crm.timeutil import utcnow


def make_event(
    title: str = "Styrketrening: automasjon",
    *,
    sessions: int = 1,
    starts_at: datetime | None = None,
    hours: int = 3,
    published: bool = True,
    **fields,
) -> Event:
    """A published event `sessions` weeks in a row, the first in ten days unless given."""
    start = starts_at or (utcnow() + timedelta(days=10)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    fields.setdefault("kind", "course" if sessions > 1 else "seminar")
    fields.setdefault("audience", "open")
    fields.setdefault("venue", "Kongsvinger kunnskapspark")
    event = Event(title=title, published=published, **fields)
    event.sessions = [
        EventSession(
            starts_at=start + timedelta(weeks=n), ends_at=start + timedelta(weeks=n, hours=hours)
        )
        for n in range(sessions)
    ]
    if published:
        event.published_at = datetime.now(UTC)
    db.session.add(event)
    db.session.commit()
    db.session.refresh(event)
    return event


def old_form_token(app) -> str:
    """A form token signed long enough ago to pass the bot check."""
    import time
    from unittest import mock

    with app.test_request_context():
        with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - 300):
            return make_form_token()


def registration_data(app, email: str, **fields) -> dict:
    data = {
        "name": fields.pop("name", "Kari Nordmann"),
        "email": email,
        "phone": "912 34 567",
        "company": "",
        "participant_type": "other",
        "note": "",
        "terms": "y",
        "started": old_form_token(app),
        "website": "",
    }
    data.update(fields)
    return data
