"""Search terms follow the records: names, orgnr, email and phone as people type them."""

from crm.extensions import db
from crm.members.models import Company, Contact
from crm.members.search import matching_ids, query_words
from tests.factories import make_company, make_contact


def _found(model, query):
    ids = matching_ids(model.__tablename__, query)
    return set(
        db.session.scalars(
            db.select(model.name if model is Company else model.last_name).where(model.id.in_(ids))
        )
    )


def test_company_found_by_word_prefix_and_orgnr(app):
    with app.app_context():
        company = make_company("Kongsvinger Mekaniske Verksted AS")
        make_company("Grue Bygg AS")
        assert _found(Company, "meka") == {"Kongsvinger Mekaniske Verksted AS"}
        assert _found(Company, "kongs verk") == {"Kongsvinger Mekaniske Verksted AS"}
        assert _found(Company, "kongs mek verk") == {"Kongsvinger Mekaniske Verksted AS"}
        assert _found(Company, "kongs mek grue") == set()
        assert _found(Company, company.orgnr[:5]) == {"Kongsvinger Mekaniske Verksted AS"}
        assert _found(Company, "xyz") == set()


def test_renamed_company_is_found_by_its_new_name_only(app):
    with app.app_context():
        company = make_company("Gammelt Navn AS")
        company.name = "Nytt Navn AS"
        db.session.commit()
        assert _found(Company, "gammelt") == set()
        assert _found(Company, "nytt") == {"Nytt Navn AS"}


def test_contact_found_by_email_phone_and_name(app):
    with app.app_context():
        make_contact("Åse", "Ødegård", email="ase.odegard@example.no", phone="+4791234567")
        assert _found(Contact, "ødeg") == {"Ødegård"}
        assert _found(Contact, "ase.odegard@ex") == {"Ødegård"}
        assert _found(Contact, "912 34") == {"Ødegård"}
        assert _found(Contact, "+47 912") == {"Ødegård"}
        assert _found(Contact, "example.no") == {"Ødegård"}


def test_query_words_ignores_empty_and_caps_length():
    assert query_words("   ") == []
    # (Not "a": search folds "aa" to "a", the old spelling of "å".)
    assert query_words("b" * 1000) == ["b" * 200]
    assert query_words("+47 912 34 567") == ["4791234567"]
