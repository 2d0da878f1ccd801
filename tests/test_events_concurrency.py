"""Acceptance 1: 40 people register at the same moment for 10 seats, over real HTTP
against the served app (threads), on whichever database the run uses (SQLite by
default, PostgreSQL with CRM_TEST_DB=postgres): exactly 10 confirmed, 30 waitlisted
in the order they got through, no position twice."""

import re
import threading
import urllib.parse
import urllib.request

import pytest

from crm.events.models import Registration
from crm.extensions import db, limiter
from tests.browser import LiveServer
from tests.events_factories import make_event, registration_data

PEOPLE = 40
SEATS = 10
PLACE = re.compile(r"nummer (\d+) på ventelisten")


@pytest.fixture
def server(app, monkeypatch):
    # One address posts 40 times a second here: the per-IP limit is not under test.
    monkeypatch.setattr(limiter, "enabled", False)
    live = LiveServer(app).start()
    yield live
    live.stop()


def _post(url: str, data: dict) -> str:
    body = urllib.parse.urlencode(data).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as response:
        return response.read().decode()


def _register_all_at_once(url: str, forms: list[dict]) -> list[str]:
    start = threading.Barrier(len(forms))
    pages: list[str | BaseException] = [""] * len(forms)

    def register(index: int) -> None:
        start.wait()
        try:
            pages[index] = _post(url, forms[index])
        except BaseException as exc:  # noqa: BLE001 - reported below
            pages[index] = exc

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(forms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [p for p in pages if isinstance(p, BaseException)]
    assert not failures, failures[:3]
    return pages


def test_forty_simultaneous_registrations_for_ten_seats(app, server):
    with app.app_context():
        event_id = make_event(capacity=SEATS).id
    forms = [registration_data(app, f"person{i:02d}@example.no") for i in range(PEOPLE)]
    pages = _register_all_at_once(f"{server.url}/arrangementer/{event_id}", forms)

    confirmed_pages = [p for p in pages if "Du er påmeldt" in p]
    places = sorted(int(m.group(1)) for p in pages for m in PLACE.finditer(p))
    assert len(confirmed_pages) == SEATS
    assert places == list(range(1, PEOPLE - SEATS + 1))  # each place shown once

    with app.app_context():
        rows = db.session.scalars(
            db.select(Registration)
            .where(Registration.event_id == event_id)
            .order_by(Registration.created_at, Registration.id)
        ).all()
        assert len(rows) == PEOPLE
        assert [r.status for r in rows] == ["confirmed"] * SEATS + ["waitlisted"] * (PEOPLE - SEATS)
        # The waitlist is in the order people got through, positions 1..30 without a gap.
        assert [r.waitlist_position for r in rows[SEATS:]] == list(range(1, PEOPLE - SEATS + 1))
        assert [r.id for r in rows] == sorted(r.id for r in rows)
