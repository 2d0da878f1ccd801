"""What a new subscriber and the staff behind them met: a reload that mailed again, a
welcome promised twice, topics in a different order on each page, English words in
the consent history, and the company typed at signup left unmatched."""

import pytest
from werkzeug.datastructures import MultiDict

from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import render_stored
from crm.members.models import Contact
from crm.subscriptions import ledger, links, staff_consent, subscribers
from crm.subscriptions.models import PendingSignup
from crm.subscriptions.topics import topic_by_slug
from scripts.subscribe_smoke import fill_signup, parse_forms, signup_form
from tests.factories import make_company, make_subscriber, make_user, run_signup_job
from tests.test_subscriptions_signup import confirmation_path


@pytest.fixture
def quick_forms(app, monkeypatch):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)


def _signup(client, company="", topics=("generelt",), lang=""):
    page = client.get(f"/subscribe{lang}")
    form = signup_form(page.get_data(as_text=True))
    fields = [(k, v) for k, v in fill_signup(form, "Kari Nordmann", "kari@example.no")]
    fields = [(k, v) for k, v in fields if k not in ("company", "topics")]
    fields += [("company", company)] + [("topics", t) for t in topics]
    return client.post(form["action"], data=MultiDict(fields))


def _count(model, *where) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model).where(*where))


def test_reloading_the_check_your_inbox_page_sends_no_second_confirmation(app, client, quick_forms):
    response = _signup(client)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/subscribe?sent=1")
    for _reload in range(3):  # F5 on the answer page is a GET now
        page = client.get(response.headers["Location"])
        assert "Sjekk innboksen" in page.get_data(as_text=True)
    run_signup_job(app)
    with app.app_context():
        assert _count(PendingSignup) == 1
        assert _count(EmailMessage, EmailMessage.template == "subscriptions/confirm") == 1


def test_embedded_and_english_forms_keep_their_mode_after_the_redirect(app, client, quick_forms):
    response = _signup(client, lang="?embed=1&lang=en")
    location = response.headers["Location"]
    assert "embed=1" in location and "lang=en" in location
    page = client.get(location)
    assert "Check your inbox" in page.get_data(as_text=True)
    assert "frame-ancestors *" in page.headers.get("Content-Security-Policy", "")
    # Each way in keeps its own answer page, one signup after another.
    assert _signup(client).headers["Location"].endswith("/subscribe?sent=1")
    english = _signup(client, lang="?lang=en").headers["Location"]
    assert english.endswith("/subscribe?sent=1&lang=en")


def test_opening_the_confirm_link_again_promises_no_second_welcome(app, client, quick_forms):
    _signup(client)
    path = confirmation_path(app)
    first = client.post(path).get_data(as_text=True)
    assert "velkomst-e-post er på vei" in first
    again = client.post(path).get_data(as_text=True)
    also = client.get(path).get_data(as_text=True)
    for page in (again, also):
        assert "velkomst-e-post er på vei" not in page
        assert "Du bekreftet denne påmeldingen tidligere" in page
    with app.app_context():
        assert _count(EmailMessage, EmailMessage.template == "subscriptions/welcome") == 1

    # After an unsubscribe the old link does not claim the person is subscribed.
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        links.unsubscribe(contact, ip=None)
        db.session.commit()
    after = client.get(path).get_data(as_text=True)
    assert "Du er påmeldt" not in after and "meldt deg av siden" in after


def _topic_names(html: str, names=("Generelt", "Bærekraft", "Logistikk", "Produksjon")):
    found = [(html.find(name), name) for name in names if name in html]
    return [name for _at, name in sorted(found)]


def test_topics_are_in_one_order_on_every_page_and_email(app, client, auth, quick_forms):
    expected = ["Generelt", "Bærekraft", "Logistikk", "Produksjon"]
    assert _topic_names(client.get("/subscribe").get_data(as_text=True)) == expected
    _signup(client, topics=("produksjon", "generelt", "logistikk", "baerekraft"))
    path = confirmation_path(app)
    confirm_page = client.get(path).get_data(as_text=True)
    confirmed_page = client.post(path).get_data(as_text=True)
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        user = make_user("staff")
        # Consent given again in a scrambled order: the ledger's order must not show.
        ledger.withdraw_all(contact, source="staff", user=user)
        for slug in ("produksjon", "logistikk", "generelt", "baerekraft"):
            staff_consent.record_staff_consent(
                contact, [topic_by_slug(slug)], user=user, channel="phone", note="ok"
            )
        db.session.commit()
        assert [t.name for t in ledger.subscribed_topics(contact)] == expected
        token, contact_id = links.link_token(contact), contact.id
        for template in ("subscriptions/confirm", "subscriptions/welcome"):
            message = db.session.scalar(
                db.select(EmailMessage).where(EmailMessage.template == template)
            )
            render_stored(message)  # the confirmation is written by its send job
            assert _topic_names(message.text_body) == expected, template
    assert _topic_names(confirm_page) == expected
    assert _topic_names(confirmed_page) == expected
    assert _topic_names(client.get(f"/preferences/{token}").get_data(as_text=True)) == expected
    assert _topic_names(client.get(f"/unsubscribe/{token}").get_data(as_text=True)) == expected
    auth.login("staff")
    contact_page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    panel = contact_page[contact_page.index('id="consent"') :]
    panel = panel[: panel.index("consent-history-head")]
    assert _topic_names(panel) == expected


def test_consent_history_reads_in_norwegian(app, client, auth):
    auth.login("staff")
    with app.app_context():
        contact = make_subscriber("kari@example.no", topics=("generelt",))
        user = make_user("staff")
        links.unsubscribe(contact, ip="192.0.2.1")
        staff_consent.record_staff_consent(
            contact,
            [topic_by_slug("generelt")],
            user=user,
            channel="in_person",
            note="På seminaret",
        )
        db.session.commit()
        contact_id = contact.id
    page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    history = page[page.index("consent-history-head") :]
    assert "unsubscribe link" not in history and "in_person" not in history
    assert "Via avmeldingslenken i en e-post" in history
    assert "Personlig: På seminaret" in history
    # The change history names who changed what in words, not "public".
    assert ">public<" not in page


def test_the_company_typed_at_signup_is_matched_and_suggested_to_staff(
    app, client, auth, quick_forms
):
    with app.app_context():
        company = make_company(name="Kongsvinger Sag AS")
        company_id = company.id
        make_company(name="Kongsvinger Sagbruk AS")  # similar, not the same
    _signup(client, company="kongsvinger sag")
    client.post(confirmation_path(app))
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        contact_id = contact.id
        assert subscribers.suggested_company(contact).id == company_id

    auth.login("staff")
    page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert "Samsvarer med firmaet" in page and "Kongsvinger Sag AS" in page
    [form] = [
        f for f in parse_forms(page) if f["action"].endswith(f"/{contact_id}/company-from-signup")
    ]
    response = client.post(form["action"], data=MultiDict(form["fields"]))
    assert response.status_code == 302
    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        assert contact.company_id == company_id
        assert subscribers.suggested_company(contact) is None  # linked: nothing to suggest
    page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert "Samsvarer med firmaet" not in page


def test_a_company_suggestion_needs_one_clear_match_and_cannot_be_forged(
    app, client, auth, quick_forms
):
    with app.app_context():
        make_company(name="Grue Bygg AS")
        make_company(name="Grue Bygg ASA")  # two records with the same name: no guess
        other = make_company(name="Åsnes Rør AS")
        contact = make_subscriber("ola@example.no")
        profile = subscribers.subscriber_profile(contact, create=True)
        profile.company_name = "Grue Bygg"
        db.session.commit()
        assert subscribers.suggested_company(contact) is None
        assert subscribers.company_matching(other.orgnr).id == other.id  # by orgnr
        assert subscribers.company_matching("Åsnes rør, AS").id == other.id
        assert subscribers.company_matching("") is None
        contact_id, other_id = contact.id, other.id
    auth.login("staff")
    response = client.post(
        f"/contacts/{contact_id}/company-from-signup", data={"company_id": str(other_id)}
    )
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Contact, contact_id).company_id is None
    auth.logout()
    auth.login("treasurer")
    assert (
        client.post(
            f"/contacts/{contact_id}/company-from-signup", data={"company_id": str(other_id)}
        ).status_code
        == 403
    )
