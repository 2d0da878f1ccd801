"""iCalendar (RFC 5545) for events: one VEVENT per session.

Each session's UID is stored (`EventSession.uid`), so when a session moves the
calendar entry people already have is updated rather than duplicated; `SEQUENCE`
(the event's `sequence`) tells calendars which version is newer. Times are written
as Europe/Oslo with the zone's VTIMEZONE.
"""

from collections.abc import Iterable

from flask import current_app

from crm.events.models import Event, EventSession
from crm.text import CONTROL
from crm.timeutil import OSLO, utcnow

UID_DOMAIN = "klynge-events"


def _text(value: str) -> str:
    # RFC 5545 allows no control character in TEXT but the tab (icalendar escapes line
    # breaks, and passes the rest as they are: text pasted from Word brings U+000B, and
    # one such byte can make a calendar refuse the whole feed).
    return CONTROL.sub(" ", value)


def session_uid(session: EventSession) -> str:
    return f"{session.uid}@{UID_DOMAIN}"


def _plain_description(event: Event, url: str) -> str:
    text = (event.description or "").strip()
    if len(text) > 2000:
        text = text[:2000] + " …"
    return _text(f"{text}\n\n{url}".strip())


def _vevent(event: Event, session: EventSession, url: str, stamp, status: str):
    from icalendar import Event as VEvent  # imported late: only calendar code needs it

    vevent = VEvent()
    vevent.add("uid", session_uid(session))
    vevent.add("dtstamp", stamp)
    vevent.add("dtstart", session.starts_at.astimezone(OSLO))
    vevent.add("dtend", session.ends_at.astimezone(OSLO))
    summary = event.title if not session.title else f"{event.title}: {session.title}"
    vevent.add("summary", _text(summary))
    if event.venue:
        vevent.add("location", _text(event.venue))
    vevent.add("description", _plain_description(event, url))
    vevent.add("url", url)
    vevent.add("sequence", event.sequence)
    vevent.add("status", status)
    return vevent


def event_url(event: Event) -> str:
    return f"{current_app.config['PUBLIC_BASE_URL']}/arrangementer/{event.id}"


def calendar_bytes(events: Iterable[Event], *, cancelled: bool = False, name: str = "") -> bytes:
    """A VCALENDAR with a VEVENT for every session of `events`."""
    from icalendar import Calendar

    calendar = Calendar()
    calendar.add("prodid", "-//Klynge//Events//NB")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "PUBLISH")
    if name:
        calendar.add("x-wr-calname", name)
    stamp = utcnow().replace(microsecond=0)
    status = "CANCELLED" if cancelled else "CONFIRMED"
    for event in events:
        url = event_url(event)
        for session in event.sessions:
            calendar.add_component(_vevent(event, session, url, stamp, status))
    calendar.add_missing_timezones()
    return calendar.to_ical()


def event_attachment(event: Event, *, cancelled: bool = False) -> tuple[str, str, bytes]:
    """(filename, content type, bytes) for an email attachment."""
    # A bare type: the mail backends split it at "/" into maintype and subtype.
    return (
        f"arrangement-{event.id}.ics",
        "text/calendar",
        calendar_bytes([event], cancelled=cancelled),
    )
