"""A network's page: members with search, adding and removing them, leaders, meetings,
mailings, and "write to the network"."""

import re

from sqlalchemy import select

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members.models import Activity, Company, Contact, Network, contact_network
from tests.factories import make_company, make_contact, make_newsletter


def _network(name="Logistikk") -> Network:
    return db.session.scalar(select(Network).where(Network.name == name))


def _members(network_id: int) -> set[int]:
    return set(
        db.session.scalars(
            select(contact_network.c.contact_id).where(contact_network.c.network_id == network_id)
        )
    )


def test_the_page_lists_members_and_their_companies_and_searches_them(app, client, auth):
    auth.login("staff")
    with app.app_context():
        solor = make_company("Solør Bruk AS")
        glamdal = make_company("Glåmdal Trykk AS")
        make_contact("Kari", "Hansen", company_id=solor.id, networks=["Logistikk"])
        make_contact("Ola", "Berg", company_id=glamdal.id, networks=["Logistikk"])
        make_contact("Utenfor", "Nettverk", company_id=solor.id)
        network_id = _network().id
    page = client.get(f"/networks/{network_id}").get_data(as_text=True)
    assert "Kari Hansen" in page and "Ola Berg" in page and "Utenfor Nettverk" not in page
    companies = page.split('id="companies"')[1].split("</section>")[0]
    assert "Solør Bruk AS" in companies and "Glåmdal Trykk AS" in companies
    found = client.get(f"/networks/{network_id}?q=glåmdal").get_data(as_text=True)
    members = found.split('id="members"')[1].split("</section>")[0]
    assert "Ola Berg" in members and "Kari Hansen" not in members


def _companies_panel(client, network_id: int) -> str:
    page = client.get(f"/networks/{network_id}").get_data(as_text=True)
    panel = page.split('id="companies">')[1].split("</section>")[0]
    panel = panel.replace(" · Potensielt medlem", "")  # the companies are prospects
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", panel)).strip()


def test_the_companies_panel_counts_members_and_follows_every_change(app, client, auth):
    from crm.timeutil import utcnow

    auth.login("staff")
    with app.app_context():
        solor = make_company("Solør Bruk AS").id
        glamdal = make_company("Glåmdal Trykk AS").id
        kari = make_contact("Kari", "Hansen", company_id=solor, networks=["Logistikk"]).id
        make_contact("Per", "Hansen", company_id=solor, networks=["Logistikk"])
        ola = make_contact("Ola", "Berg", company_id=glamdal, networks=["Logistikk"]).id
        network_id = _network().id
    assert _companies_panel(client, network_id) == (
        "Bedrifter 2 Glåmdal Trykk AS 1 medlem Solør Bruk AS 2 medlemmer"
    )
    client.post(f"/networks/{network_id}/members/{kari}/remove")
    assert "Solør Bruk AS 1 medlem" in _companies_panel(client, network_id)
    with app.app_context():
        db.session.get(Contact, ola).archived_at = utcnow()
        db.session.get(Company, solor).name = "Solør Bruk og Sag AS"
        db.session.commit()
    assert _companies_panel(client, network_id) == "Bedrifter 1 Solør Bruk og Sag AS 1 medlem"


def test_the_companies_panel_counts_companies_up_to_a_cap(app, client, auth, monkeypatch):
    from crm.members import network_pages

    monkeypatch.setattr(network_pages, "COMPANIES_SHOWN", 2)
    auth.login("staff")
    with app.app_context():
        for name in ("Alfa AS", "Beta AS", "Gamma AS", "Delta AS"):
            make_contact("Kari", name, company_id=make_company(name).id, networks=["HR"])
        network_id = _network("HR").id
    assert _companies_panel(client, network_id) == (
        "Bedrifter 4 Alfa AS 1 medlem Beta AS 1 medlem Alle 4 bedrifter"
    )
    monkeypatch.setattr(network_pages, "COMPANIES_COUNT_CAP", 3)
    assert _companies_panel(client, network_id) == (
        "Bedrifter 3+ Alfa AS 1 medlem Beta AS 1 medlem Mer enn 3 bedrifter"
    )


def test_staff_add_a_contact_by_email_and_a_company_by_name_and_remove_one(app, client, auth):
    auth.login("staff")
    with app.app_context():
        company = make_company("Eidskog Mølle AS")
        a = make_contact("A", "Mølle", company_id=company.id, email="a@molle.example.no").id
        b = make_contact("B", "Mølle", company_id=company.id).id
        solo = make_contact("Solo", "Person", email="solo@example.no").id
        network_id = _network("HR").id
    client.post(f"/networks/{network_id}/members", data={"who": "SOLO@example.no"})
    client.post(f"/networks/{network_id}/members", data={"who": "Eidskog Mølle AS"})
    with app.app_context():
        assert _members(network_id) == {a, b, solo}
    client.post(f"/networks/{network_id}/members/{b}/remove")
    with app.app_context():
        assert _members(network_id) == {a, solo}
        changes = [
            e.changes
            for e in db.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.record_type == "contact", AuditEntry.record_id == b
                )
            )
            if "networks" in e.changes
        ]
        assert changes[-1] == {"networks": [["HR"], []]}
    response = client.post(f"/networks/{network_id}/members", data={"who": "ingen@example.no"})
    assert response.status_code == 200 and "field-error" in response.get_data(as_text=True)


def test_members_can_be_named_leaders_and_the_change_is_audited(app, client, auth):
    auth.login("staff")
    with app.app_context():
        leader = make_contact("Leder", "Person", networks=["Produksjon"]).id
        outsider = make_contact("Ikke", "Medlem").id
        network_id = _network("Produksjon").id
    client.post(f"/networks/{network_id}/leaders/{leader}")
    refused = client.post(f"/networks/{network_id}/leaders/{outsider}", follow_redirects=True)
    assert "Bare medlemmer" in refused.get_data(as_text=True)
    page = client.get(f"/networks/{network_id}").get_data(as_text=True)
    assert "Leder Person" in page.split('id="network-leaders"')[1].split("</p>")[0]
    with app.app_context():
        network = db.session.get(Network, network_id)
        assert [c.id for c in network.leaders] == [leader]
        entry = db.session.scalars(
            select(AuditEntry).where(
                AuditEntry.record_type == "network", AuditEntry.record_id == network_id
            )
        ).all()[-1]
        assert entry.changes["leaders"] == [[], ["Leder Person"]]


def test_meetings_and_mailings_show_and_write_to_the_network_prefills_the_audience(
    app, client, auth
):
    auth.login("staff")
    with app.app_context():
        network_id = _network().id
        other_id = _network("HR").id
        make_newsletter(subject="Til logistikk", network_ids=(network_id,))
        make_newsletter(subject="Til HR", network_ids=(other_id,))
    client.post(
        f"/networks/{network_id}/meetings",
        data={"kind": "meeting", "occurred_on": "2026-12-10", "summary": "Nettverksmøte desember"},
    )
    with app.app_context():
        assert db.session.scalar(select(Activity.network_id)) == network_id
    page = client.get(f"/networks/{network_id}").get_data(as_text=True)
    assert "Nettverksmøte desember" in page
    mailings = page.split('id="mailings"')[1].split("</section>")[0]
    assert "Til logistikk" in mailings and "Til HR" not in mailings
    assert f"/newsletters/new?network={network_id}" in page
    form = client.get(f"/newsletters/new?network={network_id}").get_data(as_text=True)
    checked = re.findall(r'<input checked id="networks-\d+" [^>]*value="(\d+)"', form)
    assert checked == [str(network_id)]


def test_a_search_of_odd_characters_on_the_network_page_is_no_error(app, client, auth):
    auth.login("staff")
    with app.app_context():
        network_id = _network().id
    for q in ("-", "ø" * 500, "1-2", "@", "%00", "æ æ", "kari 00", "00 00"):
        assert client.get(f"/networks/{network_id}", query_string={"q": q}).status_code == 200
