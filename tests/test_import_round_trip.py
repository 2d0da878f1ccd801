"""A list exported from Klynge imports back without losing a column: CSV and XLSX.

Export companies and contacts, import the files into an empty register (only the
networks, which the files name, exist), export again: the files are identical.
"""

import io
from datetime import UTC, date, datetime

import pytest
from openpyxl import load_workbook

from crm.extensions import db
from crm.members.models import Activity, Company, Contact, contact_network
from tests.factories import make_company, make_contact


def _seed() -> None:
    eidskog = make_company(
        "Eidskog Stål AS",
        org_form_code="AS",
        org_form_name="Aksjeselskap",
        nace_code="25.110",
        nace_text="Produksjon av metallkonstruksjoner",
        employees=42,
        municipality_number="3416",
        municipality_name="Eidskog",
        street_address="Industrivegen 4, Bygg B",
        postal_code="2230",
        postal_place="Skotterud",
        website="https://eidskogstaal.no",
        membership_status="member",
        member_since=date(2019, 1, 1),
        winding_up=True,
    )
    make_company(
        "Grue Bygg AS",
        membership_status="resigned",
        member_since=date(2015, 3, 1),
        resigned_on=date(2024, 12, 31),
        bankrupt=True,
        forced_dissolution=True,
        deleted_in_registry_on=date(2025, 6, 30),
        archived_at=datetime(2025, 7, 1, 10, 30, tzinfo=UTC),
    )
    make_company("=cmd| Formel AS", membership_status="prospect", employees=0)
    make_contact(
        "Kari",
        "Nordmann",
        email="kari@eidskogstaal.no",
        phone="+4791234567",
        job_title="Daglig leder",
        company=eidskog,
        is_primary_contact=True,
        is_board_representative=True,
        networks=["Logistikk", "Produksjon"],
    )
    make_contact(
        "Ola",
        "Hansen",
        email="faktura@eidskogstaal.no",
        company=eidskog,
        is_invoice_contact=True,
        active=False,
    )
    make_contact("Per", "Uten Firma", phone="+4722334455", networks=["Bærekraft"])
    make_contact(
        "Arkiv",
        "Person",
        email="arkiv@example.no",
        archived_at=datetime(2026, 2, 3, 8, 15, tzinfo=UTC),
    )


def _empty_register() -> None:
    db.session.execute(contact_network.delete())
    db.session.execute(db.delete(Activity))
    db.session.execute(db.delete(Contact))
    db.session.execute(db.delete(Company))
    db.session.commit()


def _export(client, what: str, fmt: str) -> bytes:
    response = client.get(f"/{what}/export.{fmt}?archived=1")
    assert response.status_code == 200
    return response.data


def _cells(data: bytes) -> list[list]:
    sheet = load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    return [list(row) for row in sheet.iter_rows(values_only=True)]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
@pytest.mark.parametrize("lang", ["nb", "en"])
def test_export_import_export_gives_the_same_files(app, auth, client, runner, tmp_path, fmt, lang):
    with app.app_context():
        _seed()
    auth.login("staff")
    if lang == "en":
        client.post("/language/en", data={"next": "/"})
    companies = _export(client, "companies", fmt)
    contacts = _export(client, "contacts", fmt)
    with app.app_context():
        _empty_register()
    (tmp_path / f"companies.{fmt}").write_bytes(companies)
    (tmp_path / f"contacts.{fmt}").write_bytes(contacts)

    result = runner.invoke(args=["companies", "import", str(tmp_path / f"companies.{fmt}")])
    assert result.exit_code == 0, result.output
    assert "Created: 3" in result.stdout
    result = runner.invoke(args=["contacts", "import", str(tmp_path / f"contacts.{fmt}")])
    assert result.exit_code == 0, result.output + result.stderr
    assert "Created: 4" in result.stdout

    again_companies = _export(client, "companies", fmt)
    again_contacts = _export(client, "contacts", fmt)
    if fmt == "csv":
        assert again_companies.decode() == companies.decode()
        assert again_contacts.decode() == contacts.decode()
    else:  # a workbook's own metadata (its creation time) differs: compare every cell
        assert _cells(again_companies) == _cells(companies)
        assert _cells(again_contacts) == _cells(contacts)


def test_contact_import_updates_by_email_and_names_what_it_cannot_place(app, runner, tmp_path):
    with app.app_context():
        company = make_company("Eidskog Stål AS")
        make_contact("Kari", "Nordmann", email="kari@example.no", job_title="Selger")
        orgnr = company.orgnr
    path = tmp_path / "kontakter.csv"
    path.write_text(
        "Fornavn;Etternavn;E-post;Stilling;Organisasjonsnummer;Nettverk\n"
        f"Kari;Nordmann;KARI@example.no;Daglig leder;{orgnr};Logistikk\n"
        "Ny;Person;ny@example.no;;;Ukjent nettverk\n"
        "Tredje;Person;tredje@example.no;;923609016;\n",
        encoding="utf-8",
    )
    result = runner.invoke(args=["contacts", "import", str(path)])
    assert result.exit_code == 1
    assert "line 3: There is no network called 'Ukjent nettverk'." in result.stderr
    assert "line 4: No company has organisation number 923609016" in result.stderr
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Contact.id))) == 1
        assert db.session.scalar(db.select(Contact.job_title)) == "Selger"

    path.write_text(
        "first_name;last_name;email;job_title;orgnr;networks\n"
        f"Kari;Nordmann;KARI@example.no;Daglig leder;{orgnr};Logistikk\n",
        encoding="utf-8",
    )
    result = runner.invoke(args=["contacts", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "Created: 0  Updated: 1" in result.stdout
    with app.app_context():
        kari = db.session.scalar(db.select(Contact))
        assert (kari.job_title, kari.company.name) == ("Daglig leder", "Eidskog Stål AS")
        assert [n.name for n in kari.networks] == ["Logistikk"]


def test_an_xlsx_workbook_imports_companies_like_a_csv(app, runner, tmp_path):
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["orgnr", "name", "employees", "member_since", "postal_code"])
    sheet.append(["923609016", "Eidskog Stål AS", 42, datetime(2019, 1, 1), "0150"])
    path = tmp_path / "firma.xlsx"
    workbook.save(path)
    result = runner.invoke(args=["companies", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "firma.xlsx: Excel workbook, 1 rows" in result.stdout
    with app.app_context():
        company = db.session.scalar(db.select(Company))
        assert (company.employees, company.member_since, company.postal_code) == (
            42,
            date(2019, 1, 1),
            "0150",
        )
