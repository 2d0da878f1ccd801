"""In Chromium: staff narrow the contact list to newsletter subscribers without a company
through the filter form, and read a company's engagement over the years on its page
(screenshots of both in test-artifacts/)."""

from datetime import date

import pytest
from playwright.sync_api import expect

from crm.extensions import db
from crm.members.models import Activity
from crm.subscriptions.models import Subscriber
from crm.timeutil import today_oslo
from tests.browser import login
from tests.factories import PASSWORD, make_company, make_contact, make_subscriber, make_user

pytestmark = pytest.mark.browser


def _seed() -> int:
    this = today_oslo().year
    company = make_company(
        "Kongsvinger Støperi AS", membership_status="member", member_since=date(this - 3, 2, 1)
    )
    make_subscriber(
        "kari@stoperi.example.no", topics=("generelt", "logistikk"),
        first_name="Kari", last_name="Støper", company_id=company.id, networks=["Logistikk"],
    )  # fmt: skip
    for i, name in enumerate(("Siri Sveis", "Tor Tre", "Åse Ås")):
        first, last = name.split()
        person = make_subscriber(f"abonnent{i}@example.no", first_name=first, last_name=last)
        db.session.add(Subscriber(contact_id=person.id, company_name=f"{last} og sønn"))
    make_contact("Pia", "Privat", email="pia@example.no")
    for year, kinds in ((this, ("meeting", "call")), (this - 1, ("meeting", "meeting", "email"))):
        for month, kind in enumerate(kinds, start=1):
            db.session.add(
                Activity(
                    kind=kind,
                    occurred_on=date(year, month, 10),
                    summary="Oppfølging",
                    company_id=company.id,
                )
            )
    db.session.commit()
    return company.id


def test_subscriber_filter_and_engagement_panel(app, page, live_server, artifacts_dir):
    with app.app_context():
        company_id = _seed()
        user = make_user("staff", email="staff2@example.no")
        email = user.email
    login(page, live_server, email, PASSWORD)

    page.goto(f"{live_server.url}/contacts")
    page.select_option("select#topic", "any")
    page.select_option("select#kind", "none")
    page.click("form.list-toolbar button[type=submit]")
    page.wait_for_url(lambda url: "kind=none" in url and "topic=any" in url)
    # The results are replaced as the form changes (live search): wait for the last.
    expect(page.locator("#results table.data tbody tr")).to_have_count(3)
    text = page.locator("#results").inner_text()
    assert "Sveis og sønn" in text and "Pia Privat" not in text and "Kari Støper" not in text
    page.screenshot(path=str(artifacts_dir / "contacts-subscriber-filter.png"), full_page=True)

    page.goto(f"{live_server.url}/companies/{company_id}")
    panel = page.locator("#engagement")
    assert "Engasjement gjennom årene" in panel.inner_text()
    this = today_oslo().year
    assert panel.locator(f'tr[data-year="{this - 1}"] [data-meetings]').inner_text() == "2"
    page.screenshot(path=str(artifacts_dir / "company-engagement.png"), full_page=True)
    panel.screenshot(path=str(artifacts_dir / "company-engagement-panel.png"))
