"""The contact list narrowed by newsletter consent (the ledger's current state) and by
whether people belong to a company: subscribers without a company apart from company
contacts, with search, order, pages, export and "all N matching" bulk selection."""

import csv
import io

from sqlalchemy import select

from crm.extensions import db
from crm.members.models import Network, contact_network
from crm.subscriptions import ledger
from crm.subscriptions.models import Subscriber
from crm.subscriptions.topics import topic_by_slug
from tests.factories import make_company, make_contact, make_subscriber

NAMES = ("Siri Abonnent", "Kari Nordmann", "Ola Hansen", "Tore Trukket", "Pia Privat")


def _seed(app) -> None:
    """Siri: public subscriber (general), no company. Kari: company contact subscribed
    to general and Logistikk. Ola: company contact, no consent. Tore: no company, general
    consent withdrawn. Pia: no company, no consent."""
    with app.app_context():
        grue = make_company("Grue Bygg AS")
        siri = make_subscriber("siri@example.no", first_name="Siri", last_name="Abonnent")
        db.session.add(Subscriber(contact_id=siri.id, company_name="Siris Sveis"))
        make_subscriber(
            "kari@grue.example.no",
            topics=("generelt", "logistikk"),
            first_name="Kari",
            last_name="Nordmann",
            company_id=grue.id,
        )
        make_contact("Ola", "Hansen", email="ola@grue.example.no", company_id=grue.id)
        tore = make_subscriber("tore@example.no", first_name="Tore", last_name="Trukket")
        ledger.record_event(tore, topic_by_slug("generelt"), "withdrawn", "email_link")
        make_contact("Pia", "Privat", email="pia@example.no")
        db.session.commit()


def _listed(client, query: str) -> list[str]:
    body = client.get("/contacts?partial=1&" + query).get_data(as_text=True)
    return sorted((n for n in NAMES if n in body), key=body.index)


def test_topic_filter_lists_those_with_active_consent_now(app, client, auth):
    _seed(app)
    auth.login("staff")
    assert _listed(client, "topic=generelt") == ["Siri Abonnent", "Kari Nordmann"]
    assert _listed(client, "topic=logistikk") == ["Kari Nordmann"]
    assert _listed(client, "topic=any") == ["Siri Abonnent", "Kari Nordmann"]
    # A withdrawn consent no longer counts; an unknown topic matches nobody.
    assert "Tore Trukket" not in _listed(client, "topic=generelt")
    assert _listed(client, "topic=finnes-ikke") == []


def test_subscribers_without_a_company_are_seen_apart_from_company_contacts(app, client, auth):
    _seed(app)
    auth.login("staff")
    assert _listed(client, "kind=none&topic=any") == ["Siri Abonnent"]
    assert _listed(client, "kind=none") == ["Siri Abonnent", "Pia Privat", "Tore Trukket"]
    assert _listed(client, "kind=company") == ["Ola Hansen", "Kari Nordmann"]
    page = client.get("/contacts?kind=none&topic=any").get_data(as_text=True)
    # Marked as a subscriber, with the company typed on the signup form and the topics.
    assert "Abonnent" in page and "Siris Sveis" in page and "Generelt" in page
    assert 'name="topic"' in page and 'name="kind"' in page


def test_consent_filter_works_with_search_and_sorting(app, client, auth):
    _seed(app)
    auth.login("staff")
    assert _listed(client, "topic=generelt&q=kari") == ["Kari Nordmann"]
    assert _listed(client, "topic=generelt&q=ola") == []
    assert _listed(client, "topic=generelt&sort=-name") == ["Kari Nordmann", "Siri Abonnent"]
    assert _listed(client, "topic=generelt&sort=email") == ["Kari Nordmann", "Siri Abonnent"]


def test_consent_filter_pages_and_counts(app, client, auth):
    auth.login("staff")
    with app.app_context():
        for i in range(55):
            make_subscriber(
                f"abonnent{i:02d}@example.no", first_name="Abonnent", last_name=f"{i:02d}"
            )
        make_contact("Uten", "Samtykke", email="uten@example.no")
        page_size = app.config["PAGE_SIZE"]
    first = client.get("/contacts?topic=generelt&kind=none").get_data(as_text=True)
    assert "55 kontaktpersoner" in first
    second = client.get("/contacts?topic=generelt&kind=none&page=2").get_data(as_text=True)
    assert f"Abonnent {page_size:02d}" in second and "Uten Samtykke" not in second
    # Page links keep the filter.
    assert "topic=generelt" in first.split('class="pagination', 1)[-1]


def test_export_follows_the_consent_filter(app, client, auth):
    _seed(app)
    auth.login("staff")
    page = client.get("/contacts?topic=generelt&kind=company").get_data(as_text=True)
    assert "/contacts/export.csv?" in page and "topic=generelt" in page
    response = client.get("/contacts/export.csv?topic=generelt&kind=company")
    rows = list(
        csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff")), delimiter=";")
    )
    emails = {cell for row in rows[1:] for cell in row if "@" in cell}
    assert emails == {"kari@grue.example.no"}


def test_all_matching_a_consent_filter_selects_exactly_those(app, client, auth):
    _seed(app)
    auth.login("staff")
    with app.app_context():
        network_id = db.session.scalar(select(Network.id).where(Network.name == "HR"))
    form = {"action": "network_add", "target_network": network_id, "all_matching": "1"}
    form |= {"topic": "any", "kind": "none"}
    preview = client.post("/contacts/bulk", data={**form, "step": "preview"})
    assert 'data-count="1"' in preview.get_data(as_text=True)
    response = client.post("/contacts/bulk", data={**form, "step": "apply"})
    assert response.status_code == 302
    assert "topic=any" in response.headers["Location"]
    with app.app_context():
        members = db.session.scalars(
            select(contact_network.c.contact_id).where(contact_network.c.network_id == network_id)
        ).all()
        siri = db.session.scalar(
            select(Subscriber.contact_id).where(Subscriber.company_name == "Siris Sveis")
        )
        assert members == [siri]
