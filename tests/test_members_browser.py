"""Staff in Chromium: find a company as they type, fix a contact's phone, see it in the history."""

import re

import pytest

from tests.browser import login
from tests.factories import PASSWORD, make_company, make_contact, make_user

pytestmark = pytest.mark.browser


def test_search_company_edit_contact_phone_and_see_it_in_history(
    app, page, live_server, artifacts_dir
):
    with app.app_context():
        make_user("staff", email="kari@example.no")
        for name, municipality, employees in [
            ("Kongsvinger Mekaniske Verksted AS", ("3401", "Kongsvinger"), 85),
            ("Glåmdal Sagbruk AS", ("3417", "Grue"), 34),
            ("Odal Plastindustri AS", ("3415", "Sør-Odal"), 120),
            ("Eidskog Betong AS", ("3416", "Eidskog"), 22),
            ("Solør Trevare AS", ("3418", "Åsnes"), 48),
        ]:
            company = make_company(
                name,
                municipality_number=municipality[0],
                municipality_name=municipality[1],
                employees=employees,
                membership_status="member",
                postal_code="2212",
                postal_place="Kongsvinger",
            )
            if name.startswith("Kongsvinger"):
                target = company
        make_contact(
            "Åse",
            "Ødegård",
            email="ase@kmv.example.no",
            phone="+4791234567",
            job_title="Daglig leder",
            company_id=target.id,
            is_primary_contact=True,
            networks=["Produksjon", "HR"],
        )

    login(page, live_server, "kari@example.no", PASSWORD)
    page.goto(f"{live_server.url}/companies")
    page.screenshot(path=str(artifacts_dir / "companies-list.png"), full_page=True)

    # Search as you type: the table narrows without submitting the form.
    page.fill("input[name=q]", "meka")
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length === 1")
    page.click("#results >> text=Kongsvinger Mekaniske Verksted AS")
    page.wait_for_url(re.compile(r"/companies/\d+$"))
    page.screenshot(path=str(artifacts_dir / "company-detail.png"), full_page=True)

    page.click("text=Åse Ødegård")
    page.wait_for_url(re.compile(r"/contacts/\d+$"))
    contact_url = page.url
    page.goto(contact_url + "/edit")
    page.fill("input[name=phone]", "482 11 222")
    page.click("main form button[type=submit]:has-text('Lagre')")
    page.wait_for_url(contact_url)
    history = page.locator("ol.audit").first
    assert "+47 482 11 222" in page.content() or "+4748211222" in history.inner_text()
    assert "+4791234567" in history.inner_text()
    assert "+4748211222" in history.inner_text()
    assert "kari@example.no" in history.inner_text()
    page.screenshot(path=str(artifacts_dir / "contact-history.png"), full_page=True)
