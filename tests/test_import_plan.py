"""Company import: what a file would change, and that an import is all or nothing."""

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members.importing import ImportRejected, apply_plan, plan_bytes, read_file
from crm.members.models import Company
from crm.members.normalize import make_orgnr
from tests.factories import api_page, brreg_unit, bulk_file, make_company, make_user

ORGNR_A = make_orgnr("92360901")  # valid test numbers, made once
ORGNR_B = make_orgnr("98765432")
ORGNR_C = make_orgnr("91234568")


def unit_lines(data: bytes) -> list[int]:
    """The line of each unit's opening brace in a pretty-printed file."""
    lines = data.decode().split("\n")
    return [n for n, text in enumerate(lines, start=0) if '"organisasjonsnummer"' in text]


def plan(data: bytes, filename: str = "file"):
    return plan_bytes(data, filename)


@pytest.mark.parametrize("build", [bulk_file, api_page], ids=["bulk-download", "api-page"])
def test_brreg_json_updates_known_companies_by_orgnr_and_lists_the_changes(app, build):
    with app.app_context():
        make_company(
            "Vinger Sag AS",
            orgnr=ORGNR_A,
            employees=30,
            street_address="Gamlevegen 1",
            postal_code="2212",
            postal_place="Kongsvinger",
            nace_code="16.100",
            nace_text="Saging, høvling og impregnering av tre",
            org_form_code="AS",
            org_form_name="Aksjeselskap",
            membership_status="member",
        )
        data = build(
            brreg_unit(ORGNR_A, "VINGER SAG OG HØVLERI AS", antallAnsatte=45),
            brreg_unit(ORGNR_B, "GLÅMDAL PLAST AS", antallAnsatte=12),
        )
        result = plan(data)
        assert result.ok, [str(e) for e in result.errors]
        assert result.source == "brreg"
        [update] = result.updates
        changes = {c.field: (c.old, c.new) for c in update.changes}
        assert changes == {
            "name": ("Vinger Sag AS", "VINGER SAG OG HØVLERI AS"),
            "employees": (30, 45),
            "street_address": ("Gamlevegen 1", "Industrivegen 4"),
        }
        [create] = result.creates
        assert create.orgnr == ORGNR_B
        assert create.values["membership_status"] == "prospect"
        assert create.values["postal_place"] == "Kongsvinger"  # the register shouts; we don't

        apply_plan(result)
        db.session.commit()
        company = db.session.scalar(db.select(Company).filter_by(orgnr=ORGNR_A))
        assert (company.name, company.employees) == ("VINGER SAG OG HØVLERI AS", 45)
        assert company.membership_status == "member"  # the register never touches membership
        new = db.session.scalar(db.select(Company).filter_by(orgnr=ORGNR_B))
        assert new.membership_status == "prospect"
        assert (new.municipality_number, new.municipality_name) == ("3401", "Kongsvinger")
        assert new.nace_code == "16.100"


def test_json_line_numbers_point_at_the_start_of_each_unit(app):
    with app.app_context():
        data = bulk_file(brreg_unit(ORGNR_A, "A AS"), brreg_unit("123456789", "B AS"))
        result = plan(data)
        second_unit_line = unit_lines(data)[1]
        assert [r.line for r in result.rows] == [2, second_unit_line]
        assert [str(e) for e in result.errors] == [
            f"line {second_unit_line}: '123456789' is not a valid organisation number."
        ]


def test_minified_json_names_the_unit_as_well_as_the_line(app):
    with app.app_context():
        data = json.dumps([brreg_unit(ORGNR_A, "A AS"), brreg_unit(ORGNR_B, "B AS", navn=7)])
        result = plan(data.encode())
        assert [str(e) for e in result.errors] == ["line 1 (unit 2): navn must be text."]


def test_bankruptcy_winding_up_and_deletion_are_flagged(app):
    with app.app_context():
        make_company("Konkursbo AS", orgnr=ORGNR_A)
        data = api_page(
            brreg_unit(ORGNR_A, "Konkursbo AS", konkurs=True),
            brreg_unit(ORGNR_B, "Avvikles AS", underAvvikling=True),
            brreg_unit(ORGNR_C, "Slettet AS", slettedato="2024-03-15"),
        )
        result = plan(data)
        assert result.ok
        assert [r.flags for r in result.rows] == [
            ["bankrupt"],
            ["winding_up"],
            ["deleted_in_registry_on"],
        ]
        first, second, third = unit_lines(data)
        assert [str(w) for w in result.warnings] == [
            f"line {first}: Bankrupt according to the register",
            f"line {second}: Being wound up according to the register",
            f"line {third}: Deleted from the register on 15.03.2024",
        ]
        apply_plan(result)
        db.session.commit()
        flagged = {c.orgnr: c for c in db.session.scalars(db.select(Company))}
        assert flagged[ORGNR_A].bankrupt is True
        assert flagged[ORGNR_B].winding_up is True
        assert flagged[ORGNR_C].deleted_in_registry_on == date(2024, 3, 15)


def test_a_bad_row_stops_the_whole_import_with_its_line_number(app):
    with app.app_context():
        make_company("Vinger Sag AS", orgnr=ORGNR_A, employees=30)
        csv = (
            "orgnr;name;employees\n"
            f"{ORGNR_A};Vinger Sag AS;31\n"
            f"{ORGNR_B};Ny Bedrift AS;5\n"
            "987654321;Feil Orgnr AS;7\n"
        ).encode()
        result = plan(csv)
        assert not result.ok
        assert [str(e) for e in result.errors] == [
            "line 4: '987654321' is not a valid organisation number."
        ]
        with pytest.raises(ImportRejected) as rejected:
            apply_plan(result)
        assert [e.line for e in rejected.value.errors] == [4]
        db.session.rollback()
        assert db.session.scalar(db.select(Company.employees).filter_by(orgnr=ORGNR_A)) == 30
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 1


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("orgnr;name;postal_place\n{a};Åsnes Trevare AS;Flisa\n".encode(), "utf-8"),
        ("orgnr,name,postal_place\n{a},Åsnes Trevare AS,Flisa\n".encode(), "utf-8"),
        ("\ufefforgnr;name;postal_place\r\n{a};Åsnes Trevare AS;Flisa\r\n".encode(), "utf-8"),
        ("orgnr;name;postal_place\r\n{a};Åsnes Trevare AS;Flisa\r\n".encode("cp1252"), "cp1252"),
        ("sep=;\norgnr;name;postal_place\n{a};Åsnes Trevare AS;Flisa\n".encode(), "utf-8"),
    ],
    ids=["semicolon", "comma", "utf8-bom-crlf", "windows-1252", "excel-sep-line"],
)
def test_csv_delimiters_and_encodings_excel_writes_are_read(app, data, encoding):
    with app.app_context():
        data = data.replace(b"{a}", ORGNR_A.encode())
        result = plan(data)
        assert result.ok, [str(e) for e in result.errors]
        assert result.encoding == encoding
        [create] = result.creates
        assert (create.name, create.values["postal_place"]) == ("Åsnes Trevare AS", "Flisa")
        assert create.line == (3 if data.startswith(b"sep=") else 2)


def test_csv_columns_are_parsed_and_empty_cells_leave_values_alone(app):
    with app.app_context():
        make_company("Grue Mek AS", orgnr=ORGNR_A, website="https://grue-mek.no", notes="VIP")
        csv = (
            "Orgnr;Name;Org form;Employees;Municipality number;Website;Membership status;"
            "Member since;Notes\n"
            f"{ORGNR_A};Grue Mek AS;AS;1 250;3417;;medlem;01.03.2015;\n"
            f'{ORGNR_B};"Solør Plast; Rør AS";ASA;12;3418;www.solorplast.no;prospect;;'
            '"Two\nlines"\n'
        ).encode()
        result = plan(csv)
        assert result.ok, [str(e) for e in result.errors]
        [update] = result.updates
        assert {c.field: c.new for c in update.changes} == {
            "org_form_code": "AS",
            "org_form_name": "Aksjeselskap",
            "employees": 1250,
            "municipality_number": "3417",
            "municipality_name": "Grue",
            "membership_status": "member",
            "member_since": date(2015, 3, 1),
        }
        [create] = result.creates
        assert create.name == "Solør Plast; Rør AS"
        assert create.values["notes"] == "Two\nlines"
        assert create.values["municipality_name"] == "Åsnes"


def test_csv_errors_name_their_line_and_problem(app):
    with app.app_context():
        long_name = "X" * 201
        csv = (
            "orgnr;name;employees;membership_status;member_since\n"
            f"{ORGNR_A};Ok AS;3;member;2020-01-01\n"
            "\n"
            f"{ORGNR_B};Bad AS;-4;;\n"
            f"{ORGNR_C};Bad AS;;gold;31.02.2020\n"
            f"{make_orgnr('93000001')};{long_name};;;\n"
            f"{make_orgnr('93000002')};;;;\n"
            f";Nameless AS;;;\n"
        ).encode()
        errors = [str(e) for e in plan(csv).errors]
        assert errors == [
            "line 4: employees: '-4' is not a whole number of employees.",
            "line 5: Unknown membership status 'gold': use prospect, member or resigned.",
            "line 5: member_since: '31.02.2020' is not a date (use dd.mm.yyyy or yyyy-mm-dd).",
            "line 6: name is too long (201 characters; at most 200).",
            "line 7: The name is missing (needed for a new company).",
            "line 8: The organisation number is missing.",
        ]


def test_the_same_orgnr_twice_in_one_file_is_an_error(app):
    with app.app_context():
        csv = f"orgnr,name\n{ORGNR_A},One AS\n{ORGNR_B},Two AS\n{ORGNR_A},Three AS\n".encode()
        result = plan(csv)
        assert [str(e) for e in result.errors] == [
            f"line 4: Organisation number {ORGNR_A} is in the file twice (also line 2)."
        ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"  \n\n", "The file is empty."),
        (b"name;website\nFoo AS;foo.no\n", "The header row has no orgnr column."),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "This is not a CSV or JSON file."),
        (b"PK\x03\x04\x14\x00\x06\x00", "The Excel workbook could not be read"),
        (b"orgnr;name\n923609016;\x81\x8d\x8f\x90\x9d AS\n", "encoding is not UTF-8"),
        (b'[{"organisasjonsnummer": "923609016",}]', "The file is not valid JSON (column"),
        (b'{"hello": "world"}', "The JSON is not Brønnøysund data"),
        (b"orgnr;name;name\n", "The column name appears twice."),
    ],
    ids=[
        "empty",
        "blank",
        "no-orgnr-column",
        "binary",
        "broken-xlsx",
        "bad-encoding",
        "bad-json",
        "other-json",
        "twice-column",
    ],
)
def test_unreadable_files_get_one_clear_error(app, data, message):
    with app.app_context():
        result = plan(data)
        assert not result.ok
        assert any(message in str(e.message) for e in result.errors), result.errors
        assert not result.rows


def test_unknown_columns_are_ignored_with_a_warning(app):
    with app.app_context():
        result = plan(f"orgnr;name;favourite_colour\n{ORGNR_A};A AS;blue\n".encode())
        assert result.ok
        assert [str(w.message) for w in result.warnings] == [
            "The column favourite_colour is not known and was ignored."
        ]


def test_a_new_company_named_like_an_existing_one_is_a_possible_duplicate(app):
    with app.app_context():
        make_company("Kongsvinger Betong AS", orgnr=ORGNR_A)
        result = plan(
            f"orgnr;name\n{ORGNR_B};KONGSVINGER BETONG\n{ORGNR_C};Kongsvinger Betong ASA\n".encode()
        )
        assert result.ok  # a warning, not an error: two firms may share a name
        assert [str(w) for w in result.warnings] == [
            f"line 2: Possible duplicate of Kongsvinger Betong AS ({ORGNR_A}): "
            "same name, other orgnr.",
            f"line 3: Possible duplicate of Kongsvinger Betong AS ({ORGNR_A}): "
            "same name, other orgnr.",
        ]


def test_reimporting_the_same_file_changes_nothing(app):
    with app.app_context():
        make_company("Gammel AS", orgnr=ORGNR_A)
        data = bulk_file(
            brreg_unit(ORGNR_A, "NYTT NAVN AS", konkurs=True), brreg_unit(ORGNR_B, "Ny AS")
        )
        apply_plan(plan(data))
        db.session.commit()
        audit_rows = db.session.scalar(db.select(db.func.count(AuditEntry.id)))

        again = plan(data)
        assert [r.action for r in again.rows] == ["unchanged", "unchanged"]
        assert again.counts() == {"created": 0, "updated": 0, "unchanged": 2, "errors": 0}
        apply_plan(again)
        db.session.commit()
        assert db.session.scalar(db.select(db.func.count(AuditEntry.id))) == audit_rows


def test_register_names_in_capitals_do_not_count_as_a_change(app):
    with app.app_context():
        make_company(
            "Vinger Sag AS",
            orgnr=ORGNR_A,
            employees=42,
            org_form_code="AS",
            org_form_name="Aksjeselskap",
            nace_code="16.100",
            nace_text="Saging, høvling og impregnering av tre",
            street_address="Industrivegen 4",
            postal_code="2212",
            postal_place="Kongsvinger",
        )
        result = plan(bulk_file(brreg_unit(ORGNR_A, "VINGER SAG AS")))
        assert [r.action for r in result.rows] == ["unchanged"]


def test_the_audit_log_names_the_file_and_the_user(app):
    with app.app_context():
        user = make_user("staff")
        result = plan(f"orgnr;name\n{ORGNR_A};Logget AS\n".encode(), "medlemmer.csv")
        apply_plan(result, user=user)
        db.session.commit()
        entry = db.session.scalar(db.select(AuditEntry).filter_by(record_type="company"))
        assert (entry.actor, entry.user_id, entry.action) == (
            "import: medlemmer.csv",
            user.id,
            "create",
        )
        assert entry.changes["name"] == [None, "Logget AS"]


def test_reading_a_file_touches_no_database(app):
    # read_file is pure: it works without an application context at all.
    parsed = read_file(f"orgnr;name\n{ORGNR_A};A AS\n".encode())
    assert (parsed.source, len(parsed.records), parsed.records[0].line) == ("csv", 1, 2)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=12,
)
_unit = st.fixed_dictionaries(
    {},
    optional={
        "organisasjonsnummer": st.sampled_from([ORGNR_A, ORGNR_B, "123", ""]) | _json,
        "navn": st.text(max_size=40) | _json,
        "organisasjonsform": st.fixed_dictionaries({"kode": _json, "beskrivelse": _json}) | _json,
        "naeringskode1": _json,
        "antallAnsatte": st.integers() | _json,
        "hjemmeside": _json,
        "forretningsadresse": st.fixed_dictionaries(
            {},
            optional={"adresse": _json, "postnummer": _json, "kommunenummer": _json},
        )
        | _json,
        "konkurs": _json,
        "underAvvikling": _json,
        "slettedato": st.text(max_size=12) | _json,
    },
)
_files = (
    st.binary(max_size=400)
    | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.lists(_unit, max_size=4).map(lambda units: json.dumps(units).encode())
    | st.lists(_unit, max_size=4).map(lambda units: api_page(*units))
    | st.lists(st.lists(st.text(max_size=15), max_size=5), max_size=5).map(
        lambda rows: (
            "orgnr;name;employees;member_since\n" + "\n".join(";".join(r) for r in rows)
        ).encode("utf-8", "surrogatepass")
    )
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_files)
def test_any_file_gives_a_plan_and_a_preview_never_an_exception(app, data):
    from crm.members.import_routes import render_preview

    with app.test_request_context():
        result = plan_bytes(data, "garbage.bin")
        for issue in result.errors + result.warnings:
            str(issue).encode("utf-8")
        render_preview(result, "A" * 43).encode("utf-8")
        db.session.rollback()


def test_preview_shows_a_code_with_its_description_on_one_line(app):
    with app.app_context():
        make_company("Flisa Tre AS", orgnr=ORGNR_A, postal_code="2270", postal_place="Flisa")
        result = plan(
            f"orgnr;postal_code;nace_code;nace_text\n{ORGNR_A};2271;16.100;Sag\n".encode()
        )
        [update] = result.updates
        assert [(c.field, c.old, c.new) for c in update.display_changes()] == [
            ("nace_text", "", "16.100 Sag"),
            ("postal_place", "2270 Flisa", "2271 Flisa"),
        ]
