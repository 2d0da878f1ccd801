"""The home page: each role lands on its own overview, and it costs the same number of
queries however much data there is."""

import re
from datetime import timedelta

from crm.extensions import db
from crm.followups.models import FollowUp
from crm.mail.models import EmailEvent
from crm.members.models import Activity
from crm.subscriptions.models import PendingSignup, Subscriber
from crm.timeutil import today_oslo, utcnow
from tests.cached_figures import counting_queries, forget_cached_figures
from tests.factories import make_company, make_contact, make_user

BOXES = re.compile(r'data-box="([a-z-]+)"')
STAFF_BOXES = {"followups", "upcoming", "subscribers", "mail-problems", "no-primary"}


def _boxes(response) -> set[str]:
    return set(BOXES.findall(response.get_data(as_text=True)))


def test_staff_land_on_their_day(client, auth):
    auth.login("staff")
    response = client.get("/", follow_redirects=True)
    assert response.request.path == "/home"
    boxes = _boxes(response)
    assert STAFF_BOXES <= boxes
    assert "fees" not in boxes and "health" not in boxes


def test_treasurers_land_on_the_fee_dashboard(client, auth):
    auth.login("treasurer")
    response = client.get("/", follow_redirects=True)
    assert response.request.path == "/fees/"
    assert client.get("/home").status_code == 403


def test_admins_see_the_staff_boxes_plus_fees_and_system_health(client, auth):
    auth.login("admin")
    response = client.get("/", follow_redirects=True)
    assert response.request.path == "/home"
    assert STAFF_BOXES | {"fees", "health"} <= _boxes(response)
    page = response.get_data(as_text=True)
    assert "newsletters" in page and "Siste kjøring av avstemmingen" in page


def test_login_sends_each_role_to_its_landing_page(app, client):
    with app.app_context():
        staff = make_user("staff")
    response = client.post("/login", data={"email": staff.email, "password": _password()})
    assert client.get(response.headers["Location"], follow_redirects=True).request.path == "/home"


def _password():
    from tests.factories import PASSWORD

    return PASSWORD


def test_my_due_follow_ups_come_first_then_everyone_elses(app, client, auth):
    me = auth.login("staff")
    today = today_oslo()
    with app.app_context():
        colleague = make_user("staff")
        company = make_company("Glåmdal Tre AS")
        db.session.add_all(
            [
                FollowUp(
                    what="Colleague's old call",
                    due_on=today - timedelta(days=9),
                    assignee_id=colleague.id,
                    company_id=company.id,
                ),
                FollowUp(
                    what="My call today", due_on=today, assignee_id=me.id, company_id=company.id
                ),
                FollowUp(
                    what="Not due yet",
                    due_on=today + timedelta(days=3),
                    assignee_id=me.id,
                    company_id=company.id,
                ),
                FollowUp(
                    what="Already done",
                    due_on=today - timedelta(days=1),
                    assignee_id=me.id,
                    company_id=company.id,
                    done_at=utcnow(),
                ),
            ]
        )
        db.session.commit()
    page = client.get("/home").get_data(as_text=True)
    box = page.split('data-box="followups"')[1].split("</section>")[0]
    assert box.index("My call today") < box.index("Colleague&#39;s old call")
    assert "Not due yet" not in box and "Already done" not in box
    assert "Forfalt" in box  # the colleague's is overdue


def test_members_without_a_primary_contact_are_listed(app, client, auth):
    auth.login("staff")
    with app.app_context():
        lonely = make_company("Ensom Industri AS", membership_status="member")
        covered = make_company("Dekket AS", membership_status="member")
        make_contact("Per", "Primær", company_id=covered.id, is_primary_contact=True)
        make_company("Prospekt AS", membership_status="prospect")
        lonely_id = lonely.id
    box = client.get("/home").get_data(as_text=True).split('data-box="no-primary"')[1]
    box = box.split("</section>")[0]
    assert f"/companies/{lonely_id}" in box
    assert "Dekket AS" not in box and "Prospekt AS" not in box


def _event(title: str, starts_at) -> None:
    from crm.events.models import Event, EventSession

    event = Event(title=title, published=True)
    event.sessions.append(EventSession(starts_at=starts_at, ends_at=starts_at + timedelta(hours=2)))
    db.session.add(event)


def test_upcoming_event_sessions_show_beside_meetings(app, client, auth):
    auth.login("staff")
    with app.app_context():
        _event("Styrketrening for ledere", utcnow() + timedelta(days=3))
        _event("Fjorårets seminar", utcnow() - timedelta(days=300))
        db.session.commit()
    box = client.get("/home").get_data(as_text=True).split('data-box="upcoming"')[1]
    assert "Styrketrening for ledere" in box and "Fjorårets seminar" not in box


def test_upcoming_meetings_bounces_and_new_subscribers_show(app, client, auth):
    auth.login("staff")
    today = today_oslo()
    with app.app_context():
        company = make_company("Møtebedrift AS")
        db.session.add(
            Activity(
                kind="meeting",
                occurred_on=today + timedelta(days=2),
                summary="Nettverksmøte logistikk",
                company_id=company.id,
            )
        )
        db.session.add(
            Activity(
                kind="meeting",
                occurred_on=today - timedelta(days=2),
                summary="Old meeting",
                company_id=company.id,
            )
        )
        person = make_contact("Siri", "Ny", email="siri@example.no")
        db.session.add(Subscriber(contact_id=person.id))
        db.session.add(EmailEvent(sg_event_id="e1", event="spamreport", email="sinna@example.no"))
        db.session.add(EmailEvent(sg_event_id="e2", event="delivered", email="glad@example.no"))
        db.session.commit()
    page = client.get("/home").get_data(as_text=True)
    assert "Nettverksmøte logistikk" in page and "Old meeting" not in page
    assert "sinna@example.no" in page and "glad@example.no" not in page
    assert "Siri Ny" in page


def _add_data(n: int, users) -> None:
    today = today_oslo()
    for i in range(n):
        company = make_company(f"Bedrift {n}-{i} AS", membership_status="member")
        contact = make_contact(
            "Person", f"{n}-{i}", email=f"p{n}-{i}@example.no", company_id=company.id
        )
        db.session.add_all(
            [
                FollowUp(
                    what=f"Ring {i}",
                    due_on=today - timedelta(days=i % 5),
                    assignee_id=users[i % len(users)],
                    company_id=company.id,
                    contact_id=contact.id,
                ),
                Activity(
                    kind="meeting",
                    occurred_on=today + timedelta(days=i % 9),
                    summary=f"Møte {i}",
                    company_id=company.id,
                ),
                Subscriber(contact_id=contact.id),
                PendingSignup(
                    nonce=f"n{n}-{i}", email=f"s{n}-{i}@example.no", wording_id=_wording_id()
                ),
                EmailEvent(sg_event_id=f"ev{n}-{i}", event="bounce", email=contact.email),
            ]
        )
        _event(f"Kurs {n}-{i}", utcnow() + timedelta(days=i % 7, hours=1))
    db.session.commit()


def _wording_id() -> int:
    from crm.subscriptions.topics import current_wording

    return current_wording().id


def test_the_home_page_costs_the_same_queries_with_little_or_much_data(app, client, auth):
    me = auth.login("admin")
    with app.app_context():
        users = [me.id] + [make_user("staff").id for _ in range(3)]
        _add_data(2, users)
    client.get("/home")  # warm caches (topics, wording)
    forget_cached_figures(app)  # but count the figures in the database
    with app.app_context(), counting_queries() as small:
        assert client.get("/home").status_code == 200
    with app.app_context():
        _add_data(40, users)
    forget_cached_figures(app)
    with app.app_context(), counting_queries() as large:
        assert client.get("/home").status_code == 200
    assert len(small) == len(large), (len(small), len(large))
    assert len(large) <= 30
    # Nothing changed since: the kept figures are read from Redis instead.
    with app.app_context(), counting_queries() as again:
        assert client.get("/home").status_code == 200
    assert len(again) < len(large)


def _newsletter_batch_sent(at) -> None:
    from crm.newsletters.models import NewsletterBatch
    from tests.factories import make_newsletter

    newsletter = make_newsletter("Sendt")
    db.session.add(
        NewsletterBatch(
            newsletter_id=newsletter.id, number=0, state="done", size=1, sent_at=at, updated_at=at
        )
    )
    db.session.commit()


def test_admins_are_told_when_sendgrids_events_stop_coming(app, client, auth, monkeypatch):
    """Sending through SendGrid, a newsletter went out two hours ago and no event has
    come since: the webhook is not reaching us, and the health box says so."""
    monkeypatch.setitem(app.config, "MAIL_BACKEND", "sendgrid")
    auth.login("admin")
    with app.app_context():
        old = EmailEvent(
            sg_event_id="old", event="delivered", received_at=utcnow() - timedelta(days=3)
        )
        db.session.add(old)
        _newsletter_batch_sent(utcnow() - timedelta(hours=2))
    page = client.get("/home").get_data(as_text=True)
    assert 'id="webhook-silent"' in page and "Trenger tilsyn" in page
    assert "Ingen hendelse fra SendGrid har kommet siden" in page

    with app.app_context():  # the webhook delivers again
        db.session.add(EmailEvent(sg_event_id="new", event="delivered", received_at=utcnow()))
        db.session.commit()
    page = client.get("/home").get_data(as_text=True)
    assert 'id="webhook-silent"' not in page
    assert "Siste hendelse fra SendGrid" in page


def test_a_newsletter_just_sent_or_another_mail_backend_raises_no_webhook_alarm(
    app, client, auth, monkeypatch
):
    auth.login("admin")
    with app.app_context():
        _newsletter_batch_sent(utcnow() - timedelta(minutes=10))  # events may still come
    monkeypatch.setitem(app.config, "MAIL_BACKEND", "sendgrid")
    page = client.get("/home").get_data(as_text=True)
    assert "Siste hendelse fra SendGrid" in page and 'id="webhook-silent"' not in page
    monkeypatch.setitem(app.config, "MAIL_BACKEND", "outbox")
    assert "Siste hendelse fra SendGrid" not in client.get("/home").get_data(as_text=True)


def test_a_merged_subscriber_counts_once_and_keeps_the_date_they_subscribed(app_ctx):
    from crm.home.services import new_people
    from crm.members.services import merge_contacts

    def subscriber(email: str, days_ago: int = 0):
        contact = make_contact(email=email)
        db.session.add(
            Subscriber(contact_id=contact.id, created_at=utcnow() - timedelta(days=days_ago))
        )
        db.session.commit()
        return contact

    since = utcnow() - timedelta(days=7)
    kept = subscriber("kari@example.no")
    merge_contacts(kept, subscriber("kari.nordmann@example.no"))
    db.session.commit()
    people = new_people(since)
    assert people.subscribers == 1
    assert [contact.id for _profile, contact in people.latest] == [kept.id]

    # A subscriber of a month ago merged into a contact who never subscribed is no new
    # subscriber: the survivor's profile (made by the merge) keeps the first date.
    never = make_contact("Ola", email="ola@example.no")
    merge_contacts(never, subscriber("ola.old@example.no", days_ago=30))
    db.session.commit()
    assert new_people(since).subscribers == 1
