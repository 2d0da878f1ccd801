"""Invitations to an event go through the newsletter ledger: who is invited and why,
each invitee's own links, their answers, one reminder, and mail to registrants."""

import email
import email.policy
import urllib.parse
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.events import invitations
from crm.events.models import Event, EventSession, InvitationAnswer, Registration
from crm.extensions import db
from crm.members.models import Contact, Network
from crm.newsletters import sending, services
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.subscriptions import links, network_mail
from crm.timeutil import OSLO, utcnow
from tests.factories import make_company, make_contact, make_subscriber, make_user


def make_event(title: str = "Nettverksmøte Logistikk", networks=("Logistikk",), days: int = 20):
    starts = utcnow().replace(microsecond=0) + timedelta(days=days)
    event = Event(
        title=title,
        kind="network_meeting",
        venue="Kongsvinger kulturhus",
        description="Vi snakker om **grønn logistikk**.",
        audience="members_and_guests",
        published=True,
        networks=[db.session.scalar(db.select(Network).filter_by(name=n)) for n in networks],
    )
    event.sessions.append(EventSession(starts_at=starts, ends_at=starts + timedelta(hours=2)))
    db.session.add(event)
    db.session.commit()
    return event


def contact(email_address: str) -> Contact:
    return db.session.scalar(db.select(Contact).filter_by(email=email_address))


def start(newsletter_id: int) -> int:
    total = services.start_sending(db.session.get(Newsletter, newsletter_id))
    db.session.commit()
    return total


def send_all(newsletter_id: int) -> None:
    db.session.expire_all()
    for batch in db.session.scalars(
        db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter_id)
    ).all():
        sending.run_batch(batch.id, reschedule=lambda *a: None)


def ledger(newsletter_id: int) -> dict[str, NewsletterRecipient]:
    db.session.expire_all()
    rows = db.session.scalars(
        db.select(NewsletterRecipient).where(NewsletterRecipient.newsletter_id == newsletter_id)
    ).all()
    return {db.session.get(Contact, r.contact_id).email: r for r in rows}


def read_outbox(outbox) -> dict[str, email.message.EmailMessage]:
    messages = {}
    for path in outbox.glob("*.eml"):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        messages[parsed["To"].addresses[0].addr_spec] = parsed
        path.unlink()
    return messages


def register(event: Event, person: Contact, status: str = "confirmed") -> Registration:
    registration = Registration(
        event_id=event.id,
        contact_id=person.id,
        name=f"{person.first_name} {person.last_name}",
        email=person.email,
        status=status,
    )
    db.session.add(registration)
    db.session.commit()
    return registration


@pytest.fixture
def people(app_ctx):
    """Logistikk: three contacts of a member company, one at a prospect; a subscriber."""
    logistikk = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
    member = make_company("Glåmdal Transport AS", membership_status="member")
    prospect = make_company("Kanskje AS", membership_status="prospect")
    for name in ("anne", "bjorn", "cecilie"):
        make_contact(
            name.title(),
            "Hansen",
            email=f"{name}@example.no",
            company_id=member.id,
            networks=[logistikk],
        )
    make_contact(
        "Per", "Prospekt", email="per@example.no", company_id=prospect.id, networks=[logistikk]
    )
    make_subscriber("abonnent@example.no")
    return logistikk


def test_an_invitation_reaches_the_networks_member_contacts_with_their_own_links(
    app, app_ctx, client, outbox, people
):
    event = make_event()
    invitation = invitations.new_invitation(event, make_user())
    db.session.commit()
    assert invitation.kind == "event_invitation" and invitation.network_ids == [people.id]
    assert start(invitation.id) == 3
    rows = ledger(invitation.id)
    assert set(rows) == {"anne@example.no", "bjorn@example.no", "cecilie@example.no"}
    assert {(r.basis, r.basis_network_id) for r in rows.values()} == {("membership", people.id)}
    assert {p.status for p in invitations.invitees(event)} == {"invited"}

    send_all(invitation.id)
    messages = read_outbox(outbox)
    assert set(messages) == set(rows)
    anne = messages["anne@example.no"]
    text = anne.get_body(preferencelist=("plain",)).get_content()
    html = anne.get_body(preferencelist=("html",)).get_content()
    assert "Nettverksmøte Logistikk" in text and "Kongsvinger kulturhus" in text
    register_link = next(w for w in text.split() if f"/arrangementer/{event.id}?invitasjon=" in w)
    decline_link = next(w for w in text.split() if f"/arrangementer/{event.id}/kan-ikke/" in w)
    assert register_link.replace("&", "&amp;") in html or register_link in html
    assert "%register_url%" not in html and "%decline_url%" not in text
    # The registration link fills in the form for Anne.
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(register_link).query)["invitasjon"][0]
    filled = invitations.prefill(event, token)
    assert (filled.name, filled.email, filled.company) == (
        "Anne Hansen",
        "anne@example.no",
        "Glåmdal Transport AS",
    )
    assert invitations.prefill(make_event("Et annet møte"), token) is None  # not for another
    # One-click objection to the network's mail, as in all network mail.
    assert anne["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    holder = links.link_holder(str(anne["List-Unsubscribe"]).strip("<> ").rsplit("/", 1)[1])
    assert holder.network.id == people.id

    # Bjørn can't come: the link's page, then one click.
    bjorn = messages["bjorn@example.no"].get_body(preferencelist=("plain",)).get_content()
    bjorn_decline = next(w for w in bjorn.split() if "/kan-ikke/" in w)
    path = urllib.parse.urlsplit(bjorn_decline).path
    page = client.get(path)
    assert page.status_code == 200 and "Nettverksmøte Logistikk" in page.get_data(as_text=True)
    assert client.post(path, environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 200
    assert client.post(path).status_code == 200  # twice is once
    answers = db.session.scalars(db.select(InvitationAnswer)).all()
    assert [(a.contact_id, a.answer, a.ip) for a in answers] == [
        (contact("bjorn@example.no").id, "declined", "192.0.2.9")
    ]
    assert decline_link != bjorn_decline

    # Cecilie registers.
    register(event, contact("cecilie@example.no"))
    statuses = {p.email: p.status for p in invitations.invitees(event)}
    assert statuses == {
        "anne@example.no": "no_answer",
        "bjorn@example.no": "declined",
        "cecilie@example.no": "registered",
    }
    assert invitations.status_counts(invitations.invitees(event)) == {
        "invited": 0,
        "no_answer": 1,
        "registered": 1,
        "declined": 1,
    }


def test_one_reminder_goes_to_those_who_have_not_answered(app_ctx, outbox, people):
    event = make_event()
    invitation = invitations.new_invitation(event)
    db.session.commit()
    start(invitation.id)
    send_all(invitation.id)
    invitations.decline(event, contact("bjorn@example.no"))
    register(event, contact("cecilie@example.no"))
    reminder = invitations.new_reminder(db.session.get(Newsletter, invitation.id))
    db.session.commit()
    assert reminder.kind == "event_invitation_reminder" and reminder.parent_id == invitation.id
    assert start(reminder.id) == 1
    assert set(ledger(reminder.id)) == {"anne@example.no"}
    with pytest.raises(invitations.InvitationError):
        invitations.new_reminder(db.session.get(Newsletter, invitation.id))


def test_a_second_invitation_leaves_out_those_already_invited_or_answering(app_ctx, people):
    event = make_event()
    first = invitations.new_invitation(event)
    db.session.commit()
    start(first.id)
    make_contact(
        "Dag",
        "Ny",
        email="dag@example.no",
        company_id=contact("anne@example.no").company_id,
        networks=[people],
    )
    second = invitations.new_invitation(event, topics=("generelt",))
    db.session.commit()
    assert start(second.id) == 2
    assert set(ledger(second.id)) == {"dag@example.no", "abonnent@example.no"}
    assert ledger(second.id)["abonnent@example.no"].basis == "consent"


def test_an_objection_stops_the_next_invitation(app, app_ctx, client, outbox, people):
    event = make_event()
    invitation = invitations.new_invitation(event)
    db.session.commit()
    start(invitation.id)
    send_all(invitation.id)
    anne = read_outbox(outbox)["anne@example.no"]
    link = str(anne["List-Unsubscribe"]).strip("<> ")
    assert (
        client.post(
            urllib.parse.urlsplit(link).path,
            data={"List-Unsubscribe": "One-Click"},
            environ_base={"REMOTE_ADDR": "192.0.2.4"},
        ).status_code
        == 200
    )
    assert network_mail.objected_network_ids(contact("anne@example.no")) == {people.id}
    following = invitations.new_invitation(make_event("Neste møte"))
    db.session.commit()
    assert start(following.id) == 2
    assert "anne@example.no" not in ledger(following.id)


def test_registrants_get_the_reminder_days_before_and_messages(app, app_ctx, people):
    event = make_event(days=10)
    early = invitations.schedule_registrant_reminder(event, 5)  # nobody registered yet
    db.session.commit()
    assert early.state == "scheduled"
    register(event, contact("anne@example.no"))
    register(event, contact("bjorn@example.no"), status="waitlisted")
    register(event, contact("per@example.no"), status="cancelled")
    reminder = invitations.schedule_registrant_reminder(event, 3, make_user())
    db.session.commit()
    assert reminder.state == "scheduled"
    local = reminder.scheduled_at.astimezone(OSLO)
    assert (local.hour, local.minute) == (9, 0)
    assert local.date() == event.starts_at.astimezone(OSLO).date() - timedelta(days=3)
    db.session.get(Newsletter, reminder.id).state = "draft"  # as the scheduler's job would start it
    assert start(reminder.id) == 1
    rows = ledger(reminder.id)
    assert set(rows) == {"anne@example.no"}
    assert rows["anne@example.no"].basis == "registration"

    message = invitations.new_message(event)
    db.session.commit()
    assert start(message.id) == 2
    assert set(ledger(message.id)) == {"anne@example.no", "bjorn@example.no"}

    with pytest.raises(invitations.InvitationError):
        invitations.schedule_registrant_reminder(event, 30)  # that day has passed
    with pytest.raises(invitations.InvitationError):
        invitations.schedule_registrant_reminder(event, 0)


def test_the_staff_page_shows_answers_and_makes_drafts(app, client, auth, people):
    auth.login("staff")
    with app.app_context():
        event = make_event()
        invitation = invitations.new_invitation(event)
        db.session.commit()
        start(invitation.id)
        register(event, contact("anne@example.no"))
        event_id, invitation_id = event.id, invitation.id
    page = client.get(f"/events/{event_id}/invitations")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "anne@example.no" in html and "Påmeldt" in html
    assert client.get(f"/events/{event_id}/invitations?status=registered&page=9").status_code == 200

    made = client.post(f"/events/{event_id}/invitations/new")
    assert made.status_code == 302 and "/newsletters/" in made.headers["Location"]
    edit = client.get(made.headers["Location"])
    assert edit.status_code == 200 and "Invitasjon til et arrangement" in edit.get_data(
        as_text=True
    )
    # Editing the invitation's text keeps it an invitation to this event.
    new_id = int(made.headers["Location"].split("/")[2])
    saved = client.post(
        made.headers["Location"],
        data={
            "subject": "Velkommen!",
            "body": "Kom!",
            "kind": "event_invitation",
            "networks": str(people.id),
        },
    )
    assert saved.status_code == 302
    with app.app_context():
        edited = db.session.get(Newsletter, new_id)
        assert (edited.subject, edited.kind, edited.event_id) == (
            "Velkommen!",
            "event_invitation",
            event_id,
        )

    assert (
        client.post(f"/events/{event_id}/invitations/{invitation_id}/reminder").status_code == 302
    )
    assert client.post(f"/events/{event_id}/registrants/message").status_code == 302
    scheduled = client.post(f"/events/{event_id}/registrants/reminder", data={"days": "2"})
    assert scheduled.status_code == 302
    refused = client.post(
        f"/events/{event_id}/registrants/reminder", data={"days": "zwei"}, follow_redirects=True
    )
    assert refused.status_code == 200
    assert client.get("/events/999999/invitations").status_code == 404
    assert client.post(f"/events/{event_id}/invitations/999999/reminder").status_code == 404


@pytest.mark.parametrize(
    "token",
    ["x", "a" * 500, "..", "%00", "eyJ.abc", "WzEsMl0.forged", "ÆØÅ", "1'; DROP TABLE x;--"],
)
def test_a_broken_decline_link_says_so_and_changes_nothing(app, client, token):
    with app.app_context():
        event_id = make_event().id
    for method in ("get", "post"):
        answer = getattr(client, method)(
            f"/arrangementer/{event_id}/kan-ikke/{urllib.parse.quote(token, safe='')}"
        )
        assert answer.status_code == 404
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(InvitationAnswer)) == 0


def test_a_registered_person_cannot_decline_through_the_invitation(app, client, people):
    with app.app_context():
        event = make_event()
        register(event, contact("anne@example.no"))
        token = invitations.invitation_token(event.id, contact("anne@example.no").id)
        event_id = event.id
    answer = client.post(f"/arrangementer/{event_id}/kan-ikke/{token}")
    assert answer.status_code == 200
    assert "påmeldt" in answer.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(InvitationAnswer)) == 0


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_garbage_to_the_invitation_pages_never_causes_a_500(app, client, auth, data):
    """Staff forms and the public link get anything a browser or script can send."""
    from urllib.parse import quote

    from tests.test_garbage_input import garbage_text

    with app.app_context():
        if not db.session.scalar(db.select(Event.id).limit(1)):
            auth.login("staff")
            make_event()
        event = db.session.scalar(db.select(Event))
        person = contact("garbage@example.no") or make_contact(email="garbage@example.no")
        token = invitations.invitation_token(event.id, person.id)
        event_id = event.id
    value = data.draw(garbage_text)
    for method, url, form in [
        ("GET", f"/events/{event_id}/invitations", {}),
        ("POST", f"/events/{event_id}/registrants/reminder", {"days": value}),
        ("POST", f"/events/{event_id}/registrants/message", {"x": value}),
        ("POST", f"/events/{event_id}/invitations/new", {"networks": value}),
        ("GET", f"/arrangementer/{event_id}/kan-ikke/{token}", {}),
        ("POST", f"/arrangementer/{event_id}/kan-ikke/{token}", {"x": value}),
        ("POST", f"/arrangementer/{event_id}/kan-ikke/{token[:-3]}{quote(value[:3], safe='')}", {}),
    ]:
        response = client.open(
            url,
            method=method,
            data=form,
            query_string={"status": value, "page": data.draw(garbage_text)},
        )
        assert response.status_code < 500, (method, url, response.status_code)


@pytest.mark.browser
def test_staff_invite_from_the_event_and_see_the_answers(app, page, live_server, artifacts_dir):
    from playwright.sync_api import expect

    from tests.browser import login
    from tests.factories import PASSWORD, bulk_network_members

    with app.app_context():
        logistikk = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
        member = make_company("Glåmdal Transport AS", membership_status="member")
        ids = bulk_network_members(12, logistikk, company=member, prefix="gt")
        event = make_event()
        make_user("staff", email="arrangor@example.no")
        event_id = event.id
    login(page, live_server, "arrangor@example.no", PASSWORD)
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}/events/{event_id}/invitations")
    page.click("button:has-text('Inviter')")
    # The newsletter's own page: text, audience picker with counts per basis, preview.
    expect(page.locator("[data-recipient-count]")).to_have_text("12")
    expect(page.locator("[data-basis-counts]")).to_contain_text("Medlemskap i Logistikk: 12")
    page.screenshot(path=str(artifacts_dir / "invitation-compose.png"), full_page=True)
    page.click("button:has-text('Lagre utkast')")
    with app.app_context():
        invitation = db.session.scalar(db.select(Newsletter).where(Newsletter.event_id == event_id))
        start(invitation.id)
        send_all(invitation.id)
        register(db.session.get(Event, event_id), db.session.get(Contact, ids[0]))
        invitations.decline(db.session.get(Event, event_id), db.session.get(Contact, ids[1]))
        db.session.commit()
        token = invitations.invitation_token(event_id, ids[2])
    page.goto(f"{live_server.url}/events/{event_id}/invitations")
    expect(page.locator(".answer-counts")).to_contain_text("Påmeldt")
    page.screenshot(path=str(artifacts_dir / "invitations-staff.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/arrangementer/{event_id}/kan-ikke/{token}")
    page.screenshot(path=str(artifacts_dir / "invitation-decline.png"), full_page=True)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Takk for at du sa fra")
    page.screenshot(path=str(artifacts_dir / "invitation-declined.png"), full_page=True)
