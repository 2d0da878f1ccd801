"""Acceptance 5 (first half): on a phone a person registers from the public page, gets the
confirmation email (an .eml in the outbox), and cancels through its link; screenshots
of the public event page and of the staff event page."""

import email
import email.policy
import re

import pytest

from crm.events.models import Registration
from crm.extensions import db
from tests.browser import login
from tests.events_factories import make_event
from tests.factories import PASSWORD, make_company, make_user

pytestmark = pytest.mark.browser


@pytest.fixture
def phone(browser, live_server, app):
    app.config["WTF_CSRF_ENABLED"] = True
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="nb-NO",
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
    app.config["WTF_CSRF_ENABLED"] = False


def _seminar(app):
    with app.app_context():
        company = make_company("Glåmdal Sag AS", membership_status="member")
        event = make_event(
            "Styrketrening: automasjon i små verksteder",
            capacity=20,
            description="Frokostseminar.\n\n* Robotceller\n* Erfaringer fra to medlemmer",
        )
        return event.id, company.orgnr


def _only_eml(outbox):
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 1, files
    return email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)


def test_registering_and_cancelling_on_a_phone(
    app, phone, live_server, outbox, run_worker, artifacts_dir, monkeypatch
):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)
    event_id, orgnr = _seminar(app)
    phone.goto(f"{live_server.url}/arrangementer")
    phone.get_by_role("link", name="Styrketrening: automasjon i små verksteder").click()
    phone.wait_for_selector("h1:has-text('Styrketrening')")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(artifacts_dir / "events-public-phone.png"), full_page=True)

    phone.fill("input[name=name]", "Kari Nordmann")
    phone.fill("input[name=email]", "kari@example.no")
    phone.fill("input[name=phone]", "912 34 567")
    phone.fill("input[name=company]", f"Glåmdal Sag AS ({orgnr})")
    phone.select_option("select[name=participant_type]", "member_employee")
    phone.fill("textarea[name=note]", "Vegetar")
    phone.locator("input[name=terms]").check()
    phone.get_by_role("button", name="Meld meg på").click()
    phone.wait_for_selector("text=Du er påmeldt")
    phone.screenshot(path=str(artifacts_dir / "events-public-phone-registered.png"))

    run_worker()
    message = _only_eml(outbox)
    assert message["To"].addresses[0].addr_spec == "kari@example.no"
    assert message["Subject"].startswith("Påmeldt: Styrketrening")
    calendars = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert len(calendars) == 1
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"https?://\S+/arrangementer/pamelding/\S+", text).group(0)
    path = link.split("/arrangementer/", 1)[1]

    phone.goto(f"{live_server.url}/arrangementer/{path}")
    phone.wait_for_selector("h1:has-text('Din påmelding')")
    phone.screenshot(path=str(artifacts_dir / "events-manage-phone.png"), full_page=True)
    phone.get_by_role("button", name="Meld meg av").click()
    phone.wait_for_selector("text=Du er avmeldt")
    with app.app_context():
        registration = db.session.scalar(db.select(Registration))
        assert registration.status == "cancelled"
        assert registration.company.orgnr == orgnr
        assert registration.note == "Vegetar"


def test_the_staff_event_page_on_a_desktop(app, page, live_server, artifacts_dir):
    from crm.events import services

    event_id, _orgnr = _seminar(app)
    with app.app_context():
        event = services.lock_event(event_id)
        event.capacity = 3
        for n, name in enumerate(
            ["Anne Berg", "Bjørn Dahl", "Cecilie Eng", "Dag Fossum", "Eva Gran"]
        ):
            services.register(
                event_id, name=name, email=f"p{n}@example.no", company_name="Eksempel AS"
            )
        db.session.commit()
        user = make_user("staff", email="events-staff@example.no")
    login(page, live_server, user.email, PASSWORD)
    page.goto(f"{live_server.url}/events/{event_id}")
    page.wait_for_selector("h2:has-text('Venteliste')")
    page.screenshot(path=str(artifacts_dir / "events-staff-event.png"), full_page=True)
    page.goto(f"{live_server.url}/events")
    page.screenshot(path=str(artifacts_dir / "events-staff-list.png"), full_page=True)
    page.goto(f"{live_server.url}/events/month")
    page.screenshot(path=str(artifacts_dir / "events-staff-month.png"), full_page=True)
    page.goto(f"{live_server.url}/events/{event_id}/edit")
    page.screenshot(path=str(artifacts_dir / "events-staff-form.png"), full_page=True)
    assert PASSWORD  # logged in through the real form


def test_staff_check_in_participants_and_issue_certificates(
    app, browser, live_server, artifacts_dir
):
    """On a phone-sized screen at the door: search, tap to check in, undo; then, on the
    event page, certificates for those who came often enough."""
    from datetime import timedelta

    from crm.events.models import Certificate
    from crm.mail.models import EmailMessage
    from crm.timeutil import utcnow

    with app.app_context():
        company = make_company("Kurs AS", membership_status="member")
        start = (utcnow() - timedelta(days=1)).replace(hour=7, minute=0, second=0, microsecond=0)
        event = make_event(
            "LEAN grunnkurs", sessions=1, starts_at=start, completion_percent=100, capacity=10
        )
        for name in ("Anne Berg", "Bjørn Dahl", "Cecilie Eng"):
            db.session.add(
                Registration(
                    event_id=event.id,
                    name=name,
                    email=f"{name.split()[0].lower()}@example.no",
                    company_id=company.id,
                    status="confirmed",
                )
            )
        db.session.commit()
        event_id = event.id
        user = make_user("staff", email="checkin-staff@example.no")
    app.config["WTF_CSRF_ENABLED"] = True
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="nb-NO"
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        login(page, live_server, user.email, PASSWORD)
        page.goto(f"{live_server.url}/events/{event_id}/checkin")
        page.get_by_role("button", name="Anne Berg").click()
        page.wait_for_selector("text=1 av 3 til stede")
        page.fill("input[name=q]", "bjørn")
        page.get_by_role("button", name="Søk").click()
        page.get_by_role("button", name="Bjørn Dahl").click()
        page.wait_for_selector("text=2 av 3 til stede")
        page.get_by_role("button", name="Bjørn Dahl").click()  # undo
        page.wait_for_selector("text=1 av 3 til stede")
        page.goto(f"{live_server.url}/events/{event_id}/checkin")
        page.screenshot(path=str(artifacts_dir / "events-checkin-phone.png"), full_page=True)

        page.set_viewport_size({"width": 1366, "height": 900})
        page.goto(f"{live_server.url}/events/{event_id}")
        page.get_by_role("button", name="Utsted kursbevis").click()
        page.wait_for_selector("text=1 kursbevis utstedt")
        page.screenshot(path=str(artifacts_dir / "events-staff-certificates.png"), full_page=True)

        # Cancelling Anne, who came and has her certificate: asked first, nothing changed.
        anne = page.locator("tr", has_text="Anne Berg")
        anne.get_by_role("button", name="Meld av").click()
        page.wait_for_selector("text=Avmelde påmeldingen?")
        page.screenshot(path=str(artifacts_dir / "events-cancel-checked-in.png"), full_page=True)
        page.get_by_role("button", name="Avmeld og slett oppmøtet").click()
        page.wait_for_selector(
            "text=oppmøtet på 1 samling er slettet og kursbeviset trukket tilbake"
        )
        page.screenshot(path=str(artifacts_dir / "events-cancelled-cleared.png"), full_page=True)
    finally:
        context.close()
        app.config["WTF_CSRF_ENABLED"] = False
    with app.app_context():
        assert db.session.scalars(db.select(Certificate)).all() == []  # revoked with the seat
        message = db.session.scalar(
            db.select(EmailMessage).where(EmailMessage.template == "events/certificate")
        )
        (artifacts_dir / "events-certificate.pdf").write_bytes(message.attachments[0].content)
