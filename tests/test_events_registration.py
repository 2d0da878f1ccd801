"""Registering from the public event page: seats, waitlist, duplicates, deadlines, links."""

import re
from datetime import timedelta

from crm.events import services
from crm.events.models import Registration
from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.members.models import Contact
from crm.timeutil import utcnow
from tests.events_factories import make_event, registration_data
from tests.factories import make_company


def _register(client, app, event_id, address, **fields):
    return client.post(f"/arrangementer/{event_id}", data=registration_data(app, address, **fields))


def _registrations(event_id):
    return db.session.scalars(
        db.select(Registration).where(Registration.event_id == event_id).order_by(Registration.id)
    ).all()


def test_a_person_registers_and_gets_a_confirmation_with_a_calendar(app, client):
    with app.app_context():
        event_id = make_event(capacity=5).id
    response = _register(client, app, event_id, "kari@example.no")
    assert response.status_code == 200
    assert "Du er påmeldt" in response.get_data(as_text=True)
    with app.app_context():
        (registration,) = _registrations(event_id)
        assert registration.status == "confirmed"
        contact = db.session.get(Contact, registration.contact_id)
        assert contact.email == "kari@example.no"
        message = db.session.scalar(db.select(EmailMessage))
        assert message.to_email == "kari@example.no"
        assert [a.filename for a in message.attachments] == [f"arrangement-{event_id}.ics"]
        assert "/arrangementer/pamelding/" in message.text_body


def test_registering_twice_gives_one_registration_a_message_and_no_second_email(app, client):
    with app.app_context():
        event_id = make_event(capacity=5).id
    _register(client, app, event_id, "kari@example.no")
    again = _register(client, app, event_id, "Kari@Example.no", name="Kari igjen")
    assert "allerede påmeldt" in again.get_data(as_text=True)
    with app.app_context():
        assert len(_registrations(event_id)) == 1
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 1


def test_past_capacity_people_join_the_waitlist_and_see_their_place(app, client):
    with app.app_context():
        event_id = make_event(capacity=1).id
    _register(client, app, event_id, "first@example.no")
    second = _register(client, app, event_id, "second@example.no")
    third = _register(client, app, event_id, "third@example.no")
    assert "nummer 1 på ventelisten" in second.get_data(as_text=True)
    assert "nummer 2 på ventelisten" in third.get_data(as_text=True)
    with app.app_context():
        statuses = [(r.status, r.waitlist_position) for r in _registrations(event_id)]
        assert statuses == [("confirmed", None), ("waitlisted", 1), ("waitlisted", 2)]
        url = services.manage_url(_registrations(event_id)[2])
    # Their own page says it once ("Venteliste – nummer 2 på ventelisten" repeated it).
    own = client.get(url.removeprefix("http://127.0.0.1:5000")).get_data(as_text=True)
    assert re.search(r"Venteliste\s*– nummer 2 i køen</dd>", own), own


def test_a_company_seat_quota_sends_the_extra_colleague_to_the_waitlist(app, client):
    with app.app_context():
        company = make_company("Kvoten AS", membership_status="member")
        label, orgnr, company_id = f"{company.name} ({company.orgnr})", company.orgnr, company.id
        event_id = make_event(capacity=10, company_quota=1).id
    _register(client, app, event_id, "a@example.no", company=label)
    _register(client, app, event_id, "b@example.no", company=orgnr)
    _register(client, app, event_id, "c@example.no", company="Annen bedrift")
    with app.app_context():
        rows = _registrations(event_id)
        assert [(r.email, r.status) for r in rows] == [
            ("a@example.no", "confirmed"),
            ("b@example.no", "waitlisted"),
            ("c@example.no", "confirmed"),
        ]
        assert rows[0].company_id == rows[1].company_id == company_id
        assert rows[2].company_id is None and rows[2].company_name == "Annen bedrift"


def test_after_the_registration_deadline_the_page_says_so_and_nothing_is_stored(app, client):
    with app.app_context():
        event_id = make_event(registration_deadline=utcnow() - timedelta(hours=1)).id
    page = client.get(f"/arrangementer/{event_id}").get_data(as_text=True)
    assert "Påmeldingsfristen er ute" in page
    response = _register(client, app, event_id, "late@example.no")
    assert "Påmeldingsfristen er ute" in response.get_data(as_text=True)
    with app.app_context():
        assert _registrations(event_id) == []


def test_bots_get_a_friendly_page_and_nothing_is_stored(app, client):
    with app.app_context():
        event_id = make_event().id
    response = _register(client, app, event_id, "bot@example.no", website="http://spam")
    assert response.status_code == 200
    fresh = registration_data(app, "fast@example.no")
    fresh["started"] = ""
    client.post(f"/arrangementer/{event_id}", data=fresh)
    with app.app_context():
        assert _registrations(event_id) == []


def test_drafts_are_not_public(app, client):
    with app.app_context():
        event_id = make_event(published=False).id
    assert client.get(f"/arrangementer/{event_id}").status_code == 404
    assert "Styrketrening" not in client.get("/arrangementer").get_data(as_text=True)


def test_members_only_events_refuse_people_without_a_member_company(app, client):
    with app.app_context():
        event_id = make_event(audience="members").id
    response = _register(client, app, event_id, "guest@example.no", company="Ikke medlem AS")
    assert "bare for medlemsbedrifter" in response.get_data(as_text=True)
    with app.app_context():
        assert _registrations(event_id) == []


def test_the_personal_link_cancels_before_the_deadline_and_refuses_after(app, client):
    with app.app_context():
        event = make_event(capacity=3, cancellation_deadline=utcnow() + timedelta(days=2))
        early = services.register(event.id, name="Tidlig", email="early@example.no").registration
        late_event = make_event(cancellation_deadline=utcnow() - timedelta(hours=1))
        late = services.register(late_event.id, name="Sen", email="late@example.no").registration
        db.session.commit()
        early_url = services.manage_url(early).removeprefix("http://127.0.0.1:5000")
        late_url = services.manage_url(late).removeprefix("http://127.0.0.1:5000")
    assert "Din påmelding" in client.get(early_url).get_data(as_text=True)
    client.post(early_url + "/avmeld")
    refused = client.post(late_url + "/avmeld", follow_redirects=True).get_data(as_text=True)
    assert "Avmeldingsfristen er ute" in refused
    with app.app_context():
        assert db.session.get(Registration, early.id).status == "cancelled"
        assert db.session.get(Registration, late.id).status == "confirmed"


def test_a_seat_can_be_handed_to_a_colleague_of_the_same_company(app, client):
    with app.app_context():
        company = make_company("Overdrag AS", membership_status="member")
        event = make_event(capacity=1)
        company_id, event_id = company.id, event.id
        registration = services.register(
            event.id, name="Ola", email="ola@example.no", company=company
        ).registration
        db.session.commit()
        url = services.manage_url(registration).removeprefix("http://127.0.0.1:5000")
    response = client.post(
        url + "/overdra", data={"name": "Per Kollega", "email": "per@example.no"}
    )
    assert response.status_code == 200
    with app.app_context():
        rows = {r.email: r for r in _registrations(event_id)}
        assert rows["ola@example.no"].status == "cancelled"
        assert rows["per@example.no"].status == "confirmed"
        assert rows["per@example.no"].company_id == company_id
        assert services.seats_held(event_id) == 1
    assert client.get(url).status_code == 200  # the old link still shows the cancelled one


def test_invalid_links_say_so(client):
    assert client.get("/arrangementer/pamelding/not-a-token").status_code == 404


def test_an_invitation_link_fills_in_the_form_and_admits_an_invited_guest(app, client):
    from crm.events.invitations import invitation_token
    from tests.factories import make_contact

    with app.app_context():
        event_id = make_event(audience="members_and_guests").id
        guest = make_contact("Gjest", "Gjestesen", email="gjest@example.no")
        token = invitation_token(event_id, guest.id)
    page = client.get(f"/arrangementer/{event_id}?invitasjon={token}").get_data(as_text=True)
    assert 'value="gjest@example.no"' in page and 'value="Gjest Gjestesen"' in page
    uninvited = _register(client, app, event_id, "nobody@example.no")
    assert "inviterte gjester" in uninvited.get_data(as_text=True)
    invited = _register(client, app, event_id, "gjest@example.no", invitasjon=token)
    assert "Du er påmeldt" in invited.get_data(as_text=True)
    with app.app_context():
        assert [r.email for r in _registrations(event_id)] == ["gjest@example.no"]


def test_a_replayed_form_registers_nobody_twice_and_says_so(app, client):
    with app.app_context():
        event_id = make_event(capacity=5).id
    form = registration_data(app, "kari@example.no")
    first = client.post(f"/arrangementer/{event_id}", data=form)
    assert "Du er påmeldt" in first.get_data(as_text=True)
    # A double submit: the same form again.
    again = client.post(f"/arrangementer/{event_id}", data=form)
    assert again.status_code == 200
    assert "allerede påmeldt" in again.get_data(as_text=True)
    # The same form token with other people's addresses (a replay, or Back and resend).
    for address in ("ola@example.no", "per@example.no"):
        other = client.post(
            f"/arrangementer/{event_id}", data={**form, "email": address, "name": "Ola"}
        )
        assert other.status_code == 200
        page = other.get_data(as_text=True)
        assert "Dette skjemaet er allerede sendt" in page
        assert 'value="' + form["started"] + '"' not in page  # a fresh form to send
    with app.app_context():
        assert [r.email for r in _registrations(event_id)] == ["kari@example.no"]
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 1


def test_a_replayed_form_does_not_register_again_after_a_cancellation(app, client):
    with app.app_context():
        event_id = make_event(capacity=5).id
    form = registration_data(app, "kari@example.no")
    client.post(f"/arrangementer/{event_id}", data=form)
    with app.app_context():
        (registration,) = _registrations(event_id)
        services.cancel(registration)
        db.session.commit()
    again = client.post(f"/arrangementer/{event_id}", data=form)
    assert "Dette skjemaet er allerede sendt" in again.get_data(as_text=True)
    with app.app_context():
        assert [r.status for r in _registrations(event_id)] == ["cancelled"]
    # A new form (the event page shown again) registers her anew.
    fresh = _register(client, app, event_id, "kari@example.no")
    assert "Du er påmeldt" in fresh.get_data(as_text=True)


def test_the_same_form_sent_to_two_events_at_once_says_so_for_the_second(app, client, monkeypatch):
    """Two requests with one form token at the same moment, for two events (so under two
    event locks): both pass the check, the second's row meets the token's unique index.
    That answer is the replayed form's message and a fresh form, not an error page."""
    from sqlalchemy.exc import IntegrityError

    with app.app_context():
        event_id = make_event(capacity=5).id
    form = registration_data(app, "kari@example.no")

    def lost_the_race(*args, **kwargs):
        raise IntegrityError(
            "INSERT INTO registration …",
            {},
            Exception(
                'duplicate key value violates unique constraint "ix_registration_form_token"'
            ),
        )

    monkeypatch.setattr(services, "register", lost_the_race)
    response = client.post(f"/arrangementer/{event_id}", data=form)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Dette skjemaet er allerede sendt" in page
    assert 'value="' + form["started"] + '"' not in page  # a fresh form to send
    with app.app_context():
        assert _registrations(event_id) == []
