"""A person logs in with Chromium and lands on the company list."""

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
    login(page, live_server, "kari@example.no", PASSWORD)
    assert page.url.endswith("/companies")
    assert page.locator("h1").first.inner_text() == "Bedrifter"
