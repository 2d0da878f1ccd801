"""In Chromium: upload a register file, read the preview, fix the file, confirm the import."""

import re

import pytest

from crm.extensions import db
from crm.members.models import Company
from crm.members.normalize import make_orgnr
from tests.browser import login
from tests.factories import PASSWORD, api_page, brreg_unit, make_company, make_user

pytestmark = pytest.mark.browser

ORGNRS = [o for o in (make_orgnr(f"9{n:07d}") for n in range(2_360_901, 2_361_000)) if o]


def _register_file(broken: bool) -> bytes:
    units = [
        brreg_unit(ORGNRS[0], "SKOTTERUD MEKANISKE VERKSTED AS", antallAnsatte=38),
        brreg_unit(
            ORGNRS[1],
            "FLISA TRELAST AS",
            antallAnsatte=61,
            forretningsadresse={
                "adresse": ["Sagvegen 12"],
                "postnummer": "2270",
                "poststed": "FLISA",
                "kommune": "ÅSNES",
                "kommunenummer": "3418",
            },
        ),
        brreg_unit(ORGNRS[2], "ODAL BETONG AS", konkurs=True),
        brreg_unit(ORGNRS[3], "GLÅMDAL PLASTINDUSTRI AS", antallAnsatte=17),
        brreg_unit(ORGNRS[4], "SOLØR POTET SA", underAvvikling=True),
        brreg_unit(ORGNRS[5], "KONGSVINGER LOGISTIKK AS", antallAnsatte=9),
        brreg_unit(ORGNRS[6], "VINGER SAG AS"),
    ]
    if broken:
        units += [
            brreg_unit("987654321", "FEIL NUMMER AS"),
            brreg_unit(ORGNRS[7], "TELLER IKKE AS", antallAnsatte="mange"),
            brreg_unit(ORGNRS[3], "GLÅMDAL PLASTINDUSTRI AS"),
        ]
    return api_page(*units)


def test_import_preview_and_confirm_in_chromium(app, page, live_server, artifacts_dir, tmp_path):
    with app.app_context():
        make_user("staff", email="import@example.no")
        make_company(
            "Skotterud Mekaniske Verksted AS",
            orgnr=ORGNRS[0],
            employees=31,
            membership_status="member",
            street_address="Industrivegen 4",
            postal_code="2212",
            postal_place="Kongsvinger",
            org_form_code="AS",
            org_form_name="Aksjeselskap",
        )
        make_company("Flisa Trelast AS", orgnr=ORGNRS[1], employees=58, membership_status="member")
        make_company("Odal Betong AS", orgnr=ORGNRS[2], membership_status="member")
        make_company("Kongsvinger Logistikk", orgnr=make_orgnr("81000001"))
    login(page, live_server, "import@example.no", PASSWORD)
    page.goto(f"{live_server.url}/companies")
    page.click("a[href='/companies/import']")
    assert page.url.endswith("/companies/import")
    page.screenshot(path=str(artifacts_dir / "import-upload.png"), full_page=True)

    broken = tmp_path / "enheter-kongsvingerregionen.json"
    broken.write_bytes(_register_file(broken=True))
    page.set_input_files("input[type=file]", str(broken))
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/companies/import/[A-Za-z0-9_-]{43}$"))
    page.screenshot(path=str(artifacts_dir / "import-preview-errors.png"), full_page=True)
    text = page.inner_text("main")
    assert "Filen har 3 feil." in text
    assert "står to ganger i filen" in text
    assert page.locator("form[action='/companies/import/confirm']").count() == 0

    fixed = tmp_path / "enheter-rettet.json"
    fixed.write_bytes(_register_file(broken=False))
    page.click("text=Last opp en rettet fil")
    page.set_input_files("input[type=file]", str(fixed))
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/companies/import/[A-Za-z0-9_-]{43}$"))
    page.screenshot(path=str(artifacts_dir / "import-preview.png"), full_page=True)
    assert "Importer 7 bedrifter" in page.inner_text("main")
    page.click("form[action='/companies/import/confirm'] button")
    page.wait_for_url(re.compile(r"/companies$"))
    assert "Importen er fullført: 4 nye, 3 oppdatert, 0 uendret." in page.inner_text("main")
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 8
        flisa = db.session.scalar(db.select(Company).filter_by(orgnr=ORGNRS[1]))
        assert (flisa.employees, flisa.municipality_name) == (61, "Åsnes")
