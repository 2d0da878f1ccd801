"""Staff's day in Chromium: the home page, 30 contacts selected across two pages of a
filtered list and added to a network, and a newsletter written to that network."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.followups.models import FollowUp
from crm.mail.models import EmailEvent
from crm.members.models import Activity, Network, contact_network
from crm.timeutil import today_oslo
from tests.browser import login
from tests.factories import PASSWORD, make_company, make_contact, make_subscriber, make_user

pytestmark = pytest.mark.browser


def _seed() -> dict:
    staff = make_user("staff", email="kari@example.no")
    staff.name = "Kari Nordmann"
    colleague = make_user("staff", email="per@example.no")
    colleague.name = "Per Hansen"
    db.session.commit()
    solor = make_company("Solør Bruk AS", membership_status="member", employees=140)
    other = make_company("Kongsvinger Metall AS", membership_status="member", employees=60)
    make_company("Eidskog Betong AS", membership_status="member", employees=22)
    for i in range(40):
        make_subscriber(
            email=f"ansatt{i:02d}@solorbruk.example.no",
            first_name="Ansatt",
            last_name=f"Nummer {i:02d}",
            company_id=solor.id,
            job_title="Operatør",
        )
    for i in range(5):
        make_contact("Metall", f"Arbeider {i}", company_id=other.id, is_primary_contact=i == 0)
    today = today_oslo()
    db.session.add_all(
        [
            FollowUp(
                what="Ring om LEAN-kurset",
                due_on=today,
                assignee_id=staff.id,
                company_id=solor.id,
            ),
            FollowUp(
                what="Send tilbud på medlemskap",
                due_on=today - timedelta(days=3),
                assignee_id=staff.id,
                company_id=other.id,
            ),
            FollowUp(
                what="Følg opp styremøtet",
                due_on=today - timedelta(days=1),
                assignee_id=colleague.id,
                company_id=other.id,
            ),
            Activity(
                kind="meeting",
                occurred_on=today + timedelta(days=4),
                summary="Nettverksmøte logistikk",
                company_id=solor.id,
            ),
            EmailEvent(sg_event_id="b1", event="bounce", email="gammel@firma.example.no"),
        ]
    )
    db.session.commit()
    network = db.session.scalar(select(Network).where(Network.name == "Logistikk"))
    return {"network_id": network.id}


def test_staff_select_30_contacts_on_two_pages_add_them_to_a_network_and_write_to_it(
    app, page, live_server, artifacts_dir
):
    with app.app_context():
        seeded = _seed()
    app.config["PAGE_SIZE"] = 20
    try:
        login(page, live_server, "kari@example.no", PASSWORD)
        assert page.url.endswith("/home")
        page.screenshot(path=str(artifacts_dir / "home-staff.png"), full_page=True)
        assert page.locator('[data-box="followups"]').inner_text().count("Ring om LEAN") == 1

        # A filtered list: the contacts of Solør Bruk, 40 of them on two pages of 20.
        page.goto(f"{live_server.url}/contacts?company=Solor")
        page.wait_for_selector("#bulk-form")
        assert "40 kontaktpersoner" in page.locator(".result-count").inner_text()
        page.check("input[data-select-page]")  # all 20 on page 1
        page.click("nav.pagination >> text=2")
        page.wait_for_url(re.compile(r"page=2"))
        boxes = page.locator("input.row-select")
        for i in range(10):
            boxes.nth(i).check()
        page.wait_for_function(
            "() => document.querySelector('[data-bulk-count]').textContent.startsWith('30 ')"
        )
        page.screenshot(path=str(artifacts_dir / "contacts-bulk-selection.png"), full_page=True)
        page.select_option("#bulk-form select[name=action]", "network_add")
        page.click("#bulk-form button[type=submit]")

        page.wait_for_selector("select[name=target_network]")
        page.select_option("select[name=target_network]", str(seeded["network_id"]))
        page.click("button[value=preview]")
        page.wait_for_selector(".preview-count")
        assert page.locator(".preview-count").get_attribute("data-count") == "30"
        page.screenshot(path=str(artifacts_dir / "bulk-preview.png"), full_page=True)
        page.click("button[data-bulk-apply]")
        page.wait_for_url(re.compile(r"/contacts\?"))
        assert "30 endret" in page.locator(".flashes").inner_text()

        with app.app_context():
            members = db.session.scalar(
                select(func.count()).where(contact_network.c.network_id == seeded["network_id"])
            )
            assert members == 30

        page.goto(f"{live_server.url}/networks/{seeded['network_id']}")
        assert "30" in page.locator("#members .count").inner_text()
        page.screenshot(path=str(artifacts_dir / "network-page.png"), full_page=True)

        page.click("#write-to-network")
        page.wait_for_url(re.compile(r"/newsletters/new\?network="))
        checked = page.locator("#networks input:checked")
        assert checked.count() == 1
        assert checked.get_attribute("value") == str(seeded["network_id"])
        page.fill("input[name=subject]", "Invitasjon til nettverksmøte i logistikk")
        body = "Velkommen til nettverksmøte 14. januar på Kongsvinger kunnskapspark."
        page.fill("textarea[name=body]", body)
        page.screenshot(path=str(artifacts_dir / "network-newsletter-form.png"), full_page=True)
        page.click("button.primary[type=submit]")
        page.wait_for_url(re.compile(r"/newsletters/\d+$"))
        page.screenshot(path=str(artifacts_dir / "network-newsletter.png"), full_page=True)
        page.goto(f"{live_server.url}/networks/{seeded['network_id']}")
        assert "Invitasjon til nettverksmøte" in page.locator("#mailings").inner_text()
    finally:
        app.config["PAGE_SIZE"] = 50
