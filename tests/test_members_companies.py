"""Staff keep company records: find, filter, sort, export, create, edit, archive."""

import csv
import io
from datetime import date

import openpyxl

from crm.audit import AuditEntry, history_for
from crm.extensions import db
from crm.members import panels
from crm.members.models import Activity, Company
from crm.members.normalize import format_phone
from crm.timeutil import today_oslo, utcnow
from tests.factories import make_company, make_contact, unique_orgnr

VALID_ORGNR = "923609016"


def text(response) -> str:
    return response.get_data(as_text=True)


def company(name: str):
    return db.session.scalar(db.select(Company).filter_by(name=name))


def company_form(**fields) -> dict:
    data = {
        "orgnr": VALID_ORGNR,
        "name": "Kongsvinger Mekaniske AS",
        "org_form_code": "AS",
        "membership_status": "prospect",
        "municipality_number": "3401",
    }
    data.update(fields)
    return data


def seed_region(app):
    """Three companies in different places, statuses and networks."""
    with app.app_context():
        grue = make_company(
            "Grue Bygg AS",
            municipality_number="3417",
            municipality_name="Grue",
            membership_status="member",
            member_since=date(2019, 1, 1),
            employees=12,
        )
        odal = make_company(
            "Odal Plast AS",
            municipality_number="3415",
            municipality_name="Sør-Odal",
            membership_status="prospect",
            employees=40,
        )
        make_company(
            "Hamar Stål AS",
            municipality_number="3403",
            municipality_name="Hamar",
            membership_status="resigned",
            employees=None,
            bankrupt=True,
        )
        make_contact("Kari", "Grue", company=grue, networks=["Logistikk"], is_invoice_contact=True)
        make_contact("Ola", "Odal", company=odal, networks=["HR"], is_primary_contact=True)


def listed(client, query: str) -> list[str]:
    """Company names shown on the list page for a query string, in order."""
    body = text(client.get("/companies?partial=1&" + query))
    names = ("Grue Bygg AS", "Odal Plast AS", "Hamar Stål AS", "Arkivert AS")
    return sorted((n for n in names if n in body), key=body.index)


def test_company_list_searches_by_name_and_orgnr(app, client, auth):
    seed_region(app)
    auth.login("staff")
    assert listed(client, "q=odal") == ["Odal Plast AS"]
    with app.app_context():
        orgnr = company("Grue Bygg AS").orgnr
    assert listed(client, f"q={orgnr[:3]} {orgnr[3:6]} {orgnr[6:]}") == ["Grue Bygg AS"]
    assert "Ingen bedrifter passer" in text(client.get("/companies?q=zzzz"))


def test_company_list_filters_by_municipality_status_network_and_role(app, client, auth):
    seed_region(app)
    auth.login("staff")
    assert listed(client, "municipality=3417") == ["Grue Bygg AS"]
    assert listed(client, "status=prospect") == ["Odal Plast AS"]
    with app.app_context():
        hr = db.session.scalar(db.text("select id from network where name = 'HR'"))
    assert listed(client, f"network={hr}") == ["Odal Plast AS"]
    assert listed(client, "role=invoice") == ["Grue Bygg AS"]
    assert listed(client, "role=primary&status=member") == []


def test_municipality_filter_offers_the_region_first_then_others_in_the_data(app, client, auth):
    seed_region(app)
    auth.login("staff")
    body = text(client.get("/companies"))
    assert body.index(">Kongsvinger<") < body.index(">Våler<") < body.index(">Hamar<")


def test_archived_companies_are_hidden_unless_asked_for(app, client, auth):
    seed_region(app)
    with app.app_context():
        make_company("Arkivert AS", archived_at=utcnow())
    auth.login("staff")
    assert "Arkivert AS" not in listed(client, "")
    assert "Arkivert AS" in listed(client, "archived=1")


def test_company_list_sorts_by_column_both_ways(app, client, auth):
    seed_region(app)
    auth.login("staff")
    assert listed(client, "sort=name") == ["Grue Bygg AS", "Hamar Stål AS", "Odal Plast AS"]
    assert listed(client, "sort=-name") == ["Odal Plast AS", "Hamar Stål AS", "Grue Bygg AS"]
    # Unknown employee counts go last either way.
    assert listed(client, "sort=-employees") == ["Odal Plast AS", "Grue Bygg AS", "Hamar Stål AS"]
    assert listed(client, "sort=employees") == ["Grue Bygg AS", "Odal Plast AS", "Hamar Stål AS"]


def test_bad_sort_page_and_crafted_arguments_fall_back_instead_of_failing(app, client, auth):
    seed_region(app)
    auth.login("staff")
    for query in (
        "sort=drop table",
        "page=abc",
        "page=-3",
        "page=99999999999999999999",
        "network=abc&municipality=x&status=zzz&role=boss",
        "network=99999999999999",
        "_external=1&_scheme=javascript&endpoint=x",
        "q=" + "å" * 5000,
        "q=%00%01",
    ):
        response = client.get("/companies?" + query)
        assert response.status_code == 200, query
    assert 'href="javascript' not in text(client.get("/companies?_external=1&_scheme=javascript"))


def test_company_list_pages_through_results_with_a_count(app, client, auth):
    app.config["PAGE_SIZE"] = 2
    try:
        seed_region(app)
        auth.login("staff")
        first = text(client.get("/companies"))
        assert "3 bedrifter" in first
        assert listed(client, "page=1") == ["Grue Bygg AS", "Hamar Stål AS"]
        assert listed(client, "page=2") == ["Odal Plast AS"]
        assert 'href="/companies?page=2"' in first
        assert listed(client, "page=50") == []
    finally:
        app.config["PAGE_SIZE"] = 50


def test_partial_request_returns_only_the_results_region(app, client, auth):
    seed_region(app)
    auth.login("staff")
    body = text(client.get("/companies?q=grue&partial=1"))
    assert "Grue Bygg AS" in body and "Odal Plast AS" not in body
    # (The bulk-action bar is part of the results; the search form is not.)
    assert "<html" not in body and 'role="search"' not in body
    # Links in the fragment lead to full pages, never to another fragment.
    assert "partial" not in body
    full = text(client.get("/companies?q=grue"))
    assert "<html" in full and 'data-live-search="#results"' in full


def test_export_contains_every_matching_company_not_just_the_page(app, client, auth):
    app.config["PAGE_SIZE"] = 1
    try:
        seed_region(app)
        with app.app_context():
            make_company('=HYPERLINK("http://evil") AS', municipality_number="3417")
        auth.login("treasurer")
        response = client.get("/companies/export.csv?municipality=3417")
    finally:
        app.config["PAGE_SIZE"] = 50
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:2] == ["Organisasjonsnummer", "Navn"]
    names = sorted(row[1] for row in rows[1:])
    assert names == ['\'=HYPERLINK("http://evil") AS', "Grue Bygg AS"]
    grue = next(row for row in rows if row[1] == "Grue Bygg AS")
    assert "Medlem" in grue and "01.01.2019" in grue


def test_xlsx_export_has_typed_cells_and_neutralised_text(app, client, auth):
    seed_region(app)
    with app.app_context():
        make_company("@SUM(1) AS", municipality_number="3415")
    auth.login("staff")
    response = client.get("/companies/export.xlsx?municipality=3415&sort=-employees")
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(response.data)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert [r[1] for r in rows[1:]] == ["Odal Plast AS", "'@SUM(1) AS"]
    assert rows[1][5] == 40  # employees stay a number


def test_company_detail_shows_facts_contacts_activities_and_warnings(app, client, auth):
    seed_region(app)
    with app.app_context():
        hamar = company("Hamar Stål AS")
        make_contact("Åse", "Ødegård", company=hamar, phone="+4791234567", job_title="CFO")
        db.session.add(
            Activity(
                kind="meeting",
                occurred_on=date(2026, 5, 4),
                summary="Møte om energi",
                company=hamar,
            )
        )
        db.session.commit()
        url = f"/companies/{hamar.id}"
        orgnr = hamar.orgnr
    auth.login("staff")
    body = text(client.get(url))
    assert f"{orgnr[:3]} {orgnr[3:6]} {orgnr[6:]}" in body
    assert "Konkurs" in body and "Brønnøysundregistrene melder" in body
    assert "Åse Ødegård" in body and format_phone("+4791234567") in body
    assert "04.05.2026" in body and "Møte om energi" in body
    assert "Historikk" in body


def test_extension_panels_are_included_with_the_company(app, client, auth, tmp_path):
    seed_region(app)
    panel = tmp_path / "panel_test.html"
    panel.write_text("<p>PANEL for {{ company.name }}</p>")
    app.jinja_loader.searchpath.append(str(tmp_path))
    panels.COMPANY_PANELS.append("panel_test.html")
    try:
        with app.app_context():
            url = f"/companies/{company('Grue Bygg AS').id}"
        auth.login("staff")
        assert "PANEL for Grue Bygg AS" in text(client.get(url))
    finally:
        panels.COMPANY_PANELS.remove("panel_test.html")
        app.jinja_loader.searchpath.remove(str(tmp_path))


def test_staff_creates_a_company_and_the_audit_log_records_it(app, client, auth):
    user = auth.login("staff")
    response = client.post(
        "/companies/new",
        data=company_form(orgnr="923 609 016", website="www.kmv.no", employees="25"),
    )
    assert response.status_code == 302
    with app.app_context():
        created = company("Kongsvinger Mekaniske AS")
        assert created.orgnr == VALID_ORGNR
        assert created.municipality_name == "Kongsvinger"
        assert created.org_form_name == "Aksjeselskap"
        assert created.website == "https://www.kmv.no"
        (entry,) = history_for(created)
        assert entry.action == "create" and entry.user_id == user.id
        assert entry.changes["orgnr"] == [None, VALID_ORGNR]
    assert "Bedriften Kongsvinger Mekaniske AS er opprettet" in text(
        client.get(response.headers["Location"])
    )


def test_bad_orgnr_is_refused_with_a_message_and_nothing_is_saved(app, client, auth):
    auth.login("staff")
    response = client.post("/companies/new", data=company_form(orgnr="923609017"))
    assert response.status_code == 200
    assert "Ugyldig organisasjonsnummer" in text(response)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 0
        assert not db.session.scalar(
            db.select(db.func.count(AuditEntry.id)).where(AuditEntry.record_type == "company")
        )


def test_duplicate_orgnr_is_refused_with_a_link_to_the_existing_company(app, client, auth):
    with app.app_context():
        existing = make_company("Grue Bygg AS", orgnr=VALID_ORGNR)
        url = f"/companies/{existing.id}"
    auth.login("staff")
    response = client.post("/companies/new", data=company_form())
    body = text(response)
    assert "allerede registrert" in body
    assert f'<a href="{url}">Grue Bygg AS</a>' in body
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 1


def test_other_bad_input_gets_field_messages(app, client, auth):
    auth.login("staff")
    response = client.post(
        "/companies/new",
        data=company_form(
            name="x" * 500,
            employees="many",
            postal_code="12",
            website="not a site",
            member_since="yesterday",
            org_form_code="XYZ",
            membership_status="royal",
        ),
    )
    assert response.status_code == 200
    body = text(response)
    assert "Et postnummer har fire sifre" in body
    assert "Ikke en gyldig nettadresse" in body
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 0


def test_membership_dates_follow_the_status(app, client, auth):
    with app.app_context():
        target = make_company("Grue Bygg AS", orgnr=VALID_ORGNR)
        url = f"/companies/{target.id}/edit"
    auth.login("staff")
    client.post(url, data=company_form(name="Grue Bygg AS", membership_status="member"))
    with app.app_context():
        grue = company("Grue Bygg AS")
        assert (grue.member_since, grue.resigned_on) == (today_oslo(), None)
    client.post(
        url,
        data=company_form(
            name="Grue Bygg AS", membership_status="resigned", member_since="2020-01-01"
        ),
    )
    with app.app_context():
        grue = company("Grue Bygg AS")
        assert grue.member_since == date(2020, 1, 1) and grue.resigned_on == today_oslo()
    response = client.post(
        url,
        data=company_form(
            name="Grue Bygg AS",
            membership_status="resigned",
            member_since="2020-01-01",
            resigned_on="2019-01-01",
        ),
    )
    assert "Utmeldingsdatoen er før datoen for innmelding" in text(response)
    client.post(url, data=company_form(name="Grue Bygg AS", membership_status="prospect"))
    with app.app_context():
        grue = company("Grue Bygg AS")
        assert (grue.membership_status, grue.member_since, grue.resigned_on) == (
            "prospect",
            None,
            None,
        )
    # The history names each status in words, as the pages do.
    history = text(client.get(f"/companies/{target.id}"))
    assert "Utmeldt" in history and "Potensielt medlem" in history
    assert "resigned" not in history and "prospect" not in history


def test_editing_a_company_logs_old_and_new_values(app, client, auth):
    with app.app_context():
        target = make_company("Grue Bygg AS", orgnr=VALID_ORGNR, employees=10)
        url = f"/companies/{target.id}"
    auth.login("staff")
    response = client.post(
        url + "/edit",
        data=company_form(
            name="Grue Bygg og Anlegg AS", employees="14", municipality_number="3417"
        ),
    )
    assert response.status_code == 302
    with app.app_context():
        update = history_for(company("Grue Bygg og Anlegg AS"))[0]
        assert update.action == "update"
        assert update.changes["name"] == ["Grue Bygg AS", "Grue Bygg og Anlegg AS"]
        assert update.changes["employees"] == [10, 14]
        assert update.changes["municipality_name"] == ["Kongsvinger", "Grue"]
    body = text(client.get(url))
    assert "Grue Bygg og Anlegg AS" in body and "Endret" in body


def test_editing_to_a_taken_orgnr_changes_nothing(app, client, auth):
    with app.app_context():
        make_company("Først AS", orgnr=VALID_ORGNR)
        second = make_company("Andre AS")
        url, orgnr = f"/companies/{second.id}/edit", second.orgnr
    auth.login("staff")
    response = client.post(url, data=company_form(name="Endret AS"))
    assert "allerede registrert" in text(response)
    with app.app_context():
        assert company("Andre AS").orgnr == orgnr


def test_archive_and_restore_keep_the_company_and_log_it(app, client, auth):
    with app.app_context():
        target = make_company("Grue Bygg AS")
        url = f"/companies/{target.id}"
    auth.login("staff")
    response = client.post(url + "/archive")
    assert response.status_code == 302
    assert "Grue Bygg AS" not in listed(client, "")
    with app.app_context():
        archived = company("Grue Bygg AS")
        assert archived.archived_at is not None
        assert "archived_at" in history_for(archived)[0].changes
    client.post(url + "/unarchive")
    assert listed(client, "") == ["Grue Bygg AS"]
    with app.app_context():
        assert company("Grue Bygg AS").archived_at is None


def test_staff_adds_an_activity_to_a_company(app, client, auth):
    with app.app_context():
        target = make_company("Grue Bygg AS")
        url = f"/companies/{target.id}"
    user = auth.login("staff")
    response = client.post(
        url + "/activities",
        data={"kind": "call", "occurred_on": "2026-02-03", "summary": "Ringte om seminar"},
    )
    assert response.status_code == 302
    body = text(client.get(url))
    assert "03.02.2026" in body and "Ringte om seminar" in body and "Telefonsamtale" in body
    with app.app_context():
        activity = db.session.scalar(db.select(Activity))
        assert activity.created_by_id == user.id
    refused = client.post(url + "/activities", data={"kind": "party", "occurred_on": "x"})
    assert refused.status_code == 200
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Activity.id))) == 1


def test_treasurer_reads_companies_but_cannot_change_them(app, client, auth):
    with app.app_context():
        target = make_company("Grue Bygg AS")
        url = f"/companies/{target.id}"
    auth.login("treasurer")
    assert client.get("/companies").status_code == 200
    detail = text(client.get(url))
    assert "Grue Bygg AS" in detail
    assert "/edit" not in detail and "/archive" not in detail and "Ny bedrift" not in detail
    assert client.get("/companies/new").status_code == 403
    assert client.get(url + "/edit").status_code == 403
    assert client.post(url + "/archive").status_code == 403
    assert client.post(url + "/activities", data={"summary": "x"}).status_code == 403
    with app.app_context():
        assert company("Grue Bygg AS").archived_at is None


def test_unknown_or_absurd_company_ids_are_not_found(client, auth):
    auth.login("staff")
    for url in (
        "/companies/12345",
        "/companies/99999999999999999999",
        "/companies/abc",
        "/companies/-1",
        "/companies/99999999999/edit",
    ):
        assert client.get(url).status_code == 404, url


def test_anonymous_visitors_are_sent_to_login(client):
    for url in ("/companies", "/companies/export.csv", "/companies/new"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_company_lookup_suggests_current_companies(app, client, auth):
    with app.app_context():
        make_company("Grue Bygg AS", orgnr=unique_orgnr())
        make_company("Grue Gammel AS", archived_at=utcnow())
    auth.login("staff")
    labels = [item["label"] for item in client.get("/companies/lookup?q=grue").get_json()]
    assert len(labels) == 1 and labels[0].startswith("Grue Bygg AS (")


def test_search_with_many_words_narrows_the_list(app, client, auth):
    with app.app_context():
        make_company("Kongsvinger Mekaniske Verksted AS")
        make_company("Kongsvinger Bygg AS")
    auth.login("staff")
    body = text(client.get("/companies?partial=1&q=kongs meka verk as"))
    assert "Mekaniske" in body and "Bygg" not in body
