"""A person subscribes in Chromium, on a phone and on a desktop screen."""

import re

import pytest

from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import render_stored
from crm.members.models import Contact
from crm.subscriptions import ledger, subscribers
from tests.factories import run_signup_job

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


def confirm_path(app) -> str:
    run_signup_job(app)
    with app.app_context():
        message = db.session.scalar(
            db.select(EmailMessage).where(EmailMessage.template == "subscriptions/confirm")
        )
        render_stored(message)  # written by the send job, as the worker would (not saved)
        return re.search(r"/subscribe/confirm/\S+", message.text_body).group(0)


def test_subscribing_on_a_phone(app, phone, live_server, artifacts_dir, monkeypatch):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)
    phone.goto(f"{live_server.url}/subscribe")
    assert phone.locator("h1").inner_text() == "Vi holder deg oppdatert"
    # Nothing sticks out sideways on a narrow screen.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(artifacts_dir / "subscribe-phone.png"), full_page=True)

    phone.fill("input[name=name]", "Kari Nordmann")
    phone.fill("input[name=email]", "kari@example.no")
    phone.fill("input[name=company]", "Glåmdal Sag AS")
    phone.get_by_text("Logistikk", exact=True).click()
    phone.locator("input[name=consent]").check()
    phone.get_by_role("button", name="Meld meg på").click()
    phone.wait_for_selector("text=Sjekk innboksen din")
    phone.screenshot(path=str(artifacts_dir / "subscribe-phone-sent.png"))

    phone.goto(live_server.url + confirm_path(app))
    phone.get_by_role("button", name="Ja, meld meg på").click()
    phone.wait_for_selector("text=Du er påmeldt")
    with app.app_context():
        contact = db.session.scalar(db.select(Contact).filter_by(email="kari@example.no"))
        assert sorted(t.slug for t in ledger.subscribed_topics(contact)) == [
            "generelt",
            "logistikk",
        ]
        assert subscribers.subscriber_profile(contact).company_name == "Glåmdal Sag AS"


def test_the_form_on_a_desktop_screen_and_embedded(app, page, live_server, artifacts_dir):
    page.goto(f"{live_server.url}/subscribe")
    page.screenshot(path=str(artifacts_dir / "subscribe-desktop.png"), full_page=True)
    # Submitting without a name or consent shows the errors in place.
    page.get_by_role("button", name="Meld meg på").click()
    # count() does not wait: on a busy machine it looked before the answer page came.
    page.locator(".field-error").nth(1).wait_for()
    assert page.locator(".field-error").count() >= 2
    page.goto(f"{live_server.url}/subscribe?lang=en")
    assert page.locator("h1").inner_text() == "Stay updated"
    page.set_viewport_size({"width": 640, "height": 900})
    page.goto(f"{live_server.url}/subscribe?embed=1")
    assert page.locator(".public-top").count() == 0
    page.screenshot(path=str(artifacts_dir / "subscribe-embedded.png"), full_page=True)
    # The honeypot is out of sight for people.
    assert not page.locator("input[name=website]").is_visible() or (
        page.locator("input[name=website]").bounding_box()["x"] < 0
    )
