"""What the company and contact tables show: links, numbers, phones, the filter dropdowns."""

import re

from crm.extensions import db
from crm.members.models import Company
from crm.members.normalize import format_phone
from tests.factories import make_company, make_contact


def text(response) -> str:
    return response.get_data(as_text=True)


def municipality_options(body: str) -> list[str]:
    select = re.search(r'<select id="municipality".*?</select>', body, re.S)[0]
    return re.findall(r'<option value="(\d{4})"', select)


def test_rows_link_to_their_records_also_when_the_app_is_mounted_under_a_prefix(app, client, auth):
    with app.app_context():
        company = make_company("Grue Bygg AS")
        person = make_contact("Kari", "Nordmann", company_id=company.id)
        company_id, person_id = company.id, person.id
    auth.login("staff")
    for base in ("http://localhost", "http://localhost/crm"):
        prefix = base.removeprefix("http://localhost")
        companies = text(client.get("/companies", base_url=base))
        assert f'<a href="{prefix}/companies/{company_id}">Grue Bygg AS</a>' in companies
        contacts = text(client.get("/contacts?partial=1", base_url=base))
        assert f'<a href="{prefix}/contacts/{person_id}">Kari Nordmann</a>' in contacts
        assert f'<a href="{prefix}/companies/{company_id}">Grue Bygg AS</a>' in contacts


def test_employee_counts_and_phone_numbers_are_grouped_for_reading(app, client, auth):
    with app.app_context():
        make_company("Stor AS", employees=1250)
        make_company("Liten AS", employees=999)
        make_contact("Kari", "Mobil", phone="+4791234567")
        make_contact("Ola", "Fast", phone="+4722123456")
        make_contact("Sven", "Svensk", phone="+46701234567")
    auth.login("staff")
    companies = text(client.get("/companies"))
    assert "1\u00a0250" in companies and ">999<" in companies
    contacts = text(client.get("/contacts"))
    for shown in ("+47 91 23 45 67", "+47 22 12 34 56", "+46 70 123 45 67"):
        assert shown in contacts
    assert format_phone("not a number") == "not a number"


def test_municipality_filter_follows_companies_that_are_added_or_move(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_company("Hamar Stål AS", municipality_number="3403", municipality_name="Hamar")
    assert "3403" in municipality_options(text(client.get("/companies")))

    with app.app_context():
        company = db.session.scalar(db.select(Company).filter_by(name="Hamar Stål AS"))
        company.municipality_number, company.municipality_name = "3405", "Lillehammer"
        db.session.commit()
    options = municipality_options(text(client.get("/contacts")))
    assert "3405" in options and "3403" not in options
    # The region's seven come first either way.
    assert options[:7] == ["3401", "3414", "3415", "3416", "3417", "3418", "3419"]
