"""The networks each company takes part in through its current contacts, kept by the
database (migration 0039) for the results report: every way a contact, a membership, a
network or a company changes keeps it true. The randomized member register test checks
the same after every step of forms, merges and imports."""

import os
import threading

import pytest
from sqlalchemy import create_engine, delete, select, text, update

from crm.extensions import db
from crm.members.models import Company, Contact, Network, company_network, contact_network
from tests.factories import bulk_network_members, make_company, make_contact


def kept() -> set[tuple[int, int]]:
    db.session.expire_all()
    return set(db.session.execute(select(company_network)).tuples())


def flagged() -> set[int]:
    db.session.expire_all()
    return set(db.session.scalars(select(Company.id).where(Company.in_network)))


def network(name: str) -> Network:
    return db.session.scalar(select(Network).filter_by(name=name))


def test_the_contact_form_moving_archiving_and_restoring_keep_the_pairs(app, app_ctx, client, auth):
    auth.login("staff")
    first, second = make_company("Første AS"), make_company("Andre AS")
    hr, logistikk = network("HR"), network("Logistikk")
    form = {"first_name": "Kari", "last_name": "Nordmann", "email": "kari@example.no"}
    response = client.post(
        "/contacts/new", data={**form, "company": first.orgnr, "networks": [hr.id, logistikk.id]}
    )
    assert response.status_code == 302
    kari = db.session.scalar(select(Contact).filter_by(email="kari@example.no"))
    assert kept() == {(first.id, hr.id), (first.id, logistikk.id)}
    assert flagged() == {first.id}

    # Moved to the other company, in one network only.
    client.post(
        f"/contacts/{kari.id}/edit", data={**form, "company": second.orgnr, "networks": [hr.id]}
    )
    assert kept() == {(second.id, hr.id)}
    assert flagged() == {second.id}

    client.post(f"/contacts/{kari.id}/archive")
    assert kept() == set() and flagged() == set()
    client.post(f"/contacts/{kari.id}/unarchive")
    assert kept() == {(second.id, hr.id)} and flagged() == {second.id}

    # A second contact in the same network: the pair stays while either is in it.
    ola = make_contact("Ola", "Hansen", company=second, networks=[hr])
    client.post(f"/networks/{hr.id}/members/{kari.id}/remove")
    assert kept() == {(second.id, hr.id)}
    client.post(f"/networks/{hr.id}/members/{ola.id}/remove")
    assert kept() == set() and flagged() == set()


def test_bulk_memberships_and_deleted_networks_companies_and_contacts(app_ctx):
    hr, energi = network("HR"), network("Logistikk")
    member = make_company("Medlem AS", membership_status="member")
    other = make_company("Annen AS")
    ids = bulk_network_members(300, hr, company=member)
    db.session.execute(
        contact_network.insert(), [{"contact_id": i, "network_id": energi.id} for i in ids[:5]]
    )
    make_contact("Per", "Annen", company=other, networks=[hr])
    db.session.commit()
    assert kept() == {(member.id, hr.id), (member.id, energi.id), (other.id, hr.id)}

    # Many memberships gone in one statement, then a network, a contact and a company.
    db.session.execute(delete(contact_network).where(contact_network.c.contact_id.in_(ids[:3])))
    db.session.commit()
    assert (member.id, energi.id) in kept()
    db.session.execute(update(Contact).where(Contact.id.in_(ids)).values(archived_at=db.func.now()))
    db.session.commit()
    assert kept() == {(other.id, hr.id)} and flagged() == {other.id}
    db.session.execute(update(Contact).where(Contact.id.in_(ids[3:5])).values(archived_at=None))
    db.session.commit()
    assert kept() == {(member.id, hr.id), (member.id, energi.id), (other.id, hr.id)}

    db.session.execute(delete(Network).where(Network.id == energi.id))
    db.session.commit()
    assert kept() == {(member.id, hr.id), (other.id, hr.id)}
    db.session.execute(delete(Contact).where(Contact.id.in_(ids[3:5])))
    db.session.commit()
    assert kept() == {(other.id, hr.id)} and flagged() == {other.id}
    db.session.execute(delete(Company).where(Company.id == other.id))
    db.session.commit()
    assert kept() == set() and flagged() == set()
    assert db.session.scalar(select(Contact.company_id).filter_by(last_name="Annen")) is None


@pytest.mark.skipif(
    os.environ.get("CRM_TEST_DB") != "postgres", reason="SQLite takes one writer at a time"
)
def test_two_transactions_changing_one_companys_networks_count_one_after_the_other(app_ctx):
    """Without the recount's lock on the company, the second transaction's recount could
    not see the first's pair and failed on it (a duplicate key) or left it stale."""
    hr = network("HR")
    company = make_company("Samtidig AS")
    leaving = make_contact("Kari", "Går", company=company, networks=[hr])
    joining = make_contact("Ola", "Kommer", company=company)
    leaving_id, joining_id = leaving.id, joining.id  # the thread below has no session
    engine = create_engine(db.engine.url)
    first, second = engine.connect(), engine.connect()
    try:
        first.execute(
            text("INSERT INTO contact_network (contact_id, network_id) VALUES (:c, :n)"),
            {"c": joining_id, "n": hr.id},
        )
        errors = []

        def remove_the_other():
            try:
                second.execute(
                    text("DELETE FROM contact_network WHERE contact_id = :c"), {"c": leaving_id}
                )
                second.commit()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        waiting = threading.Thread(target=remove_the_other)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "the second recount did not wait for the first"
        first.commit()
        waiting.join(10)
        assert not errors, errors
    finally:
        first.close()
        second.close()
        engine.dispose()
    assert kept() == {(company.id, hr.id)} and flagged() == {company.id}
