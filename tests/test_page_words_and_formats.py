"""What staff read on the pages: the cluster's own words for things, and numbers, phone
numbers and amounts written the Norwegian way (found in a review of every page)."""

import re

from crm.events.models import Registration
from crm.extensions import db
from tests.events_factories import make_event
from tests.factories import make_company, make_fee_settings, make_invoiced_members


def _text(response) -> str:
    """The page's text without tags, spaces folded (as a person reads it)."""
    html = response.get_data(as_text=True)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_an_event_is_an_arrangement_on_the_events_list_and_the_home_page(app, client, auth):
    # "Event" was translated for the email log ("Hendelse": a delivery event), and that
    # word headed the events list and labelled every event on the home page.
    with app.app_context():
        make_event("Styrketrening: automasjon")
    auth.login("admin")
    events = client.get("/events").get_data(as_text=True)
    assert "<th>Arrangement</th>" in events and "Hendelse" not in events
    home = client.get("/home").get_data(as_text=True)
    assert "Styrketrening: automasjon" in home
    assert "Arrangement</span>" in home and "Hendelse" not in home


def test_a_registrants_phone_number_is_grouped_on_the_event_page(app, client, auth):
    with app.app_context():
        event = make_event("Nettverksmøte HR")
        db.session.add(
            Registration(
                event_id=event.id,
                name="Kari Nordmann",
                email="kari@example.no",
                phone="+4791234567",
            )
        )
        db.session.commit()
        event_id = event.id
    auth.login("staff")
    page = _text(client.get(f"/events/{event_id}"))
    assert "+47 91 23 45 67" in page and "+4791234567" not in page
    # Staff cancel a registration with "Meld av" ("Avbryt" is a form's cancel button).
    assert "Meld av" in page and "Avbryt" not in page


def test_invoices_show_the_organisation_number_in_groups_of_three(app, client, auth):
    with app.test_request_context():
        invoice = make_invoiced_members(1)[0]
        orgnr, invoice_id = invoice.customer_orgnr, invoice.id
    grouped = f"{orgnr[:3]} {orgnr[3:6]} {orgnr[6:]}"
    auth.login("treasurer")
    assert grouped in _text(client.get("/fees/invoices"))
    assert grouped in _text(client.get(f"/fees/invoices/{invoice_id}"))


def test_nothing_credited_or_refunded_is_no_negative_amount_in_the_accounting_summary(
    app, client, auth
):
    with app.test_request_context():
        make_invoiced_members(1)
    auth.login("treasurer")
    page = _text(client.get("/fees/accounting"))
    assert "Kreditert kr 0,00" in page and "Tilbakebetalt kr 0,00" in page
    assert "−kr 0,00" not in page


def test_the_invoice_filter_checkbox_sits_beside_its_words(app, client, auth):
    auth.login("treasurer")
    page = client.get("/fees/invoices").get_data(as_text=True)
    # The same markup as the company list's "Vis arkiverte": box and words on one line.
    assert re.search(
        r'<div class="filter-check">\s*<label class="check"><input type="checkbox" name="refund"',
        page,
    )


def test_the_results_report_tables_look_like_every_other_table(app, client, auth):
    with app.app_context():
        make_company("Medlem AS", membership_status="member", member_since=None)
    auth.login("staff")
    page = client.get("/reports/").get_data(as_text=True)
    if "<table" not in page:  # the index may lead to the current year's report
        page = client.get("/reports/", follow_redirects=True).get_data(as_text=True)
    tables = re.findall(r"<table class=\"([^\"]*)\"", page)
    assert tables and all("data" in classes.split() for classes in tables), tables


def test_the_history_tells_the_organisation_form_code_from_its_name(app, client, auth):
    with app.app_context():
        company = make_company("Kodeform AS", org_form_code="AS", org_form_name="Aksjeselskap")
        company_id = company.id
    auth.login("staff")
    page = _text(client.get(f"/companies/{company_id}"))
    assert "Organisasjonsformkode — → AS" in page
    assert "Organisasjonsform — → Aksjeselskap" in page


def test_the_fee_settings_history_names_the_joining_rule_in_words(app, client, auth):
    with app.app_context():
        make_fee_settings()
    auth.login("treasurer")
    page = client.get("/fees/settings").get_data(as_text=True)
    # The stored code ("year") in the history, in the form's words.
    assert "Kontingent for hele året" in page.split("Historikk", 1)[-1]
    assert not re.search(r">\s*year\s*<", page)


def test_the_event_form_calls_its_rows_what_its_heading_calls_them(app, client, auth):
    auth.login("staff")
    page = _text(client.get("/events/new"))
    assert "Økter Én rad per økt." in page


def test_the_newsletter_archive_has_the_public_pages_header_in_both_languages(app, client, auth):
    # It had the staff pages' dark bar (with the staff menu to anyone logged in), unlike
    # the signup and event pages a reader comes from.
    from crm.newsletters import services
    from tests.factories import make_newsletter, make_subscriber

    with app.app_context():
        make_subscriber("kari@example.no")
        newsletter = make_newsletter("Vårnytt fra klyngen", in_archive=True)
        services.start_sending(newsletter)
        db.session.commit()
        newsletter_id = newsletter.id
    auth.login("staff")
    listing = client.get("/nyhetsbrev?lang=en").get_data(as_text=True)
    assert '<header class="public-top' in listing and "mainnav" not in listing
    assert "Newsletter archive" in listing
    # English is kept from the list to the newsletter, and Norsk is one click away.
    assert f'href="/nyhetsbrev/{newsletter_id}?lang=en"' in listing
    detail = client.get(f"/nyhetsbrev/{newsletter_id}?lang=en").get_data(as_text=True)
    assert '<header class="public-top' in detail and "mainnav" not in detail
    assert f'href="/nyhetsbrev/{newsletter_id}?lang=nb">Norsk</a>' in detail


def test_an_invitations_cant_come_page_has_the_event_pages_footer(app, client):
    # It had the newsletter signup's footer ("Nyhetsbrevet fra industriklyngen · ingen
    # sporing, ingen reklame") under an event invitation.
    from crm.events.invitations import invitation_token
    from tests.factories import make_contact

    with app.test_request_context():
        event = make_event("Nettverksmøte HR")
        contact = make_contact("Kari", "Nordmann", email="kari@example.no")
        url = f"/arrangementer/{event.id}/kan-ikke/{invitation_token(event.id, contact.id)}"
    for page_url in (url, f"/arrangementer/{event.id}/kan-ikke/ugyldig"):
        page = _text(client.get(page_url))
        assert "Klyngens arrangementer" in page and "ingen sporing" not in page, page_url
