"""Bulk actions on the company and contact lists: preview, one transaction, one audit
entry per change, and refusal with nothing changed when any row is invalid."""

import time
from datetime import date

from sqlalchemy import func, select

from crm import bulk
from crm.audit import AuditEntry
from crm.extensions import db
from crm.followups.models import FollowUp
from crm.members.models import Company, Contact, Network, contact_network
from crm.subscriptions.models import ConsentEvent, ConsentState
from crm.timeutil import utcnow
from tests.factories import make_company, make_contact


def _network_id(name="Logistikk") -> int:
    return db.session.scalar(select(Network.id).where(Network.name == name))


def _many_contacts(count: int) -> list[int]:
    """`count` contacts written at driver speed (the factories would take minutes)."""
    now = utcnow()
    rows = [
        {"first_name": "Masse", "last_name": f"Person {i:05d}", "email": f"m{i}@example.no"}
        for i in range(count)
    ]
    bulk.insert_rows(Contact.__table__, rows, {"created_at": now, "updated_at": now})
    db.session.commit()
    return list(db.session.scalars(select(Contact.id).order_by(Contact.id)))


def _members(network_id: int) -> set[int]:
    return set(
        db.session.scalars(
            select(contact_network.c.contact_id).where(contact_network.c.network_id == network_id)
        )
    )


def _contact_audit_count() -> int:
    return db.session.scalar(
        select(func.count(AuditEntry.id)).where(AuditEntry.record_type == "contact")
    )


def test_adding_10000_contacts_to_a_network_changes_exactly_those_with_one_entry_each(
    app, client, auth
):
    auth.login("staff")
    with app.app_context():
        ids = _many_contacts(10_100)
        network_id = _network_id()
        chosen, others = ids[:10_000], ids[10_000:]
        already = chosen[:25]
        bulk.insert_rows(
            contact_network, [{"contact_id": i} for i in already], {"network_id": network_id}
        )
        db.session.commit()
        before = _contact_audit_count()
    form = {
        "action": "network_add",
        "target_network": network_id,
        "ids": ",".join(map(str, chosen)),
    }
    preview = client.post("/contacts/bulk", data={**form, "step": "preview"})
    assert 'data-count="9975"' in preview.get_data(as_text=True)
    started = time.perf_counter()
    response = client.post("/contacts/bulk", data={**form, "step": "apply"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        assert _members(network_id) == set(chosen)
        assert not _members(network_id) & set(others)
        entries = db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.record_type == "contact", AuditEntry.action == "update"
            )
        ).all()
        assert _contact_audit_count() - before == 9_975
        assert {e.record_id for e in entries} == set(chosen) - set(already)
        assert entries[0].changes == {"networks": [[], ["Logistikk"]]}
    print(f"bulk add of 9,975 contacts: {elapsed:.2f} s")
    assert elapsed < 15


def test_a_bulk_action_with_one_invalid_row_is_refused_and_changes_nothing(app, client, auth):
    auth.login("staff")
    with app.app_context():
        ids = _many_contacts(300)
        network_id = _network_id()
        archived = make_contact("Arkivert", "Person", archived_at=utcnow()).id
        before = _contact_audit_count()
    for bad in (999_999, archived):
        response = client.post(
            "/contacts/bulk",
            data={
                "action": "network_add",
                "target_network": network_id,
                "ids": ",".join(map(str, [*ids, bad])),
                "step": "apply",
            },
            follow_redirects=True,
        )
        page = response.get_data(as_text=True)
        assert "Ingenting ble endret" in page
        with app.app_context():
            assert _members(network_id) == set()
            assert _contact_audit_count() == before


def test_all_matching_the_filter_reaches_rows_on_every_page(app, client, auth):
    auth.login("staff")
    with app.app_context():
        company = make_company("Solør Tre AS")
        orgnr, company_id = company.orgnr, company.id
        inside = [make_contact("Tre", f"Arbeider {i}", company_id=company_id).id for i in range(60)]
        outside = make_contact("Annen", "Person").id
        network_id = _network_id("Produksjon")
    response = client.post(
        "/contacts/bulk",
        data={
            "action": "network_add",
            "target_network": network_id,
            "all_matching": "1",
            "company": orgnr,
            "step": "apply",
        },
    )
    assert response.status_code == 302
    assert f"company={orgnr}" in response.headers["Location"]
    with app.app_context():
        assert _members(network_id) == set(inside)
        assert outside not in _members(network_id)


def test_removing_companies_from_a_network_removes_their_contacts(app, client, auth):
    auth.login("staff")
    with app.app_context():
        company_id = make_company("Grue Stål AS").id
        a = make_contact("A", "Stål", company_id=company_id, networks=["HR"]).id
        b = make_contact("B", "Stål", company_id=company_id, networks=["HR"]).id
        keep = make_contact("C", "Annen", networks=["HR"]).id
        network_id = _network_id("HR")
    response = client.post(
        "/companies/bulk",
        data={
            "action": "network_remove",
            "target_network": network_id,
            "ids": str(company_id),
            "step": "apply",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        assert _members(network_id) == {keep}
        assert a not in _members(network_id) and b not in _members(network_id)


def test_setting_membership_status_with_a_date_in_bulk(app, client, auth):
    auth.login("staff")
    with app.app_context():
        ids = [make_company(f"Prospekt {i} AS").id for i in range(3)]
    response = client.post(
        "/companies/bulk",
        data={
            "action": "status",
            "status": "member",
            "on": "2026-01-01",
            "ids": ",".join(map(str, ids)),
            "step": "apply",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        companies = db.session.scalars(select(Company)).all()
        assert {(c.membership_status, c.member_since) for c in companies} == {
            ("member", date(2026, 1, 1))
        }
        entries = db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.record_type == "company", AuditEntry.action == "update"
            )
        ).all()
        assert len(entries) == 3
        assert entries[0].changes["membership_status"] == ["prospect", "member"]


def test_a_resignation_before_membership_refuses_the_whole_status_change(app, client, auth):
    auth.login("staff")
    with app.app_context():
        ids = [
            make_company("Tidlig AS", membership_status="member", member_since=date(2020, 1, 1)).id,
            make_company("Sen AS", membership_status="member", member_since=date(2026, 6, 1)).id,
        ]
    response = client.post(
        "/companies/bulk",
        data={
            "action": "status",
            "status": "resigned",
            "on": "2026-03-01",
            "ids": ",".join(map(str, ids)),
            "step": "apply",
        },
    )
    assert response.status_code == 200
    assert "Sen AS" in response.get_data(as_text=True)
    with app.app_context():
        assert {c.membership_status for c in db.session.scalars(select(Company))} == {"member"}


def test_assigning_a_follow_up_to_selected_contacts(app, client, auth):
    me = auth.login("staff")
    with app.app_context():
        company_id = make_company().id
        ids = [make_contact("F", str(i), company_id=company_id).id for i in range(4)]
    response = client.post(
        "/contacts/bulk",
        data={
            "action": "followup",
            "what": "Inviter til LEAN-kurs",
            "due_on": "2026-12-20",
            "assignee": me.id,
            "ids": ",".join(map(str, ids)),
            "step": "apply",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        rows = db.session.scalars(select(FollowUp)).all()
        assert sorted(f.contact_id for f in rows) == sorted(ids)
        assert {f.company_id for f in rows} == {company_id}


def test_recording_consent_in_bulk_goes_to_the_ledger_with_its_evidence(app, client, auth):
    from crm.subscriptions.topics import current_wording, sync_topics

    auth.login("staff")
    with app.app_context():
        sync_topics()
        db.session.commit()
        from crm.subscriptions.models import Topic

        topic_id = db.session.scalar(select(Topic.id).where(Topic.slug == "generelt"))
        version = current_wording().version
        ids = [make_contact("K", str(i), email=f"k{i}@example.no").id for i in range(3)]
        no_email = make_contact("Uten", "Epost").id
    data = {
        "action": "consent",
        "topic": topic_id,
        "channel": "letter",
        "wording_version": version,
        "note": "Påmelding på papir, Styrketrening 14.01",
        "step": "apply",
    }
    refused = client.post(
        "/contacts/bulk", data={**data, "ids": ",".join(map(str, [*ids, no_email]))}
    )
    assert refused.status_code == 200 and "Uten Epost" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(ConsentEvent.id))) == 0
    response = client.post("/contacts/bulk", data={**data, "ids": ",".join(map(str, ids))})
    assert response.status_code == 302
    with app.app_context():
        events = db.session.scalars(select(ConsentEvent)).all()
        assert sorted(e.contact_id for e in events) == sorted(ids)
        assert all(e.source == "staff" and "Styrketrening 14.01" in e.note for e in events)
        assert all(e.wording_id is not None for e in events)
        states = db.session.scalars(select(ConsentState)).all()
        assert {s.status for s in states} == {"active"}


def test_exporting_the_selection(app, client, auth):
    auth.login("staff")
    with app.app_context():
        ids = [make_contact("Eksport", str(i), email=f"e{i}@example.no").id for i in range(3)]
        make_contact("Ikke", "Med", email="ikke@example.no")
    response = client.post(
        "/contacts/bulk",
        data={"action": "export", "fmt": "csv", "ids": ",".join(map(str, ids)), "step": "apply"},
    )
    assert response.status_code == 200
    body = response.get_data().decode("utf-8-sig")
    assert "e0@example.no" in body and "e2@example.no" in body and "ikke@example.no" not in body


def test_the_list_offers_selection_and_bulk_actions_to_staff_only(app, client, auth):
    with app.app_context():
        make_contact("Synlig", "Person")
    auth.login("treasurer")
    assert "bulk-form" not in client.get("/contacts").get_data(as_text=True)
    assert client.post("/contacts/bulk", data={"action": "export"}).status_code == 403
    auth.logout()
    auth.login("staff")
    page = client.get("/contacts").get_data(as_text=True)
    assert 'id="bulk-form"' in page and 'class="row-select"' in page
