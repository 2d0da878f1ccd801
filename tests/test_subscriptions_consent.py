"""The consent ledger: evidence is appended, never changed; staff record and withdraw."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.audit import AuditEntry
from crm.auth.models import User
from crm.extensions import db
from crm.mail.services import record_event as record_mail_event
from crm.mail.services import suppress
from crm.members.models import Contact
from crm.members.services import merge_contacts
from crm.subscriptions import ledger, links, staff_consent, topics
from crm.subscriptions.models import (
    CONSENT_KINDS,
    CONSENT_SOURCES,
    ConsentEvent,
    ConsentState,
    LedgerIsAppendOnly,
    Subscriber,
)
from tests.factories import bulk_subscribers, make_contact, make_subscriber, make_user


def statuses(contact) -> dict[str, str]:
    return {s.topic.slug: s.status for s in ledger.consent_states(contact).values()}


def test_web_form_grant_waits_for_confirmation_and_staff_grant_counts_at_once(app_ctx):
    topics.sync_topics()
    wording = topics.current_wording()
    staff = make_user("staff")
    contact = make_contact(email="kari@example.no")
    general, hr = topics.topic_by_slug("generelt"), topics.topic_by_slug("hr")
    ledger.record_event(contact, general, "granted", "web_form", ip="192.0.2.1", wording=wording)
    ledger.record_event(contact, hr, "granted", "staff", user=staff, wording=wording, note="x")
    assert statuses(contact) == {"generelt": "pending", "hr": "active"}
    ledger.record_event(contact, general, "confirmed", "email_link", ip="192.0.2.1")
    assert statuses(contact) == {"generelt": "active", "hr": "active"}
    db.session.commit()
    ids = db.session.scalars(ledger.contacts_with_active_consent("hr")).all()
    assert ids == [contact.id]


def test_ledger_rows_can_be_neither_changed_nor_deleted(app_ctx):
    contact = make_subscriber()
    event = db.session.scalars(db.select(ConsentEvent)).first()
    event.note = "rewritten history"
    with pytest.raises(LedgerIsAppendOnly):
        db.session.flush()
    db.session.rollback()
    db.session.delete(db.session.get(ConsentEvent, event.id))
    with pytest.raises(LedgerIsAppendOnly):
        db.session.flush()
    db.session.rollback()
    assert len(ledger.consent_history(contact)) == 2


def test_every_consent_change_is_in_the_audit_log(app_ctx):
    make_subscriber()
    entries = db.session.scalars(
        db.select(AuditEntry).where(AuditEntry.record_type == "consent_event")
    ).all()
    assert [e.changes["kind"][1] for e in entries] == ["granted", "confirmed"]


event_lists = st.lists(
    st.tuples(
        st.sampled_from(CONSENT_KINDS),
        st.sampled_from(CONSENT_SOURCES),
        st.sampled_from(["generelt", "hr", "logistikk"]),
    ),
    max_size=12,
)


def test_maintained_state_always_equals_the_state_derived_from_the_ledger(app_ctx):
    topics.sync_topics()
    wording = topics.current_wording()
    db.session.commit()
    staff_id = make_user("staff").id
    contact_id = make_contact(email=None).id

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(events=event_lists)
    def replay(events):
        staff, contact = db.session.get(User, staff_id), db.session.get(Contact, contact_id)
        for kind, source, slug in events:
            user = staff if source == "staff" else None
            ledger.record_event(
                contact, topics.topic_by_slug(slug), kind, source, user=user, wording=wording
            )
        db.session.flush()
        derived = ledger.derive_states(contact.id)
        maintained = {s.topic_id: s.status for s in ledger.consent_states(contact).values()}
        assert maintained == derived
        ledger.rebuild_states(contact.id)
        rebuilt = {s.topic_id: s.status for s in ledger.consent_states(contact).values()}
        assert rebuilt == derived
        db.session.rollback()

    replay()


def test_staff_record_consent_given_in_person_with_a_required_note(app, client, auth):
    with app.app_context():
        contact_id = make_contact(email="ola@example.no").id
    staff = auth.login("staff")
    url = f"/contacts/{contact_id}/consent/grant"
    response = client.post(url, data={"topics": ["hr"], "channel": "phone", "note": "  "})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(ConsentEvent.id))) == 0
    response = client.post(
        url,
        data={"topics": ["hr", "generelt"], "channel": "in_person", "note": "Seminar 12.03."},
        follow_redirects=True,
    )
    assert response.status_code == 200
    with app.app_context():
        events = db.session.scalars(db.select(ConsentEvent)).all()
        assert {(e.kind, e.source, e.user_id) for e in events} == {("granted", "staff", staff.id)}
        assert all(e.note == "[in_person] Seminar 12.03." and e.wording for e in events)
        contact = db.session.get(Contact, contact_id)
        assert statuses(contact) == {"hr": "active", "generelt": "active"}


def test_staff_withdraw_on_request_and_the_contact_page_shows_the_history(app, client, auth):
    with app.app_context():
        contact_id = make_subscriber("kari@example.no", topics=("generelt", "hr")).id
    auth.login("staff")
    client.post(
        f"/contacts/{contact_id}/consent/withdraw",
        data={"topics": ["hr"], "note": "Ringte og ba om det"},
    )
    with app.app_context():
        assert statuses(db.session.get(Contact, contact_id)) == {
            "generelt": "active",
            "hr": "withdrawn",
        }
    page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert 'id="consent"' in page
    assert "Samtykkehistorikk" in page and "Ringte og ba om det" in page
    assert "IP 192.0.2.1" in page and "v1" in page


def test_treasurer_sees_consent_but_cannot_change_it(app, client, auth):
    with app.app_context():
        contact_id = make_subscriber().id
    auth.login("treasurer")
    assert client.get(f"/contacts/{contact_id}/consent").status_code == 200
    response = client.post(
        f"/contacts/{contact_id}/consent/grant",
        data={"topics": ["hr"], "channel": "phone", "note": "x"},
    )
    assert response.status_code == 403
    page = client.get(f"/contacts/{contact_id}/consent").get_data(as_text=True)
    assert "Registrer samtykke" not in page


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ({"event": "bounce", "type": "bounce"}, "bounced"),
        ({"event": "dropped"}, "bounced"),
        ({"event": "spamreport"}, "complained"),
        ({"event": "unsubscribe"}, "withdrawn"),
    ],
)
def test_provider_events_withdraw_consent(app_ctx, event, kind):
    contact = make_subscriber("kari@example.no", topics=("generelt", "hr"))
    record_mail_event(dict(event, email="Kari@example.no", sg_event_id=f"ev-{kind}-1"))
    db.session.commit()
    assert set(statuses(contact).values()) == {kind}
    events = ledger.consent_history(contact)[:2]
    assert {(e.kind, e.source) for e in events} == {(kind, "webhook")}


def test_a_delivery_of_many_events_withdraws_consent_as_one_by_one(app_ctx):
    """The webhook applies a delivery's events together (`record_events`): owners are
    found at once, and each consent still ends with its own ledger event."""
    from crm.mail.services import record_events

    kari = make_subscriber("kari@example.no", topics=("generelt", "hr"))
    ola = make_subscriber("ola@example.no")
    per = make_subscriber("per@example.no")
    events = [
        {"event": "delivered", "email": "per@example.no", "sg_event_id": "d-1"},
        {"event": "bounce", "type": "bounce", "email": "Kari@Example.no", "sg_event_id": "b-1"},
        {"event": "spamreport", "email": "ola@example.no", "sg_event_id": "s-1"},
        {"event": "bounce", "type": "blocked", "email": "per@example.no", "sg_event_id": "b-2"},
        {"event": "dropped", "email": "kari@example.no", "sg_event_id": "x-1"},
        {"event": "bounce", "email": "nobody@example.no", "sg_event_id": "b-3"},
    ]
    assert record_events(events) == (6, 0)
    db.session.commit()
    assert statuses(kari) == {"generelt": "bounced", "hr": "bounced"}
    assert statuses(ola) == {"generelt": "complained"}
    assert statuses(per) == {"generelt": "active"}
    history = [(e.kind, e.source, e.note) for e in ledger.consent_history(kari)[:2]]
    assert history == [("bounced", "webhook", "bounce: bounce")] * 2


def test_a_soft_bounce_or_a_delivery_changes_no_consent(app_ctx):
    contact = make_subscriber("kari@example.no")
    record_mail_event({"event": "bounce", "type": "blocked", "email": "kari@example.no"})
    record_mail_event({"event": "delivered", "email": "kari@example.no"})
    db.session.commit()
    assert statuses(contact) == {"generelt": "active"}


def test_merging_contacts_moves_their_consent_to_the_survivor(app_ctx):
    target = make_subscriber("ola@example.no", topics=("generelt",))
    other = make_subscriber("ola.nordmann@example.no", topics=("hr",))
    old_link = links.link_token(other)
    merge_contacts(target, other)
    db.session.commit()
    assert statuses(target) == {"generelt": "active", "hr": "active"}
    assert statuses(other) == {}
    assert len(ledger.consent_history(target)) == 4
    # A link mailed to the merged contact now speaks for the survivor.
    assert links.contact_for_link(old_link).id == target.id


def test_new_consent_lifts_an_unsubscribe_suppression_but_not_a_manual_one(app_ctx):
    contact = make_subscriber("kari@example.no")
    staff = make_user("staff")
    suppress("kari@example.no", "unsubscribe")
    staff_consent.record_staff_consent(
        contact, [topics.topic_by_slug("hr")], user=staff, channel="phone", note="ok"
    )
    from crm.mail.services import is_suppressed

    assert not is_suppressed("kari@example.no")
    suppress("kari@example.no", "manual")
    staff_consent.record_staff_consent(
        contact, [topics.topic_by_slug("logistikk")], user=staff, channel="phone", note="ok"
    )
    assert is_suppressed("kari@example.no")
    db.session.rollback()


def test_consent_state_table_answers_audience_questions(app_ctx):
    make_subscriber("a@example.no", topics=("generelt", "hr"))
    make_subscriber("b@example.no", topics=("hr",))
    gone = make_subscriber("c@example.no", topics=("hr",))
    ledger.withdraw_all(gone, source="email_link")
    db.session.commit()
    hr = db.session.scalars(ledger.contacts_with_active_consent("hr")).all()
    emails = db.session.scalars(db.select(Contact.email).where(Contact.id.in_(hr))).all()
    assert sorted(emails) == ["a@example.no", "b@example.no"]
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentState)) == 4


def test_crm_demo_creates_confirmed_public_subscribers(app, runner):
    result = runner.invoke(args=["demo", "--companies", "3", "--subscribers", "40"])
    assert result.exit_code == 0, result.output
    assert "40 newsletter subscribers" in result.output
    with app.app_context():
        subscribers = db.session.scalars(
            db.select(Contact).join(Subscriber, Subscriber.contact_id == Contact.id)
        ).all()
        assert len(subscribers) == 40
        assert all(c.company_id is None for c in subscribers)
        assert len({c.email for c in subscribers}) == 40
        for contact in subscribers:
            assert statuses(contact) and set(statuses(contact).values()) == {"active"}
            assert ledger.derive_states(contact.id) == {
                s.topic_id: s.status for s in ledger.consent_states(contact).values()
            }
        grants = db.session.scalars(db.select(ConsentEvent).filter_by(kind="granted")).all()
        assert {(g.source, g.wording.version) for g in grants} == {("web_form", 1)}


def _bounce_burst(app, tag: str, count: int) -> tuple[list[int], list[dict]]:
    """`count` subscribers (two topics each), half of them mailed a message; a bounce
    for each, by the message for those mailed, by address for the others."""
    from crm.mail.services import queue_email

    ids = bulk_subscribers(count, topics=("generelt", "hr"), prefix=tag)
    events = []
    for n, contact_id in enumerate(ids):
        email = f"{tag}{n}@example.no"
        bounce = {"event": "bounce", "type": "bounce", "email": email, "sg_event_id": f"{tag}-{n}"}
        if n % 2:
            message = queue_email(email, "mail/test", {"name": "P"}, contact_id=contact_id)
            bounce["klynge_message_id"] = message.uuid
        events.append(bounce)
    db.session.commit()
    return ids, events


def _counted(statements: list[str]) -> int:
    if db.engine.dialect.name == "sqlite":
        statements = [s for s in statements if not s.lstrip().upper().startswith("INSERT")]
    return len(statements)


def test_a_burst_of_bounces_ends_consents_in_as_many_statements_whatever_its_size(app_ctx):
    """A delivery's bounces end their consents together (`ledger.end_consents`): the
    same number of statements for 4 bounces as for 16, and the same ledger events and
    audit entries as one by one. (SQLite is the exception for INSERTs of new rows,
    consent events and suppressions alike: without RETURNING in a known order, the
    ORM inserts them a row at a time there, to read back each id.)"""
    from crm.mail.services import record_events
    from tests.cached_figures import counting_queries

    counts = []
    for tag, size in (("few", 4), ("many", 16)):
        ids, events = _bounce_burst(app_ctx, tag, size)
        with counting_queries() as statements:
            record_events(events)
            db.session.commit()
        counts.append(_counted(statements))
        for contact_id in ids:
            contact = db.session.get(Contact, contact_id)
            assert statuses(contact) == {"generelt": "bounced", "hr": "bounced"}
            history = ledger.consent_history(contact)[:2]
            assert [(e.kind, e.source, e.note) for e in history] == [
                ("bounced", "webhook", "bounce: bounce")
            ] * 2
            states = ledger.consent_states(contact)
            assert {s.event_id for s in states.values()} == {e.id for e in history}
        audited = db.session.scalar(
            db.select(db.func.count(AuditEntry.id)).where(
                AuditEntry.record_type == "consent_event",
                AuditEntry.record_id.in_(
                    db.select(ConsentEvent.id).where(
                        ConsentEvent.contact_id.in_(ids), ConsentEvent.kind == "bounced"
                    )
                ),
            )
        )
        assert audited == 2 * size
    assert counts[0] == counts[1], f"{counts[0]} statements for 4 bounces, {counts[1]} for 16"
