"""Search folds Norwegian letters the way people type them (ø/o/oe, å/a/aa, æ/ae/a),
and a contact is also found by its company's name. Runs on SQLite and PostgreSQL."""

import pytest

from crm.extensions import db
from crm.members.search import fold
from tests.factories import make_company, make_contact


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Solor", "Solør"),
        ("soloer", "Solør"),
        ("glamdal", "Glåmdal"),
        ("Glaamdal", "Glåmdal"),
        ("baerekraft", "Bærekraft"),
        ("barekraft", "Bærekraft"),
        ("Aasnes", "Åsnes"),
        ("Sor-Odal", "Sør-Odal"),
    ],
)
def test_words_typed_without_norwegian_letters_fold_like_the_real_ones(typed, stored):
    assert fold(typed) == fold(stored)


def test_folding_twice_is_folding_once():
    for word in ("aae", "Glaaaamdal", "oeoe", "Bæ", "crème"):
        assert fold(fold(word)) == fold(word)


def _names(response) -> str:
    return response.get_data(as_text=True)


def test_company_search_finds_norwegian_letters_typed_plainly(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_company("Solør Bruk AS")
        make_company("Glåmdal Trykk AS")
        make_company("Bærekraft Consult AS")
        make_company("Annet Firma AS")
    for typed, expected in (
        ("Solor", "Solør Bruk AS"),
        ("soloer bruk", "Solør Bruk AS"),
        ("glamdal", "Glåmdal Trykk AS"),
        ("GLAAMDAL", "Glåmdal Trykk AS"),
        ("baerekraft", "Bærekraft Consult AS"),
        ("Solør", "Solør Bruk AS"),
    ):
        page = _names(client.get("/companies", query_string={"q": typed, "partial": "1"}))
        assert expected in page, typed
        assert "Annet Firma AS" not in page, typed


def test_contact_search_matches_the_company_name_too(app, client, auth):
    auth.login("staff")
    with app.app_context():
        solor = make_company("Solør Bruk AS")
        other = make_company("Kongsvinger Metall AS")
        make_contact("Kari", "Hansen", email="kari@solorbruk.example.no", company_id=solor.id)
        make_contact("Kari", "Berg", email="kari@metall.example.no", company_id=other.id)
        make_contact("Ørjan", "Ødegård", email="orjan@example.no")
    page = _names(client.get("/contacts", query_string={"q": "Solor", "partial": "1"}))
    assert "Kari Hansen" in page and "Kari Berg" not in page
    page = _names(client.get("/contacts", query_string={"q": "kari solør", "partial": "1"}))
    assert "Kari Hansen" in page and "Kari Berg" not in page
    page = _names(client.get("/contacts", query_string={"q": "oerjan odegard", "partial": "1"}))
    assert "Ørjan Ødegård" in page


def test_renaming_a_company_moves_its_contacts_in_search(app, client, auth):
    auth.login("staff")
    with app.app_context():
        company = make_company("Gammelt Navn AS")
        make_contact("Per", "Persen", company_id=company.id)
        company.name = "Glåmdal Nye AS"
        db.session.commit()
    page = _names(client.get("/contacts", query_string={"q": "glamdal", "partial": "1"}))
    assert "Per Persen" in page
    page = _names(client.get("/contacts", query_string={"q": "gammelt", "partial": "1"}))
    assert "Per Persen" not in page


def test_moving_a_contact_to_another_company_updates_its_search(app, client, auth):
    auth.login("staff")
    with app.app_context():
        first = make_company("Eidskog Plast AS")
        second = make_company("Åsnes Tre AS")
        person = make_contact("Liv", "Lund", company_id=first.id)
        person.company_id = second.id
        db.session.commit()
    page = _names(client.get("/contacts", query_string={"q": "asnes", "partial": "1"}))
    assert "Liv Lund" in page
    page = _names(client.get("/contacts", query_string={"q": "eidskog", "partial": "1"}))
    assert "Liv Lund" not in page
