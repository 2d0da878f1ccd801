"""Issue 11, acceptance 3: a network of 2,000 member contacts is invited through two
real worker processes; one is SIGKILLed while SendGrid holds its request; every invitee
gets exactly one invitation with their own links. An objection made through one
invitation's unsubscribe link is in the consent ledger with its evidence and stops the
next invitation to that person.

The workers, the SendGrid test server and the webhook feed are those of the newsletter's
delivery tests (tests/test_newsletters_delivery.py): an invitation is a newsletter."""

import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from crm.events import invitations
from crm.events.models import Event, EventSession
from crm.extensions import db
from crm.members.models import Network
from crm.newsletters import services
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions.models import ConsentEvent
from crm.subscriptions.tokens import read_link_token
from crm.timeutil import utcnow
from tests.factories import bulk_network_members
from tests.test_newsletters_delivery import (  # noqa: F401  (workers is a fixture)
    EventFeed,
    _in_flight,
    batch_of,
    start,
    wait_for,
    wait_until_finished,
    workers,
)

pytest_plugins = ["tests.sendgrid_server"]

INVITEES = 2000


def make_event(title: str, network_id: int) -> int:
    network = db.session.get(Network, network_id)
    starts = utcnow().replace(microsecond=0) + timedelta_days(14)
    event = Event(title=title, kind="network_meeting", venue="Kongsvinger", published=True)
    event.networks.append(network)
    event.sessions.append(EventSession(starts_at=starts, ends_at=starts + timedelta_days(0.1)))
    db.session.add(event)
    db.session.commit()
    return event.id


def timedelta_days(days: float):
    from datetime import timedelta

    return timedelta(days=days)


def invite(app, event_id: int) -> int:
    with app.test_request_context():
        invitation = invitations.new_invitation(db.session.get(Event, event_id))
        db.session.commit()
        return invitation.id


@pytest.mark.slow
def test_2000_invitees_two_workers_one_killed_each_invited_exactly_once_and_objection_holds(
    app,
    app_ctx,
    client,
    sendgrid_server,
    workers,  # noqa: F811
    monkeypatch,
):
    logistikk = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
    network_id = logistikk.id
    bulk_network_members(INVITEES, logistikk)
    event_id = make_event("Nettverksmøte Logistikk", logistikk.id)
    invitation_id = invite(app, event_id)

    # Eight batches for two workers: the kill lands in the middle of the send.
    monkeypatch.setitem(app.config, "NEWSLETTER_BATCH_SIZE", 250)
    assert start(app, invitation_id) == INVITEES
    sendgrid_server.delay_next(1, seconds=2)
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        wait_for(lambda: sendgrid_server.holding)
        held_batch = batch_of(sendgrid_server.holding[0].body)
        with app.app_context():
            wait_for(lambda: _in_flight(held_batch) is not None)
            victim, _job = workers.running_batch(invitation_id, held_batch)
        killed_at = time.time()
        workers.kill(victim)  # a supervisor starts another (wait_until_finished does)
        status = wait_until_finished(app, invitation_id, workers, timeout=120)
    assert status["state"] == "finished", workers.logs()
    assert status["sent"] == INVITEES and status["pending"] == 0
    assert workers.started == 3
    (held,) = [r for r in sendgrid_server.requests if r.fault == "delay"]
    assert held.at > killed_at  # SendGrid accepted it after its sender was dead

    # Every invitee exactly once, each with their own links.
    addresses = Counter(sendgrid_server.recipients)
    by_batch = Counter(batch_of(r.body) for r in sendgrid_server.requests)
    assert max(addresses.values()) == 1 and len(addresses) == INVITEES, (
        held_batch,
        {b: n for b, n in by_batch.items() if n > 1},
        [(batch_of(r.body), r.fault, r.status) for r in sendgrid_server.requests],
        workers.logs()[-4000:],
    )
    with app.app_context():
        contact_of = dict(
            db.session.execute(
                db.select(NewsletterRecipient.id, NewsletterRecipient.contact_id).where(
                    NewsletterRecipient.newsletter_id == invitation_id
                )
            ).all()
        )
        personalizations = [p for r in sendgrid_server.requests for p in r.body["personalizations"]]
        for p in personalizations:
            contact_id = contact_of[int(p["custom_args"]["klynge_recipient"])]
            register = p["substitutions"][invitations.TAG_REGISTER]
            token = parse_qs(urlsplit(register).query)["invitasjon"][0]
            assert invitations.read_invitation(event_id, token).id == contact_id
            assert (
                f"/arrangementer/{event_id}/kan-ikke/"
                in p["substitutions"][invitations.TAG_DECLINE]
            )
            link = p["headers"]["List-Unsubscribe"].strip("<>")
            claim = read_link_token(urlsplit(link).path.rsplit("/", 1)[1])
            assert (claim.contact_id, claim.network_id) == (contact_id, network_id)
    assert sorted(contact_of.values()) == sorted(
        contact_of[int(p["custom_args"]["klynge_recipient"])] for p in personalizations
    )

    # One invitee objects through the invitation's one-click unsubscribe (RFC 8058).
    chosen = personalizations[123]
    objector = contact_of[int(chosen["custom_args"]["klynge_recipient"])]
    link = chosen["headers"]["List-Unsubscribe"].strip("<>")
    answer = client.post(
        urlsplit(link).path,
        data={"List-Unsubscribe": "One-Click"},
        environ_base={"REMOTE_ADDR": "198.51.100.23"},
    )
    assert answer.status_code == 200
    with app.app_context():
        (event,) = db.session.scalars(
            db.select(ConsentEvent).where(ConsentEvent.contact_id == objector)
        ).all()
        assert (event.kind, event.source, event.ip) == ("objected", "email_link", "198.51.100.23")
        assert event.topic.network_id == network_id
        assert event.at is not None and "notice v1" in event.note

    # The next invitation to that network's members leaves them out.
    with app.app_context():
        following = invite(app, make_event("Neste nettverksmøte", network_id))
        assert start(app, following) == INVITEES - 1
        invited = set(
            db.session.scalars(
                db.select(NewsletterRecipient.contact_id).where(
                    NewsletterRecipient.newsletter_id == following
                )
            )
        )
        assert objector not in invited and len(invited) == INVITEES - 1
        services.cancel(db.session.get(Newsletter, following))
        db.session.commit()
