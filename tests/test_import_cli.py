"""`crm companies import FILE [--dry-run]`: the report, the exit code, and nothing half-done."""

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members.models import Company
from crm.members.normalize import make_orgnr
from tests.factories import api_page, brreg_unit, make_company

ORGNR_A, ORGNR_B, ORGNR_C = make_orgnr("92360901"), make_orgnr("98765432"), make_orgnr("91234568")


def _count(model) -> int:
    return db.session.scalar(db.select(db.func.count(model.id)))


def test_cli_imports_a_register_file_and_prints_each_change(app, runner, tmp_path):
    with app.app_context():
        make_company("Eidskog Stål AS", orgnr=ORGNR_A, employees=8)
    path = tmp_path / "enheter.json"
    path.write_bytes(
        api_page(
            brreg_unit(ORGNR_A, "Eidskog Stål AS", antallAnsatte=11),
            brreg_unit(ORGNR_B, "Magnor Sveis AS", konkurs=True),
        )
    )
    result = runner.invoke(args=["companies", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "enheter.json: Brønnøysund JSON, 2 rows" in result.stdout
    changes = result.stdout.split(f"{ORGNR_A}  Eidskog Stål AS\n", 1)[1]
    assert "      employees: 8 → 11\n" in changes
    assert "      street_address: — → Industrivegen 4\n" in changes
    assert f"{ORGNR_B}  Magnor Sveis AS  (prospect)  [bankrupt]" in result.stdout
    assert f"{ORGNR_B} Magnor Sveis AS: Bankrupt according to the register" in result.stdout
    assert "Created: 1  Updated: 1  Unchanged: 0  Errors: 0" in result.stdout
    with app.app_context():
        assert db.session.scalar(db.select(Company.employees).filter_by(orgnr=ORGNR_A)) == 11
        entry = db.session.scalar(
            db.select(AuditEntry).filter_by(record_type="company", record_label="Magnor Sveis AS")
        )
        assert entry.actor == "import: enheter.json"

    again = runner.invoke(args=["companies", "import", str(path)])
    assert again.exit_code == 0
    assert "Created: 0  Updated: 0  Unchanged: 2  Errors: 0" in again.stdout


def test_cli_with_a_bad_row_exits_non_zero_names_the_line_and_writes_nothing(app, runner, tmp_path):
    with app.app_context():
        make_company("Grue Bygg AS", orgnr=ORGNR_A, employees=8)
    path = tmp_path / "companies.csv"
    path.write_text(
        f"orgnr;name;employees\n{ORGNR_A};Grue Bygg AS;9\n{ORGNR_B};Ny AS;mange\n"
        f"{ORGNR_C};Annen AS;3\n"
    )
    result = runner.invoke(args=["companies", "import", str(path)])
    assert result.exit_code == 1
    assert "line 3: employees: 'mange' is not a whole number of employees." in result.stderr
    assert "Nothing was imported." in result.stderr
    with app.app_context():
        assert db.session.scalar(db.select(Company.employees).filter_by(orgnr=ORGNR_A)) == 8
        assert _count(Company) == 1


def test_cli_dry_run_reports_but_writes_nothing(app, runner, tmp_path):
    with app.app_context():
        audit_rows = _count(AuditEntry)
    path = tmp_path / "companies.csv"
    path.write_text(f"orgnr,name\n{ORGNR_A},Prøve AS\n", encoding="utf-8")
    result = runner.invoke(args=["companies", "import", "--dry-run", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{ORGNR_A}  Prøve AS  (prospect)" in result.stdout
    assert "Dry run: nothing was written." in result.stdout
    with app.app_context():
        assert _count(Company) == 0
        assert _count(AuditEntry) == audit_rows


def test_cli_refuses_an_unreadable_file(app, runner, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    result = runner.invoke(args=["companies", "import", str(path)])
    assert result.exit_code == 1
    assert "file: The file is empty." in result.stderr


def test_cli_shows_a_progress_bar_for_big_files(app, runner, tmp_path):
    from crm.members.normalize import make_orgnr

    orgnrs = [o for o in (make_orgnr(f"{n:08d}") for n in range(81_000_000, 81_001_400)) if o]
    path = tmp_path / "big.csv"
    path.write_text("orgnr;name\n" + "".join(f"{o};Firma {o} AS\n" for o in orgnrs))
    result = runner.invoke(args=["companies", "import", "--dry-run", str(path)])
    assert result.exit_code == 0, result.output
    assert "Checking" in result.stderr
    assert f"Created: {len(orgnrs)}" in result.stdout
