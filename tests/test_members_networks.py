"""The cluster's professional networks: who is in them, and keeping them current."""

from crm.audit import history_for
from crm.extensions import db
from crm.members.models import Network
from crm.timeutil import utcnow
from tests.factories import make_company, make_contact


def text(response) -> str:
    return response.get_data(as_text=True)


def test_network_list_counts_current_contacts(app, client, auth):
    with app.app_context():
        make_contact("Kari", "Nordmann", networks=["Logistikk", "HR"])
        make_contact("Ola", "Hansen", networks=["Logistikk"])
        make_contact("Gammel", "Arkiv", networks=["Logistikk"], archived_at=utcnow())
        logistikk = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
        url = f"/networks/{logistikk.id}"
    auth.login("treasurer")
    body = text(client.get("/networks"))
    row = body[body.index("Logistikk") :]
    assert ">2</a>" in row[: row.index("</tr>")]
    detail = text(client.get(url))
    assert "Kari Nordmann" in detail and "Ola Hansen" in detail and "Gammel" not in detail


def test_staff_create_and_rename_a_network(app, client, auth):
    auth.login("staff")
    response = client.post(
        "/networks/new", data={"name": "Energi", "description": "Energikostnader", "active": "y"}
    )
    assert response.status_code == 302
    with app.app_context():
        energi = db.session.scalar(db.select(Network).filter_by(name="Energi"))
        assert energi.slug == "energi" and energi.active
        url = f"/networks/{energi.id}"
    client.post(url + "/edit", data={"name": "Energi og klima", "description": ""})
    with app.app_context():
        renamed = db.session.get(Network, energi.id)
        assert (renamed.name, renamed.active) == ("Energi og klima", False)
        assert history_for(renamed)[0].changes["name"] == ["Energi", "Energi og klima"]


def test_network_names_are_unique(app, client, auth):
    auth.login("staff")
    response = client.post("/networks/new", data={"name": "logistikk"})
    assert "Et nettverk med det navnet finnes allerede" in text(response)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Network.id))) == 5


def test_inactive_networks_are_not_offered_for_new_contacts(app, client, auth):
    with app.app_context():
        hr = db.session.scalar(db.select(Network).filter_by(name="HR"))
        hr.active = False
        db.session.commit()
        member = make_contact("Kari", "Nordmann", networks=[hr], company=make_company())
        edit_url = f"/contacts/{member.id}/edit"
    auth.login("staff")
    assert ">HR<" not in text(client.get("/contacts/new"))
    assert ">HR<" in text(client.get(edit_url))


def test_treasurer_cannot_edit_networks(app, client, auth):
    auth.login("treasurer")
    assert "Nytt nettverk" not in text(client.get("/networks"))
    assert client.get("/networks/new").status_code == 403
    assert client.post("/networks/1/edit", data={"name": "x"}).status_code == 403


def test_network_page_pages_through_its_members(app, client, auth):
    app.config["PAGE_SIZE"] = 2
    try:
        with app.app_context():
            for first in ("Anne", "Berit", "Cecilie"):
                make_contact(first, "Hansen", networks=["HR"])
            hr = db.session.scalar(db.select(Network.id).filter_by(name="HR"))
        auth.login("staff")
        first_page = text(client.get(f"/networks/{hr}"))
        assert "Anne Hansen" in first_page and "Cecilie Hansen" not in first_page
        assert f'href="/networks/{hr}?page=2"' in first_page
        assert "Cecilie Hansen" in text(client.get(f"/networks/{hr}?page=2"))
    finally:
        app.config["PAGE_SIZE"] = 50
