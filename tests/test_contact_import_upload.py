"""Contact import in the browser: upload a CSV or XLSX file, see every row's change or
error, confirm; nothing is written before that, nor from a file with any error."""

import io
import re

from openpyxl import Workbook
from sqlalchemy import func, select

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members.models import Contact
from tests.factories import make_company, make_contact


def _upload(client, data: bytes, filename: str = "kontakter.csv"):
    return client.post(
        "/contacts/import",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def _hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


def _contacts() -> int:
    return db.session.scalar(select(func.count(Contact.id)))


def _seed(app) -> str:
    with app.app_context():
        company = make_company("Grue Bygg AS")
        make_contact(
            "Kari",
            "Nordmann",
            email="kari@grue.no",
            company_id=company.id,
            job_title="Daglig leder",
        )
        return company.orgnr


def test_csv_upload_previews_every_change_then_imports_on_confirm(app, client, auth):
    orgnr = _seed(app)
    auth.login("staff")
    page = client.get("/contacts/import").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page and 'name="csrf_token"' in page
    csv_text = (
        "Fornavn;Etternavn;E-post;Stilling;Organisasjonsnummer;Nettverk\n"
        f"Kari;Nordmann;kari@grue.no;Styreleder;{orgnr};\n"
        f"Ola;Hansen;ola@grue.no;Innkjøper;{orgnr};Logistikk\n"
    )
    response = _upload(client, csv_text.encode())
    assert response.status_code == 302
    preview_url = response.headers["Location"]
    assert re.fullmatch(r"/contacts/import/[A-Za-z0-9_-]{43}", preview_url)
    with app.app_context():
        assert _contacts() == 1  # a preview writes nothing

    html = client.get(preview_url).get_data(as_text=True)
    assert "data-created>1<" in html and "data-updated>1<" in html
    assert re.search(r'class="old">Daglig leder</td>.*?class="new">Styreleder</td>', html, re.S)
    # Company and networks by name, not by id.
    assert "Grue Bygg AS" in html and "Logistikk" in html
    assert "Importer 2 kontaktpersoner" in html

    response = client.post(
        "/contacts/import/confirm",
        data={"token": _hidden(html, "token"), "fingerprint": _hidden(html, "fingerprint")},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/contacts"
    with app.app_context():
        ola = db.session.scalar(select(Contact).filter_by(email="ola@grue.no"))
        assert ola is not None and [n.name for n in ola.networks] == ["Logistikk"]
        kari = db.session.scalar(select(Contact).filter_by(email="kari@grue.no"))
        assert kari.job_title == "Styreleder"
        # Audited as an import by this user.
        assert (
            db.session.scalar(
                select(func.count(AuditEntry.id)).where(AuditEntry.record_type == "contact")
            )
            >= 3
        )


def test_xlsx_workbook_is_accepted(app, client, auth):
    orgnr = _seed(app)
    auth.login("staff")
    book = Workbook()
    sheet = book.active
    sheet.append(["first_name", "last_name", "email", "orgnr"])
    sheet.append(["Siri", "Sveiser", "siri@grue.no", orgnr])
    buffer = io.BytesIO()
    book.save(buffer)
    response = _upload(client, buffer.getvalue(), "kontakter.xlsx")
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Excel" in html and "Siri Sveiser" in html and "data-created>1<" in html


def test_a_file_with_errors_shows_each_row_and_changes_nothing(app, client, auth):
    orgnr = _seed(app)
    auth.login("staff")
    csv_text = (
        "first_name;last_name;email;orgnr;networks\n"
        f"Ny;Person;ny@grue.no;{orgnr};\n"
        "Feil;Adresse;ikke-en-adresse;;\n"
        "Ukjent;Firma;ukjent@firma.no;923609016;\n"
        f"Feil;Nettverk;nett@grue.no;{orgnr};Finnes ikke\n"
    )
    response = _upload(client, csv_text.encode())
    preview_url = response.headers["Location"]
    html = client.get(preview_url).get_data(as_text=True)
    assert "data-errors>3<" in html
    assert "Ingenting importeres" in html
    for line in ("3", "4", "5"):
        assert re.search(rf'<td class="line-no">{line}</td>', html)
    assert "Importer" not in html.split('class="card import-confirm"', 1)[1]
    with app.app_context():
        before = _contacts()
    # The page offers no confirmation; even a forged one imports nothing.
    assert 'name="fingerprint"' not in html
    response = client.post(
        "/contacts/import/confirm",
        data={"token": preview_url.rsplit("/", 1)[1], "fingerprint": "0" * 32},
    )
    assert response.status_code == 302 and response.headers["Location"] == preview_url
    with app.app_context():
        assert _contacts() == before
        assert db.session.scalar(select(Contact).filter_by(email="ny@grue.no")) is None


def test_changed_contacts_since_the_preview_need_a_new_look(app, client, auth):
    orgnr = _seed(app)
    auth.login("staff")
    response = _upload(
        client, f"first_name;last_name;email;orgnr\nOla;Hansen;ola@grue.no;{orgnr}\n".encode()
    )
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        make_contact("Ola", "Annen", email="ola@grue.no")
    response = client.post(
        "/contacts/import/confirm",
        data={"token": _hidden(html, "token"), "fingerprint": _hidden(html, "fingerprint")},
    )
    assert response.headers["Location"].startswith("/contacts/import/")
    with app.app_context():
        assert (
            db.session.scalar(select(Contact.last_name).filter_by(email="ola@grue.no")) == "Annen"
        )


def test_another_users_upload_is_not_found(app, client, auth):
    _seed(app)
    auth.login("staff")
    response = _upload(client, b"first_name;email\nA;a@example.no\n")
    preview_url = response.headers["Location"]
    auth.logout()
    auth.login("staff")
    response = client.get(preview_url)
    assert response.status_code == 302 and response.headers["Location"] == "/contacts/import"


def test_treasurers_and_viewers_cannot_import_contacts(app, client, auth):
    auth.login("treasurer")
    assert client.get("/contacts/import").status_code == 403
