"""GDPR: staff download everything about a person, and erase a person on request."""

import json
import urllib.parse
from datetime import UTC, date, datetime

import sqlalchemy as sa

from crm.audit import AuditEntry
from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import queue_email
from crm.members.models import Activity, Contact
from crm.members.services import merge_contacts
from crm.subscriptions import ledger, links, subscribers, tokens, topics
from crm.subscriptions.models import ConsentEvent, PendingSignup, Subscriber
from tests.factories import make_company, make_contact, make_subscriber
from tests.migrating import insert_row, migrated_to


def seed_person(app) -> tuple[int, str]:
    """A subscriber with a company, a network, activities, an email and a pending signup."""
    with app.test_request_context():
        company = make_company("Kongsvinger Stål AS")
        contact = make_subscriber(
            "kari@example.no",
            topics=("generelt", "hr"),
            phone="+4791234567",
            job_title="Daglig leder",
            notes="Liker kaffe",
            company_id=company.id,
            networks=["HR"],
        )
        db.session.add_all(
            [
                Activity(
                    kind="call",
                    occurred_on=date(2026, 3, 1),
                    summary="Ringte Kari",
                    contact_id=contact.id,
                ),
                Activity(
                    kind="meeting",
                    occurred_on=date(2026, 3, 2),
                    summary="Møte med Kari",
                    contact_id=contact.id,
                    company_id=company.id,
                ),
            ]
        )
        subscribers.subscriber_profile(contact, create=True).company_name = "Stål"
        queue_email(
            to="kari@example.no",
            to_name="Kari Nordmann",
            template="subscriptions/welcome",
            context={"name": "Kari", "topics": []},
            contact_id=contact.id,
        )
        db.session.add(
            PendingSignup(
                nonce="n",
                email="kari@example.no",
                first_name="Kari",
                wording_id=topics.current_wording().id,
                ip="192.0.2.9",
            )
        )
        db.session.commit()
        return contact.id, urllib.parse.urlsplit(links.unsubscribe_url(contact)).path


def test_staff_download_everything_held_about_a_person(app, client, auth):
    contact_id, _ = seed_person(app)
    auth.login("staff")
    response = client.get(f"/contacts/{contact_id}/personal-data.json")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    data = json.loads(response.get_data(as_text=True))
    assert data["contact"]["email"] == "kari@example.no"
    assert data["contact"]["phone"] == "+4791234567"
    assert data["company"] == "Kongsvinger Stål AS"
    assert data["networks"] == ["HR"]
    assert {a["summary"] for a in data["activities"]} == {"Ringte Kari", "Møte med Kari"}
    assert [(e["topic"], e["kind"]) for e in data["consent_events"]][:2] == [
        ("generelt", "granted"),
        ("generelt", "confirmed"),
    ]
    assert data["consent_events"][0]["ip"] == "192.0.2.1"
    assert data["consent_events"][0]["wording_version"] == 1
    assert {s["topic"]: s["status"] for s in data["consent_state"]} == {
        "generelt": "active",
        "hr": "active",
    }
    assert data["subscriber"]["company_name"] == "Stål"
    assert data["pending_signups"][0]["ip"] == "192.0.2.9"
    assert data["email_messages"][0]["to_email"] == "kari@example.no"
    assert any(e["record_type"] == "contact" for e in data["audit_entries"])


def test_erase_anonymises_the_person_and_keeps_minimal_consent_evidence(app, client, auth):
    contact_id, unsubscribe = seed_person(app)
    staff = auth.login("staff")
    assert client.get(f"/contacts/{contact_id}/erase").status_code == 200
    response = client.post(f"/contacts/{contact_id}/erase", data={"confirm": "y"})
    assert response.status_code == 302

    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        assert (contact.first_name, contact.last_name, contact.email, contact.phone) == (
            "",
            "",
            None,
            None,
        )
        assert contact.notes == "" and contact.job_title == "" and contact.networks == []
        assert contact.company_id is None and contact.archived_at is not None
        assert ledger.subscribed_topics(contact) == []

        events = db.session.scalars(db.select(ConsentEvent).order_by(ConsentEvent.id)).all()
        assert [(e.kind, e.source) for e in events][:4] == [
            ("granted", "web_form"),
            ("confirmed", "email_link"),
            ("granted", "web_form"),
            ("confirmed", "email_link"),
        ]
        assert all(e.wording_id for e in events if e.kind == "granted")
        assert all(e.ip is None for e in events)
        erase_events = [e for e in events if e.source == "staff"]
        assert {e.kind for e in erase_events} == {"withdrawn"}
        assert all(e.user_id == staff.id for e in erase_events)

        activities = db.session.scalars(db.select(Activity)).all()
        assert [(a.summary, a.contact_id) for a in activities] == [("Møte med Kari", None)]
        assert db.session.scalar(db.select(db.func.count(PendingSignup.id))) == 0
        message = db.session.scalar(db.select(EmailMessage))
        assert "kari" not in (message.to_email + message.to_name + message.text_body).lower()
        assert db.session.scalar(db.select(Subscriber)).erased_at is not None

        # The audit log keeps who changed what when, never the erased values.
        entries = db.session.scalars(db.select(AuditEntry)).all()
        dump = json.dumps([e.changes for e in entries] + [e.record_label for e in entries])
        for secret in ("Kari", "kari@example.no", "91234567", "Liker kaffe", "192.0.2.1"):
            assert secret not in dump, secret
        [erasure] = [
            e
            for e in entries
            if e.record_type == "contact" and "email" in e.changes and e.action == "update"
        ]
        assert erasure.user_id == staff.id
        assert erasure.changes["email"] == ["[erased]", None]
        assert erasure.changes["active"] == [True, False]

    # Every link sent to the person is dead.
    assert client.get(unsubscribe).status_code == 404
    # Nothing about the person remains to download.
    data = client.get(f"/contacts/{contact_id}/personal-data.json").get_json()
    assert "Kari" not in json.dumps(data, ensure_ascii=False)


def test_erase_needs_the_confirmation_box_and_members_edit(app, client, auth):
    contact_id, _ = seed_person(app)
    auth.login("treasurer")
    assert client.post(f"/contacts/{contact_id}/erase", data={"confirm": "y"}).status_code == 403
    auth.logout()
    auth.login("staff")
    assert client.post(f"/contacts/{contact_id}/erase", data={}).status_code == 200
    with app.app_context():
        assert db.session.get(Contact, contact_id).email == "kari@example.no"


def _pending_signup(email: str) -> str:
    """A pending web-form signup for `email`; the path of its confirmation link."""
    topics.sync_topics()
    pending = PendingSignup(
        nonce=f"n-{email}",
        email=email,
        first_name="Kari",
        wording_id=topics.current_wording().id,
        topic_ids=[topics.topic_by_slug("generelt").id],
        ip="192.0.2.9",
    )
    db.session.add(pending)
    db.session.commit()
    return f"/subscribe/confirm/{tokens.make_confirm_token(pending.id, pending.nonce)}"


def test_erase_also_empties_the_contacts_merged_into_the_person(app, client, auth):
    with app.test_request_context():
        kept = make_subscriber("kari@example.no", first_name="Kari")
        work = make_contact("Kari", "Jobb", email="kari@stal.no", phone="+4798765432")
        home = make_contact("Kari", "Hjemme", email="kari@hjemme.no", notes="Privat")
        merge_contacts(work, home)  # home into work, then work into kept
        merge_contacts(kept, work)
        db.session.commit()
        confirm_old_address = _pending_signup("kari@hjemme.no")
        ids = kept.id, work.id, home.id
    auth.login("staff")
    assert client.post(f"/contacts/{ids[0]}/erase", data={"confirm": "y"}).status_code == 302
    with app.app_context():
        for contact_id in ids:
            contact = db.session.get(Contact, contact_id)
            assert (contact.first_name, contact.last_name, contact.email, contact.phone) == (
                "", "", None, None,
            )  # fmt: skip
            assert contact.notes == ""
        assert db.session.scalar(db.select(db.func.count(PendingSignup.id))) == 0
        logged = json.dumps(
            [e.changes for e in db.session.scalars(db.select(AuditEntry))], ensure_ascii=False
        )
        assert "hjemme" not in logged and "stal.no" not in logged and "98765432" not in logged
    # The signup made before the erasure for an address merged into the person is gone.
    assert client.post(confirm_old_address).status_code == 404


def test_a_signup_for_an_address_whose_record_was_merged_into_a_contact_without_one(app, client):
    with app.test_request_context():
        kept = make_contact("Kari", "Nordmann")
        old = make_contact("Kari", "Nordmann", email="kari@gammel.no")
        merge_contacts(kept, old)  # kept takes the address ...
        kept.email = None  # ... and staff remove it later
        db.session.commit()
        confirm = _pending_signup("kari@gammel.no")
        kept_id = kept.id
    response = client.post(confirm)
    assert response.status_code == 200
    with app.app_context():
        owner = db.session.scalar(
            db.select(Contact).where(
                Contact.email == "kari@gammel.no", Contact.merged_into_id.is_(None)
            )
        )
        assert owner is not None and owner.id != kept_id
        assert ledger.subscribed_topics(owner)
        assert db.session.scalar(db.select(EmailMessage.to_email)) == "kari@gammel.no"


def test_migration_0042_empties_records_merged_into_people_erased_before(scratch_database):
    from flask_migrate import upgrade

    with migrated_to(scratch_database, "0041_address_keys_nfc") as metadata:
        with db.engine.begin() as conn:
            erased = insert_row(conn, metadata, "contact", first_name="", email=None)
            insert_row(conn, metadata, "subscriber", contact_id=erased, erased_at=datetime.now(UTC))
            work = insert_row(
                conn, metadata, "contact", first_name="Kari", last_name="Jobb",
                email="kari@stal.no", phone="+4798765432", merged_into_id=erased,
            )  # fmt: skip
            home = insert_row(
                conn, metadata, "contact", first_name="Kari", last_name="Hjemme",
                email="kari@hjemme.no", notes="Privat", merged_into_id=work,
            )  # fmt: skip
            kept = insert_row(conn, metadata, "contact", first_name="Ola", email="ola@x.no")
            other = insert_row(
                conn, metadata, "contact", first_name="Ola", email="ola@y.no", merged_into_id=kept
            )
            wording = insert_row(conn, metadata, "consent_wording", version=1)
            for email in ("kari@hjemme.no", "ola@y.no"):
                insert_row(
                    conn, metadata, "pending_signup", email=email, nonce=email,
                    wording_id=wording, topic_ids=[],
                )  # fmt: skip
            insert_row(
                conn, metadata, "email_message", to_email="kari@stal.no", to_name="Kari",
                text_body="Hei Kari", uuid="m1",
            )  # fmt: skip
            insert_row(
                conn, metadata, "audit_entry", record_type="contact", record_id=home,
                action="update", actor="x", record_label="Kari Hjemme",
                changes={"email": [None, "kari@hjemme.no"], "active": [False, True]},
            )  # fmt: skip
        upgrade(revision="heads")
        with db.engine.connect() as conn:
            people = dict(
                conn.execute(
                    sa.text(
                        "SELECT id, first_name || last_name || coalesce(email, '') FROM contact"
                    )
                ).all()
            )
            pending = conn.execute(sa.text("SELECT email FROM pending_signup")).scalars().all()
            message = conn.execute(sa.text("SELECT to_email, text_body FROM email_message")).one()
            entry = conn.execute(sa.text("SELECT changes, record_label FROM audit_entry")).one()
    assert (people[work], people[home]) == ("", "")
    assert (people[kept], people[other]) == ("Olaxola@x.no", "Olaxola@y.no")  # untouched
    assert pending == ["ola@y.no"]
    assert tuple(message) == ("[erased]", "")
    changes = entry[0] if isinstance(entry[0], dict) else json.loads(entry[0])
    assert changes == {"email": [None, "[erased]"], "active": [False, True]}
    assert entry[1] == f"#{home}"


def test_the_download_holds_the_records_merged_into_the_person(app, client, auth):
    with app.test_request_context():
        kept = make_subscriber("kari@example.no", first_name="Kari")
        old = make_contact("Kari", "Jobb", email="kari@stal.no", phone="+4798765432")
        queue_email(to="kari@stal.no", template="subscriptions/welcome", context={"name": "K"})
        merge_contacts(kept, old)
        db.session.commit()
        _pending_signup("kari@stal.no")
        kept_id = kept.id
    auth.login("staff")
    data = json.loads(client.get(f"/contacts/{kept_id}/personal-data.json").get_data(as_text=True))
    assert [(r["email"], r["phone"]) for r in data["merged_records"]] == [
        ("kari@stal.no", "+4798765432")
    ]
    assert [p["email"] for p in data["pending_signups"]] == ["kari@stal.no"]
    assert [m["to_email"] for m in data["email_messages"]] == ["kari@stal.no"]
    assert any("98765432" in str(e["changes"]) for e in data["audit_entries"])
