"""Acceptance 2: a freed seat is offered to the first on the waitlist; unanswered offers
expire after EVENT_OFFER_HOURS and pass on; accepting an expired offer is refused."""

from datetime import timedelta

import pytest

from crm.events import services, tasks
from crm.events.models import Event, Registration
from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.timeutil import OSLO, utcnow
from tests.events_factories import make_event


def _status(registration_id):
    db.session.expire_all()
    registration = db.session.get(Registration, registration_id)
    return registration.status


def _emails_to(address):
    return [
        m.subject
        for m in db.session.scalars(
            db.select(EmailMessage)
            .where(EmailMessage.to_email == address)
            .order_by(EmailMessage.id)
        )
    ]


@pytest.fixture
def full_event(app_ctx):
    """One seat taken by Anne; Bjørn, Cecilie and Dag wait in that order."""
    event = make_event(capacity=1)
    people = {}
    for name in ("anne", "bjorn", "cecilie", "dag"):
        result = services.register(event.id, name=name.title(), email=f"{name}@example.no")
        people[name] = result.registration.id
    db.session.commit()
    return event, people


def _later(monkeypatch, hours: float):
    moment = utcnow() + timedelta(hours=hours)
    monkeypatch.setattr("crm.events.services.utcnow", lambda: moment)
    return moment


def test_a_freed_seat_is_offered_to_the_first_on_the_waitlist(full_event, client):
    event, people = full_event
    assert _status(people["bjorn"]) == "waitlisted"
    anne = db.session.get(Registration, people["anne"])
    client.post(services.manage_url(anne).removeprefix("http://127.0.0.1:5000") + "/avmeld")
    assert _status(people["anne"]) == "cancelled"
    assert _status(people["bjorn"]) == "offered"
    assert _status(people["cecilie"]) == "waitlisted"
    bjorn = db.session.get(Registration, people["bjorn"])
    hours = (bjorn.offer_expires_at - bjorn.offered_at).total_seconds() / 3600
    assert hours == pytest.approx(48)
    assert _emails_to("bjorn@example.no")[-1].startswith("En plass er ledig for deg")
    # An open offer holds the seat: nobody new gets it.
    late = services.register(event.id, name="Eva", email="eva@example.no").registration
    assert late.status == "waitlisted"


def test_an_unanswered_offer_expires_after_the_offer_hours_and_passes_on(
    full_event, app, monkeypatch
):
    event, people = full_event
    monkeypatch.setitem(app.config, "EVENT_OFFER_HOURS", 6)
    services.cancel(db.session.get(Registration, people["anne"]))
    db.session.commit()
    _later(monkeypatch, 5)
    assert tasks.expire_offers_job() == 0
    assert _status(people["bjorn"]) == "offered"
    _later(monkeypatch, 6.1)
    assert tasks.expire_offers_job() == 1
    assert _status(people["bjorn"]) == "cancelled"
    assert _status(people["cecilie"]) == "offered"
    assert _emails_to("bjorn@example.no")[-1].startswith("Tilbudet om plass er utløpt")
    assert services.seats_held(event.id) == 1


def test_accepting_an_expired_offer_is_refused_and_the_seat_passes_on(
    full_event, app, client, monkeypatch
):
    event, people = full_event
    services.cancel(db.session.get(Registration, people["anne"]))
    db.session.commit()
    bjorn = db.session.get(Registration, people["bjorn"])
    url = services.manage_url(bjorn).removeprefix("http://127.0.0.1:5000")
    _later(monkeypatch, 48.5)  # the expiry job has not run yet
    page = client.post(url + "/ta-imot", follow_redirects=True).get_data(as_text=True)
    assert "Tilbudet er utløpt" in page
    assert _status(people["bjorn"]) == "cancelled"
    assert _status(people["cecilie"]) == "offered"


def test_accepting_an_offer_in_time_confirms_the_seat(full_event, client):
    event, people = full_event
    services.cancel(db.session.get(Registration, people["anne"]))
    db.session.commit()
    bjorn = db.session.get(Registration, people["bjorn"])
    url = services.manage_url(bjorn).removeprefix("http://127.0.0.1:5000")
    page = client.post(url + "/ta-imot", follow_redirects=True).get_data(as_text=True)
    assert "Plassen er din" in page
    assert _status(people["bjorn"]) == "confirmed"
    assert services.seats_held(event.id) == 1
    assert _emails_to("bjorn@example.no")[-1].startswith("Påmeldt")


def test_the_worker_hook_queues_the_expiry_only_when_an_offer_is_due(full_event, app):
    from crm.queue import get_queue

    event, people = full_event
    tasks.expire_offers_tick(app)
    assert get_queue("default").count == 0
    services.cancel(db.session.get(Registration, people["anne"]))
    db.session.commit()
    registration = db.session.get(Registration, people["bjorn"])
    registration.offer_expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    before = get_queue("default").count
    tasks.expire_offers_tick(app)
    tasks.expire_offers_tick(app)  # at most once a minute
    assert get_queue("default").count == before + 1


def test_raising_the_capacity_offers_the_new_seats_to_the_waitlist_in_order(
    full_event, app, client, auth
):
    event, people = full_event
    session = event.sessions[0]
    start, end = session.starts_at.astimezone(OSLO), session.ends_at.astimezone(OSLO)
    form = {
        "title": event.title,
        "kind": event.kind,
        "audience": event.audience,
        "venue": event.venue,
        "capacity": "3",
        "vat_percent": "25",
        "sessions-0-date": start.date().isoformat(),
        "sessions-0-start": start.strftime("%H:%M"),
        "sessions-0-end": end.strftime("%H:%M"),
        "sessions-0-uid": session.uid,
    }
    db.session.commit()
    auth.login("staff")
    assert client.post(f"/events/{event.id}/edit", data=form).status_code == 302
    assert _status(people["bjorn"]) == "offered"
    assert _status(people["cecilie"]) == "offered"
    assert _status(people["dag"]) == "waitlisted"
    # A newcomer no longer gets a seat ahead of the people waiting.
    late = services.register(event.id, name="Eva", email="eva@example.no").registration
    assert late.status == "waitlisted"


def test_an_offer_can_be_declined_by_its_link_after_the_cancellation_deadline(full_event, client):
    # The deadline binds a confirmed seat; an offer can be declined while it stands,
    # and the seat goes on to the next on the waitlist.
    event, people = full_event
    event.cancellation_deadline = utcnow() - timedelta(hours=1)
    db.session.commit()
    services.cancel(db.session.get(Registration, people["anne"]), by_staff=True)
    db.session.commit()
    bjorn = db.session.get(Registration, people["bjorn"])
    url = services.manage_url(bjorn).removeprefix("http://127.0.0.1:5000")
    manage = client.get(url).get_data(as_text=True)
    assert "Nei takk, gi plassen til neste" in manage
    assert "Avmeldingsfristen er ute" not in manage
    page = client.post(url + "/avmeld", follow_redirects=True).get_data(as_text=True)
    assert "Du takket nei til plassen" in page
    assert _status(people["bjorn"]) == "cancelled"
    assert _status(people["cecilie"]) == "offered"
    # Cecilie takes it; once confirmed, the deadline binds her seat.
    cecilie = db.session.get(Registration, people["cecilie"])
    url = services.manage_url(cecilie).removeprefix("http://127.0.0.1:5000")
    client.post(url + "/ta-imot")
    page = client.post(url + "/avmeld", follow_redirects=True).get_data(as_text=True)
    assert "Avmeldingsfristen er ute" in page
    assert _status(people["cecilie"]) == "confirmed"


def test_lowering_the_capacity_below_the_seats_held_warns_and_offers_nothing_until_below(
    full_event, app, client, auth
):
    from tests.events_factories import edit_form

    event, people = full_event
    for name in ("bjorn", "cecilie", "dag"):  # everyone gets a seat
        services.register(event.id, name=name.title(), email=f"{name}@example.no")
    event.capacity = 4
    services.fill_freed_seats(event)
    for name in ("bjorn", "cecilie", "dag"):
        services.accept_offer(db.session.get(Registration, people[name]))
    for name in ("eva", "finn"):
        services.register(event.id, name=name.title(), email=f"{name}@example.no")
    db.session.commit()
    waiting = {
        r.email: r.id
        for r in db.session.scalars(
            db.select(Registration).where(Registration.status == "waitlisted")
        )
    }
    auth.login("staff")
    page = client.post(
        f"/events/{event.id}/edit", data=edit_form(event, 2), follow_redirects=True
    ).get_data(as_text=True)
    warning = "4 har plass (bekreftet eller tilbudt), og kapasiteten er 2. Ingen fjernes"
    assert warning in page
    assert services.seats_held(event.id) == 4  # nobody bumped
    assert warning in client.get(f"/events/{event.id}").get_data(as_text=True)
    # A freed seat while over capacity is offered to nobody.
    services.cancel(db.session.get(Registration, people["anne"]), by_staff=True)
    services.cancel(db.session.get(Registration, people["bjorn"]), by_staff=True)
    db.session.commit()
    assert _status(waiting["eva@example.no"]) == "waitlisted"
    assert "Ingen fjernes" not in client.get(f"/events/{event.id}").get_data(as_text=True)
    # Raising it again offers the new seats to the waitlist, in order.
    event = db.session.get(Event, event.id)
    client.post(f"/events/{event.id}/edit", data=edit_form(event, 3))
    assert _status(waiting["eva@example.no"]) == "offered"
    assert _status(waiting["finn@example.no"]) == "waitlisted"
