"""In Chromium: a forgotten password reset from the login page through the emailed link,
and a new user's invitation from the admin's form to the first login."""

import re

import pytest

from crm.extensions import db
from crm.mail.models import EmailMessage
from tests.browser import login
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.browser

LINK = re.compile(r"http://127\.0\.0\.1:5000(/password/(?:reset|invite)/[A-Za-z0-9_.\-]+)")
NEW = "et helt nytt passord"


def _last_email(app, template: str) -> EmailMessage:
    with app.app_context():
        message = db.session.scalar(
            db.select(EmailMessage)
            .where(EmailMessage.template == template)
            .order_by(EmailMessage.id.desc())
        )
        db.session.expunge(message)
        return message


def _show_email(page, message, path):
    """The email's HTML part, as a mail program shows it (in a blank tab: the site's
    Content-Security-Policy would hide the email's inline styles)."""
    tab = page.context.new_page()
    try:
        tab.set_content(message.html_body)
        tab.screenshot(path=str(path), full_page=True)
    finally:
        tab.close()


def test_password_reset_from_the_login_page_through_the_email_link(
    app, page, live_server, artifacts_dir
):
    with app.app_context():
        make_user("staff", email="kari@example.no")
    page.goto(f"{live_server.url}/login")
    page.click("text=Glemt passordet?")
    page.wait_for_url(lambda url: url.endswith("/password/forgot"))
    page.screenshot(path=str(artifacts_dir / "accounts-forgot-password.png"), full_page=True)
    page.fill("input[name=email]", "kari@example.no")
    page.click("main form button[type=submit]")
    assert page.locator("h1").inner_text().startswith("Sjekk innboksen")
    page.screenshot(path=str(artifacts_dir / "accounts-reset-sent.png"), full_page=True)

    message = _last_email(app, "auth/password_reset")
    assert message.to_email == "kari@example.no"
    _show_email(page, message, artifacts_dir / "accounts-reset-email.png")
    path = LINK.search(message.text_body).group(1)
    page.goto(live_server.url + path)
    assert page.locator("h1").inner_text() == "Velg nytt passord"
    page.fill("input[name=password]", NEW)
    page.fill("input[name=confirm]", NEW)
    page.screenshot(path=str(artifacts_dir / "accounts-set-password.png"), full_page=True)
    page.click("main form button[type=submit]")
    page.wait_for_url(lambda url: url.endswith("/login"))
    assert "Passordet er lagret" in page.content()

    login(page, live_server, "kari@example.no", NEW)
    assert "/login" not in page.url and "/password" not in page.url  # logged in
    # The link worked once.
    page.goto(live_server.url + path)
    assert page.locator("h1").inner_text() == "Lenken virker ikke lenger"
    page.screenshot(path=str(artifacts_dir / "accounts-link-used.png"), full_page=True)


def test_a_new_users_invitation_from_the_admin_form_to_the_first_login(
    app, browser, page, live_server, artifacts_dir
):
    with app.app_context():
        make_user("admin", email="sjef@example.no")
    login(page, live_server, "sjef@example.no", PASSWORD)
    page.goto(f"{live_server.url}/admin/users/new")
    page.fill("input[name=email]", "nina@example.no")
    page.fill("input[name=name]", "Nina Ny")
    page.select_option("select[name=role]", "treasurer")
    page.screenshot(path=str(artifacts_dir / "accounts-new-user.png"), full_page=True)
    page.click("main form button[type=submit]")
    page.wait_for_url(lambda url: url.endswith("/admin/users"))
    content = page.content()
    assert "invitasjon" in content.lower() and "Invitert" in content
    assert not re.search(r"passord: \S+", content, re.IGNORECASE)
    page.screenshot(path=str(artifacts_dir / "accounts-user-invited.png"), full_page=True)

    message = _last_email(app, "auth/invitation")
    assert message.to_email == "nina@example.no" and "Nina Ny" in message.text_body
    path = LINK.search(message.text_body).group(1)

    nina = browser.new_context(viewport={"width": 390, "height": 844}, locale="nb-NO").new_page()
    try:
        _show_email(nina, message, artifacts_dir / "accounts-invitation-email.png")
        nina.goto(live_server.url + path)
        assert nina.locator("h1").inner_text() == "Velkommen til Klynge"
        nina.fill("input[name=password]", NEW)
        nina.fill("input[name=confirm]", NEW)
        nina.screenshot(path=str(artifacts_dir / "accounts-invitation-page.png"), full_page=True)
        nina.click("main form button[type=submit]")
        nina.wait_for_url(lambda url: url.endswith("/login"))
        login(nina, live_server, "nina@example.no", NEW)
        nina.goto(f"{live_server.url}/fees/")
        assert nina.locator("h1").first.is_visible()
        nina.screenshot(path=str(artifacts_dir / "accounts-invited-user-in.png"), full_page=True)
    finally:
        nina.context.close()
