"""Factories for the events tests: an event with sessions, a registration posted like a person."""

from datetime import UTC, datetime, timedelta

from crm.events.models import Event, EventSession
from crm.extensions import db
from crm.subscriptions.tokens import make_form_token
from crm.timeutil import OSLO, utcnow


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


def edit_form(event: Event, capacity: int | None) -> dict:
    """The staff event form as the page posts it back, with this capacity."""

    def kroner(ore: int) -> str:
        return f"{ore // 100}" if ore else ""

    data = {
        "title": event.title,
        "kind": event.kind,
        "description": event.description,
        "venue": event.venue,
        "audience": event.audience,
        "capacity": "" if capacity is None else str(capacity),
        "company_quota": "" if event.company_quota is None else str(event.company_quota),
        "cancellation_fee": kroner(event.cancellation_fee_ore),
        "member_price": kroner(event.member_price_ore),
        "price": kroner(event.price_ore),
        "vat_percent": str(event.vat_percent),
        "completion_percent": ""
        if event.completion_percent is None
        else str(event.completion_percent),
    }
    for which in ("registration", "cancellation"):
        value = getattr(event, f"{which}_deadline")
        if value is not None:
            local = value.astimezone(OSLO)
            data[f"{which}_deadline_date"] = local.date().isoformat()
            data[f"{which}_deadline_time"] = local.strftime("%H:%M")
    for n, session in enumerate(event.sessions):
        local = session.starts_at.astimezone(OSLO)
        data[f"sessions-{n}-date"] = local.date().isoformat()
        data[f"sessions-{n}-start"] = local.strftime("%H:%M")
        data[f"sessions-{n}-end"] = session.ends_at.astimezone(OSLO).strftime("%H:%M")
        data[f"sessions-{n}-uid"] = session.uid
        data[f"sessions-{n}-title"] = session.title
    return data
