"""Bulk "invite to an event" from the contact and company lists: a preview says how many
of the selected people the invitation would reach (the invitation rule: membership of
the event's networks at a member company, or newsletter consent), applying makes one
draft invitation limited to them, through the event invitation mechanism, with one
audit entry per person; refused with nothing changed when it cannot apply."""

from datetime import timedelta

from sqlalchemy import func, select

from crm.audit import AuditEntry
from crm.events.models import Event, EventSession
from crm.extensions import db
from crm.members.models import Network
from crm.newsletters import services as newsletters
from crm.newsletters.models import Newsletter, newsletter_pick
from crm.timeutil import utcnow
from tests.factories import make_company, make_contact, make_subscriber


def _event(days: int = 20, networks=("Logistikk",)) -> int:
    starts = utcnow().replace(microsecond=0) + timedelta(days=days)
    event = Event(
        title="Nettverksmøte Logistikk",
        kind="network_meeting",
        published=True,
        networks=[db.session.scalar(select(Network).filter_by(name=n)) for n in networks],
    )
    event.sessions.append(EventSession(starts_at=starts, ends_at=starts + timedelta(hours=2)))
    db.session.add(event)
    db.session.commit()
    return event.id


def _seed(app) -> dict:
    with app.app_context():
        member = make_company("Medlem AS", membership_status="member")
        people = {
            # In the event's network at a member company: invited on membership.
            "nettverk": make_contact(
                "Nina",
                "Nettverk",
                email="nina@medlem.no",
                company_id=member.id,
                networks=["Logistikk"],
            ).id,
            # Newsletter consent: invited on consent.
            "abonnent": make_subscriber("siri@example.no", first_name="Siri").id,
            # Neither: left out.
            "ingen": make_contact("Ivar", "Ingen", email="ivar@medlem.no", company_id=member.id).id,
            # No address: left out.
            "uten": make_contact("Ulla", "Uten", company_id=member.id, networks=["Logistikk"]).id,
            # Would qualify, but not selected: not invited.
            "annen": make_contact(
                "Anne",
                "Annen",
                email="anne@medlem.no",
                company_id=member.id,
                networks=["Logistikk"],
            ).id,
        }
        people["event"] = _event()
        people["company"] = member.id
        return people


def _invitations() -> list[Newsletter]:
    return db.session.scalars(select(Newsletter).where(Newsletter.kind == "event_invitation")).all()


def _picked(newsletter_id: int) -> set[int]:
    return set(
        db.session.scalars(
            select(newsletter_pick.c.contact_id).where(
                newsletter_pick.c.newsletter_id == newsletter_id
            )
        )
    )


def _audit_entries() -> int:
    return db.session.scalar(
        select(func.count(AuditEntry.id)).where(AuditEntry.record_type == "contact")
    )


def test_preview_counts_who_can_be_invited_and_apply_makes_one_limited_draft(app, client, auth):
    people = _seed(app)
    auth.login("staff")
    selected = [people[k] for k in ("nettverk", "abonnent", "ingen", "uten")]
    form = {"action": "invite", "ids": ",".join(map(str, selected)), "event": people["event"]}
    page = client.post("/contacts/bulk", data={**form, "step": "choose"}).get_data(as_text=True)
    assert "Nettverksmøte Logistikk" in page and 'name="event"' in page
    preview = client.post("/contacts/bulk", data={**form, "step": "preview"}).get_data(as_text=True)
    assert 'data-count="2"' in preview and "2 personer blir invitert" in preview
    with app.app_context():
        assert _invitations() == []  # a preview changes nothing
        before = _audit_entries()

    response = client.post("/contacts/bulk", data={**form, "step": "apply"})
    assert response.status_code == 302
    with app.app_context():
        (invitation,) = _invitations()
        assert response.headers["Location"] == f"/newsletters/{invitation.id}/edit"
        assert invitation.event_id == people["event"] and invitation.state == "draft"
        assert _picked(invitation.id) == {people["nettverk"], people["abonnent"]}
        # The newsletter ledger's rule reaches exactly them, not the network's other member.
        assert newsletters.recipient_count(invitation) == 2
        # One audit entry per invited person (plus the invitation itself, not a contact).
        assert _audit_entries() == before + 2
    edit = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'data-picked="2"' in edit


def test_inviting_companies_invites_their_current_contacts(app, client, auth):
    people = _seed(app)
    auth.login("staff")
    form = {"action": "invite", "ids": str(people["company"]), "event": people["event"]}
    preview = client.post("/companies/bulk", data={**form, "step": "preview"}).get_data(
        as_text=True
    )
    assert 'data-count="2"' in preview  # Nina and Anne: in the network with an address
    client.post("/companies/bulk", data={**form, "step": "apply"})
    with app.app_context():
        (invitation,) = _invitations()
        assert _picked(invitation.id) == {people["nettverk"], people["annen"]}


def test_people_invited_already_are_not_invited_twice(app, client, auth):
    people = _seed(app)
    auth.login("staff")
    form = {"action": "invite", "ids": str(people["nettverk"]), "event": people["event"]}
    client.post("/contacts/bulk", data={**form, "step": "apply"})
    with app.app_context():
        (first,) = _invitations()
        newsletters.start_sending(first)
        db.session.commit()
    response = client.post("/contacts/bulk", data={**form, "step": "apply"})
    assert response.status_code == 200
    assert "Ingenting ble endret" in response.get_data(as_text=True)
    with app.app_context():
        assert len(_invitations()) == 1


def test_refused_with_nothing_changed_without_an_event_or_for_a_past_one(app, client, auth):
    people = _seed(app)
    auth.login("staff")
    with app.app_context():
        past = _event(days=-3)
        before = _audit_entries()
    ids = ",".join(str(people[k]) for k in ("nettverk", "abonnent"))
    for event in ("", past):
        response = client.post(
            "/contacts/bulk", data={"action": "invite", "ids": ids, "event": event, "step": "apply"}
        )
        assert response.status_code == 200
    with app.app_context():
        assert _invitations() == []
        assert _audit_entries() == before
