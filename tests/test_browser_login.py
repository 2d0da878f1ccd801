"""A person logs in with Chromium: from a staff page they come back to it, from the
login page they land on their role's overview."""

import pytest

from tests.browser import login
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.browser


def test_login_in_chromium_reaches_the_company_list(app, page, live_server, artifacts_dir):
    with app.app_context():
        make_user("staff", email="kari@example.no")
    page.goto(f"{live_server.url}/companies")
    assert "/login" in page.url
    page.screenshot(path=str(artifacts_dir / "login.png"))
    # The login form the redirect showed: after it, the page that was asked for.
    page.fill("input[name=email]", "kari@example.no")
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url("**/companies")
    assert page.locator("h1").first.inner_text() == "Bedrifter"


def test_staff_who_open_the_login_page_land_on_their_overview(app, page, live_server):
    with app.app_context():
        make_user("staff", email="kari@example.no")
    login(page, live_server, "kari@example.no", PASSWORD)
    assert page.url.endswith("/home")
