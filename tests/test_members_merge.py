"""Merging duplicate contacts keeps one record and all the history of both."""

from datetime import date

from crm.audit import history_for
from crm.extensions import db
from crm.members import services
from crm.members.models import Activity, Contact
from crm.members.normalize import format_phone
from tests.factories import make_company, make_contact


def text(response) -> str:
    return response.get_data(as_text=True)


def two_karis(app):
    """The same person registered twice: once by a colleague, once from a seminar list."""
    with app.app_context():
        grue = make_company("Grue Bygg AS")
        kept = make_contact(
            "Kari", "Nordmann", email="kari@grue.example.no", company=grue, networks=["HR"]
        )
        duplicate = make_contact(
            "Kari",
            "Nordmann",
            email="kari.nordmann@example.no",
            phone="+4791234567",
            job_title="Daglig leder",
            is_invoice_contact=True,
            networks=["Logistikk", "HR"],
            notes="Meldte seg på via seminarlisten.",
        )
        db.session.add(
            Activity(
                kind="seminar",
                occurred_on=date(2026, 3, 1),
                summary="Lean-seminar",
                contact=duplicate,
            )
        )
        db.session.commit()
        return kept.id, duplicate.id


def test_merge_page_suggests_likely_duplicates_and_compares_them(app, client, auth):
    kept, duplicate = two_karis(app)
    with app.app_context():
        make_contact("Ola", "Annen", email="ola@example.no")
    auth.login("staff")
    candidates = text(client.get(f"/contacts/{kept}/merge"))
    assert f"other={duplicate}" in candidates and "Ola Annen" not in candidates
    assert "Ola Annen" in text(client.get(f"/contacts/{kept}/merge?q=ola"))
    comparison = text(client.get(f"/contacts/{kept}/merge?other={duplicate}"))
    assert "kari.nordmann@example.no" in comparison
    assert format_phone("+4791234567") in comparison
    assert "Etter sammenslåingen" in comparison and "HR, Logistikk" in comparison


def test_merge_moves_activities_and_networks_fills_gaps_and_archives_the_other(app, client, auth):
    kept_id, duplicate_id = two_karis(app)
    auth.login("staff")
    response = client.post(f"/contacts/{kept_id}/merge", data={"other_id": duplicate_id})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/contacts/{kept_id}"
    with app.app_context():
        kept = db.session.get(Contact, kept_id)
        other = db.session.get(Contact, duplicate_id)
        assert kept.email == "kari@grue.example.no"  # the kept contact's own value wins
        assert kept.phone == "+4791234567" and kept.job_title == "Daglig leder"
        assert kept.is_invoice_contact
        assert [n.name for n in kept.networks] == ["HR", "Logistikk"]
        assert [a.summary for a in kept.activities] == ["Lean-seminar"]
        assert "seminarlisten" in kept.notes
        assert other.archived_at is not None and other.merged_into_id == kept_id
        assert other.networks == []
        # Both sides of the merge are in the audit log.
        kept_changes = history_for(kept)[0].changes
        assert kept_changes["phone"] == [None, "+4791234567"]
        assert kept_changes["networks"] == [["HR"], ["HR", "Logistikk"]]
        assert history_for(other)[0].changes["merged_into_id"] == [None, kept_id]
    assert "Kari Nordmann" in text(client.get(f"/contacts/{duplicate_id}"))
    assert "slått sammen med" in text(client.get(f"/contacts/{duplicate_id}"))


def test_merge_hooks_let_other_areas_move_their_rows(app):
    kept_id, duplicate_id = two_karis(app)
    seen = []
    services.MERGE_HOOKS.append(lambda target, other: seen.append((target.id, other.id)))
    try:
        with app.app_context():
            services.merge_contacts(
                db.session.get(Contact, kept_id), db.session.get(Contact, duplicate_id)
            )
            db.session.commit()
    finally:
        services.MERGE_HOOKS.pop()
    assert seen == [(kept_id, duplicate_id)]


def test_merging_a_contact_with_itself_or_an_archived_one_is_refused(app, client, auth):
    kept_id, duplicate_id = two_karis(app)
    auth.login("staff")
    response = client.post(f"/contacts/{kept_id}/merge", data={"other_id": kept_id})
    assert "kan ikke slås sammen med seg selv" in text(response)
    client.post(f"/contacts/{kept_id}/merge", data={"other_id": duplicate_id})
    again = client.post(f"/contacts/{kept_id}/merge", data={"other_id": duplicate_id})
    assert "Arkiverte kontaktpersoner kan ikke slås sammen" in text(again)
    garbage = client.post(f"/contacts/{kept_id}/merge", data={"other_id": "x"})
    assert "Velg kontaktpersonen som skal slås sammen" in text(garbage)
    assert client.post(f"/contacts/{kept_id}/merge", data={"other_id": "424242"}).status_code == 404
    with app.app_context():
        assert db.session.get(Contact, kept_id).archived_at is None
