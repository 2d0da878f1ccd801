"""Brønnøysund data as the register really writes it, and its bulk download streamed.

The four shapes real units come in (null address lines, no employee count, forced
dissolution, sub-units) and `crm companies import enheter_alle.json.gz` reading the
national file unit by unit: ours updated, prospects only from chosen municipalities,
a broken or truncated file refused with nothing changed.
"""

import gzip
import json

import pytest

from crm.extensions import db
from crm.fees.services import tier_for
from crm.members.importing import plan_bytes
from crm.members.models import Company
from crm.members.normalize import make_orgnr
from tests.factories import api_page, brreg_unit, bulk_file, make_company, make_fee_schedule

ORGNR_A, ORGNR_B, ORGNR_C = make_orgnr("92360901"), make_orgnr("98765432"), make_orgnr("91234568")
ORGNR_D, ORGNR_E = make_orgnr("97531246"), make_orgnr("93332221")


def _company(orgnr: str) -> Company:
    return db.session.scalar(db.select(Company).filter_by(orgnr=orgnr))


def _import(runner, path, *args):
    return runner.invoke(args=["companies", "import", str(path), *args])


def _gzip(tmp_path, *units, name="enheter_alle.json.gz"):
    path = tmp_path / name
    with gzip.open(path, "wb") as fh:
        fh.write(bulk_file(*units))
    return path


# --- the shapes of real units ------------------------------------------------------------


def test_null_address_lines_are_skipped_not_refused(app_ctx):
    address = {
        "adresse": ["Tyvholmen 1", None, None, ""],
        "postnummer": "0250",
        "poststed": "OSLO",
        "kommune": "OSLO",
        "kommunenummer": "0301",
    }
    plan = plan_bytes(
        api_page(brreg_unit(ORGNR_A, "Tyvholmen AS", forretningsadresse=address)), "x"
    )
    assert plan.ok, [str(e) for e in plan.errors]
    assert plan.creates[0].values["street_address"] == "Tyvholmen 1"
    assert plan.creates[0].values["postal_place"] == "Oslo"


def test_a_unit_with_no_registered_employees_gets_none_and_the_lowest_fee_tier(app_ctx, runner):
    make_company("Stor AS", orgnr=ORGNR_A, employees=300)
    unit = brreg_unit(ORGNR_A, "Stor AS", harRegistrertAntallAnsatte=False)
    del unit["antallAnsatte"]
    plan = plan_bytes(api_page(unit), "x")
    changes = {c.field: (c.old, c.new) for c in plan.updates[0].changes}
    assert changes["employees"] == (300, 0)
    schedule = make_fee_schedule(2026)
    assert tier_for(schedule, 0) == schedule.tiers[0]


def test_a_unit_without_the_employee_fields_keeps_the_stored_count(app_ctx):
    make_company("Stor AS", orgnr=ORGNR_A, employees=300)
    unit = brreg_unit(ORGNR_A, "Stor AS")
    del unit["antallAnsatte"]
    plan = plan_bytes(api_page(unit), "x")
    assert "employees" not in {c.field for c in plan.rows[0].changes}


def test_forced_dissolution_is_flagged_and_warned(app, runner, tmp_path):
    with app.app_context():
        make_company("Tvang AS", orgnr=ORGNR_A)
    path = tmp_path / "enheter.json"
    path.write_bytes(
        api_page(brreg_unit(ORGNR_A, "Tvang AS", underTvangsavviklingEllerTvangsopplosning=True))
    )
    result = _import(runner, path)
    assert result.exit_code == 0, result.output
    assert "Under forced dissolution according to the register" in result.stdout
    with app.app_context():
        company = _company(ORGNR_A)
        assert company.forced_dissolution is True
        assert "forced_dissolution" in company.registry_warnings


def test_a_sub_unit_comes_with_its_location_address_and_main_unit(app_ctx):
    sub_unit = {
        "organisasjonsnummer": ORGNR_B,
        "navn": "Storkonsern AS avd. Kongsvinger",
        "organisasjonsform": {"kode": "BEDR", "beskrivelse": "Underenhet til næringsdrivende"},
        "naeringskode1": {"kode": "25.110", "beskrivelse": "Produksjon av metallkonstruksjoner"},
        "antallAnsatte": 35,
        "harRegistrertAntallAnsatte": True,
        "overordnetEnhet": ORGNR_C,
        "oppstartsdato": "2001-03-01",
        "beliggenhetsadresse": {
            "land": "Norge",
            "landkode": "NO",
            "postnummer": "2211",
            "poststed": "KONGSVINGER",
            "adresse": ["Rasta 12", None],
            "kommune": "KONGSVINGER",
            "kommunenummer": "3401",
        },
        "postadresse": {"adresse": ["Postboks 1"], "postnummer": "0101", "poststed": "OSLO"},
    }
    plan = plan_bytes(json.dumps([sub_unit]).encode(), "underenheter.json")
    assert plan.ok, [str(e) for e in plan.errors]
    values = plan.creates[0].values
    assert values["street_address"] == "Rasta 12"
    assert values["municipality_number"] == "3401"
    assert values["parent_orgnr"] == ORGNR_C
    assert values["employees"] == 35


def test_an_api_page_of_sub_units_is_read_too(app_ctx):
    unit = {
        "organisasjonsnummer": ORGNR_B,
        "navn": "Avdeling AS",
        "overordnetEnhet": ORGNR_C,
        "beliggenhetsadresse": {"adresse": ["Vegen 1"], "kommunenummer": "3415"},
    }
    document = {"_embedded": {"underenheter": [unit]}, "page": {"totalElements": 1}}
    plan = plan_bytes(json.dumps(document).encode(), "x")
    assert plan.ok, [str(e) for e in plan.errors]
    assert plan.creates[0].values["parent_orgnr"] == ORGNR_C


def test_a_closed_sub_unit_is_marked_deleted(app_ctx):
    unit = {
        "organisasjonsnummer": ORGNR_B,
        "navn": "Nedlagt avd.",
        "nedleggelsesdato": "2024-06-30",
    }
    plan = plan_bytes(json.dumps([unit]).encode(), "x")
    assert str(plan.creates[0].values["deleted_in_registry_on"]) == "2024-06-30"


def test_a_number_of_five_thousand_digits_is_a_clear_error_not_a_crash(app_ctx):
    data = b'[{"organisasjonsnummer": "' + ORGNR_A.encode() + b'", "antallAnsatte": '
    data += b"9" * 5000 + b"}]"
    plan = plan_bytes(data, "x")
    assert not plan.ok
    assert "number too long" in str(plan.errors[0])
    csv = f"orgnr;name;employees\n{ORGNR_A};A AS;{'9' * 5000}\n".encode()
    plan = plan_bytes(csv, "x.csv")
    assert "is not a whole number of employees" in str(plan.errors[0])


# --- the bulk download, streamed ---------------------------------------------------------


def _national(*ours):
    """A small bulk file: our companies among strangers in and outside the cluster."""
    elsewhere = {
        "adresse": ["Gate 1"],
        "postnummer": "0150",
        "kommune": "OSLO",
        "kommunenummer": "0301",
    }
    grue = {
        "adresse": ["Vegen 2"],
        "postnummer": "2260",
        "kommune": "GRUE",
        "kommunenummer": "3417",
    }
    return [
        brreg_unit(ORGNR_C, "Oslo Fremmed AS", forretningsadresse=elsewhere),
        *ours,
        brreg_unit(ORGNR_D, "Grue Ny AS", forretningsadresse=grue),
        brreg_unit(ORGNR_E, "Grue Konkurs AS", forretningsadresse=grue, konkurs=True),
    ]


def test_the_bulk_download_updates_ours_and_adds_nobody_else(app, runner, tmp_path):
    with app.app_context():
        make_company("Eidskog Stål AS", orgnr=ORGNR_A, employees=8)
    path = _gzip(tmp_path, *_national(brreg_unit(ORGNR_A, "Eidskog Stål AS", antallAnsatte=11)))
    result = _import(runner, path)
    assert result.exit_code == 0, result.output
    assert "enheter_alle.json.gz: 4 units read, 1 for us" in result.stdout
    assert "Created: 0  Updated: 1  Unchanged: 0  Errors: 0" in result.stdout
    with app.app_context():
        assert _company(ORGNR_A).employees == 11
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 1


def test_new_in_municipalities_adds_live_units_there_as_prospects(app, runner, tmp_path):
    with app.app_context():
        make_company("Eidskog Stål AS", orgnr=ORGNR_A)
    path = _gzip(tmp_path, *_national(brreg_unit(ORGNR_A, "Eidskog Stål AS")))
    result = _import(runner, path, "--new-in-municipalities", "3417,3401")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert _company(ORGNR_D).membership_status == "prospect"
        assert _company(ORGNR_E) is None  # bankrupt: no prospect
        assert _company(ORGNR_C) is None  # Oslo


def test_new_in_municipalities_filters_a_small_file_too(app, runner, tmp_path):
    path = tmp_path / "enheter.json"
    path.write_bytes(bulk_file(*_national()))
    result = _import(runner, path, "--new-in-municipalities", "3417")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert {c.orgnr for c in db.session.scalars(db.select(Company))} == {ORGNR_D, ORGNR_E}


@pytest.mark.parametrize("bad", ["34O1", "12345", "3401;3414"])
def test_a_malformed_municipality_number_is_refused(runner, tmp_path, bad):
    path = _gzip(tmp_path, *_national())
    result = _import(runner, path, "--new-in-municipalities", bad)
    assert result.exit_code == 2
    assert "is not a 4-digit municipality number" in result.output


def test_a_truncated_bulk_download_changes_nothing(app, runner, tmp_path):
    with app.app_context():
        make_company("Eidskog Stål AS", orgnr=ORGNR_A, employees=8)
    whole = _gzip(tmp_path, *_national(brreg_unit(ORGNR_A, "Eidskog Stål AS", antallAnsatte=11)))
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(whole.read_bytes()[:-40])
    result = _import(runner, cut)
    assert result.exit_code == 1
    assert "Nothing was imported." in result.stderr
    assert "The file ends or breaks after unit" in result.stderr
    with app.app_context():
        assert _company(ORGNR_A).employees == 8


def test_a_bulk_download_that_is_not_json_changes_nothing(app, runner, tmp_path):
    with app.app_context():
        make_company("Eidskog Stål AS", orgnr=ORGNR_A, employees=8)
    path = tmp_path / "enheter_alle.json.gz"
    units = json.dumps([brreg_unit(ORGNR_A, "Eidskog Stål AS", antallAnsatte=11)])
    with gzip.open(path, "wb") as fh:
        fh.write(units.encode() + b", {oops")
    result = _import(runner, path)
    assert result.exit_code == 1
    assert "The file is not valid JSON after unit 1" in result.stderr
    with app.app_context():
        assert _company(ORGNR_A).employees == 8


def test_an_error_in_one_of_our_units_refuses_the_whole_bulk_download(app, runner, tmp_path):
    with app.app_context():
        make_company("Eidskog Stål AS", orgnr=ORGNR_A, employees=8)
        make_company("Grue Bygg AS", orgnr=ORGNR_B, employees=3)
    path = _gzip(
        tmp_path,
        brreg_unit(ORGNR_A, "Eidskog Stål AS", antallAnsatte=11),
        brreg_unit(ORGNR_B, "Grue Bygg AS", antallAnsatte="mange"),
    )
    result = _import(runner, path)
    assert result.exit_code == 1
    assert "unit 2: employees: 'mange' is not a whole number of employees." in result.stderr
    with app.app_context():
        assert _company(ORGNR_A).employees == 8
