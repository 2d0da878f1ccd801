"""Every change to audited records lands in the audit log, by one mechanism."""

from crm.audit import AuditEntry, acting_as, history_for
from crm.extensions import db
from tests.factories import make_company, make_contact, make_user


def test_create_update_and_delete_are_logged_with_field_values(app):
    with app.app_context():
        user = make_user("staff")
        with acting_as(user.email, user=user):
            company = make_company("Glåmdal Sag AS", employees=12)
            company.employees = 14
            company.website = "https://glamdalsag.example.no"
            db.session.commit()
        entries = history_for(company)
        assert [e.action for e in entries] == ["update", "create"]
        assert entries[0].changes == {
            "employees": [12, 14],
            "website": [None, "https://glamdalsag.example.no"],
        } or entries[0].changes == {
            "employees": [12, 14],
            "website": ["", "https://glamdalsag.example.no"],
        }
        assert entries[0].user_id == user.id
        assert entries[1].changes["name"] == [None, "Glåmdal Sag AS"]

        company_id = company.id
        db.session.delete(company)
        db.session.commit()
        deleted = db.session.scalars(
            db.select(AuditEntry).filter_by(
                record_type="company", record_id=company_id, action="delete"
            )
        ).one()
        assert deleted.changes["name"] == ["Glåmdal Sag AS", None]


def test_network_membership_changes_are_logged_on_the_contact(app):
    with app.app_context():
        contact = make_contact(networks=["HR"])
        from crm.members.models import Network

        logistics = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
        contact.networks.append(logistics)
        db.session.commit()
        latest = history_for(contact)[0]
        assert latest.changes["networks"] == [["HR"], ["HR", "Logistikk"]]


def test_password_hashes_never_reach_the_audit_log(app):
    with app.app_context():
        user = make_user("staff")
        user.set_password("another long password")
        db.session.commit()
        for entry in history_for(user):
            assert "password_hash" not in entry.changes


def test_unchanged_save_writes_no_entry(app):
    with app.app_context():
        company = make_company("Eidskog Stål AS")
        company.name = "Eidskog Stål AS"
        db.session.commit()
        assert [e.action for e in history_for(company)] == ["create"]
