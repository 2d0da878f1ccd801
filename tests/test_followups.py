"""Follow-ups: added on a company or contact page, done, listed, audited; the morning
digest reaches each user once a morning."""

from datetime import datetime, timedelta

from sqlalchemy import func, select

from crm.audit import AuditEntry
from crm.auth.models import User
from crm.extensions import db
from crm.followups import services, tasks
from crm.followups.models import FollowUp
from crm.mail.models import EmailMessage
from crm.timeutil import OSLO, today_oslo
from tests.factories import make_company, make_contact, make_user


def _followup(what="Ring tilbake", days=0, **fields) -> FollowUp:
    followup = FollowUp(what=what, due_on=today_oslo() + timedelta(days=days), **fields)
    db.session.add(followup)
    db.session.commit()
    db.session.refresh(followup)
    return followup


def test_staff_add_a_follow_up_from_a_company_page_and_see_it_there(app, client, auth):
    me = auth.login("staff")
    with app.app_context():
        company = make_company("Kongsvinger Metall AS")
    page = client.get(f"/companies/{company.id}").get_data(as_text=True)
    assert f"/followups/new?company={company.id}" in page
    due = (today_oslo() + timedelta(days=14)).isoformat()
    response = client.post(
        "/followups/new",
        data={
            "company": company.id,
            "what": "Send tilbud på LEAN",
            "due_on": due,
            "assignee": me.id,
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/companies/{company.id}")
    page = client.get(f"/companies/{company.id}").get_data(as_text=True)
    assert "Send tilbud på LEAN" in page
    with app.app_context():
        followup = db.session.scalar(select(FollowUp))
        assert followup.assignee_id == me.id and followup.company_id == company.id
        entries = db.session.scalars(
            select(AuditEntry).where(AuditEntry.record_type == "follow_up")
        ).all()
        assert [e.action for e in entries] == ["create"]
        assert entries[0].changes["what"] == [None, "Send tilbud på LEAN"]


def test_a_contacts_follow_up_also_shows_on_its_company(app, client, auth):
    me = auth.login("staff")
    with app.app_context():
        company_id = make_company("Eidskog Plast AS").id
        contact_id = make_contact("Ola", "Plast", company_id=company_id).id
    due = today_oslo().isoformat()
    client.post(
        "/followups/new",
        data={"contact": contact_id, "what": "Ring Ola", "due_on": due, "assignee": me.id},
    )
    assert "Ring Ola" in client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert "Ring Ola" in client.get(f"/companies/{company_id}").get_data(as_text=True)


def test_a_follow_up_without_what_or_date_is_refused_with_a_message(app, client, auth):
    me = auth.login("staff")
    with app.app_context():
        company = make_company()
    response = client.post(
        "/followups/new",
        data={"company": company.id, "what": "", "due_on": "31.02.2026", "assignee": me.id},
    )
    assert response.status_code == 200
    assert "field-error" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(FollowUp.id))) == 0


def test_marking_done_and_reopening_is_audited(app, client, auth):
    me = auth.login("staff")
    with app.app_context():
        company = make_company()
        followup = _followup(company_id=company.id, assignee_id=me.id)
    assert client.post(f"/followups/{followup.id}/done").status_code == 302
    with app.app_context():
        assert db.session.get(FollowUp, followup.id).done_by_id == me.id
    client.post(f"/followups/{followup.id}/reopen")
    with app.app_context():
        assert db.session.get(FollowUp, followup.id).done_at is None
        actions = db.session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.record_type == "follow_up")
            .order_by(AuditEntry.id)
        ).all()
        assert actions == ["create", "update", "update"]


def test_the_list_shows_mine_by_default_and_filters_by_person_state_and_due(app, client, auth):
    me = auth.login("staff")
    with app.app_context():
        other = make_user("staff", email="kollega@example.no")
        company = make_company()
        _followup("Min gamle", days=-3, company_id=company.id, assignee_id=me.id)
        _followup("Min neste måned", days=30, company_id=company.id, assignee_id=me.id)
        _followup("Kollegas", days=0, company_id=company.id, assignee_id=other.id)
        done = _followup("Min ferdige", days=-1, company_id=company.id, assignee_id=me.id)
        done.done_at = datetime.now(OSLO)
        db.session.commit()
        other_id = other.id
    page = client.get("/followups").get_data(as_text=True)
    assert "Min gamle" in page and "Min neste måned" in page
    assert "Kollegas" not in page and "Min ferdige" not in page
    page = client.get("/followups?assignee=&due=overdue").get_data(as_text=True)
    assert "Min gamle" in page and "Min neste måned" not in page and "Kollegas" not in page
    page = client.get(f"/followups?assignee={other_id}").get_data(as_text=True)
    assert "Kollegas" in page and "Min gamle" not in page
    page = client.get("/followups?state=done").get_data(as_text=True)
    assert "Min ferdige" in page and "Min gamle" not in page


def test_the_morning_digest_is_queued_once_per_user_even_when_run_twice(app):
    with app.app_context():
        company = make_company()
        kari = make_user("staff", email="kari@example.no")
        per = make_user("staff", email="per@example.no")
        quiet = make_user("staff", email="quiet@example.no")
        nothing_due = make_user("staff", email="ledig@example.no")
        quiet.followup_digest = False
        db.session.commit()
        _followup("Kari 1", days=-2, company_id=company.id, assignee_id=kari.id)
        _followup("Kari 2", days=0, company_id=company.id, assignee_id=kari.id)
        _followup("Per 1", days=0, company_id=company.id, assignee_id=per.id)
        _followup("Quiet 1", days=0, company_id=company.id, assignee_id=quiet.id)
        _followup("Later", days=5, company_id=company.id, assignee_id=nothing_due.id)
        assert tasks.send_digests() == 2
        assert tasks.send_digests() == 0
        messages = db.session.scalars(
            select(EmailMessage).where(EmailMessage.category == "followup-digest")
        ).all()
        assert sorted(m.to_email for m in messages) == ["kari@example.no", "per@example.no"]
        kari_mail = next(m for m in messages if m.to_email == "kari@example.no")
        assert "Kari 1" in kari_mail.text_body and "Kari 2" in kari_mail.text_body
        assert "2 oppfølginger" in kari_mail.subject


def test_the_digest_job_is_enqueued_once_a_morning_from_seven(app):
    from crm.queue import get_queue

    with app.app_context():
        early = datetime(2026, 12, 7, 6, 30, tzinfo=OSLO)
        assert tasks.digest_due(early) is None
        morning = datetime(2026, 12, 7, 7, 5, tzinfo=OSLO)
        assert tasks.digest_due(morning) == "followup-digest-2026-12-07"
        assert tasks.digest_due(morning + timedelta(hours=2)) is None
        assert tasks.digest_due(morning + timedelta(days=1)) == "followup-digest-2026-12-08"
        assert get_queue("default").count == 2


def test_turning_the_digest_off_and_on(app, client, auth):
    me = auth.login("staff")
    client.post("/followups/digest", data={"enabled": ""})
    with app.app_context():
        assert db.session.get(User, me.id).followup_digest is False
    client.post("/followups/digest", data={"enabled": "y"})
    with app.app_context():
        assert db.session.get(User, me.id).followup_digest is True


def test_bulk_follow_ups_are_created_with_one_audit_entry_each(app):
    with app.app_context():
        user = make_user("staff")
        companies = [make_company(f"Bulk {i} AS").id for i in range(5)]
        created = services.bulk_create(
            "company",
            companies,
            what="Inviter til frokostmøte",
            due_on=today_oslo(),
            assignee=user,
            user=user,
        )
        db.session.commit()
        assert created == 5
        rows = db.session.scalars(select(FollowUp)).all()
        assert sorted(f.company_id for f in rows) == sorted(companies)
        entries = db.session.scalars(
            select(AuditEntry).where(AuditEntry.record_type == "follow_up")
        ).all()
        assert sorted(e.record_id for e in entries) == sorted(f.id for f in rows)


def test_an_activity_records_who_took_part_and_its_follow_up(app, client, auth):
    from crm.members.models import Activity

    me = auth.login("staff")
    with app.app_context():
        company_id = make_company("Odal Plast AS").id
        kari = make_contact("Kari", "Plast", company_id=company_id).id
        ola = make_contact("Ola", "Plast", company_id=company_id).id
        make_contact("Per", "Plast", company_id=company_id)
    due = (today_oslo() + timedelta(days=14)).isoformat()
    response = client.post(
        f"/companies/{company_id}/activities",
        data={
            "kind": "meeting",
            "occurred_on": today_oslo().isoformat(),
            "summary": "Bedriftsbesøk",
            "participants": [kari, ola],
            "followup_what": "Ring tilbake om LEAN-kurset",
            "followup_due_on": due,
            "followup_assignee": me.id,
        },
    )
    assert response.status_code == 302
    with app.app_context():
        activity = db.session.scalar(select(Activity))
        assert sorted(c.id for c in activity.participants) == sorted([kari, ola])
        followup = db.session.scalar(select(FollowUp))
        assert followup.activity_id == activity.id and followup.company_id == company_id
        assert followup.assignee_id == me.id and followup.what == "Ring tilbake om LEAN-kurset"
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "activity"))
        assert sorted(entry.changes["participants"][1]) == ["Kari Plast", "Ola Plast"]
    page = client.get(f"/companies/{company_id}").get_data(as_text=True)
    assert "Kari Plast" in page.split('id="activities"')[1] and "Ring tilbake om LEAN" in page


def test_an_activity_follow_up_without_a_date_is_refused_and_nothing_is_saved(app, client, auth):
    from crm.members.models import Activity

    auth.login("staff")
    with app.app_context():
        contact_id = make_contact("Solo", "Person").id
    response = client.post(
        f"/contacts/{contact_id}/activities",
        data={
            "kind": "call",
            "occurred_on": today_oslo().isoformat(),
            "summary": "Telefon",
            "followup_what": "Ring igjen",
        },
    )
    assert response.status_code == 200 and "field-error" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(Activity.id))) == 0
        assert db.session.scalar(select(func.count(FollowUp.id))) == 0
