"""Exports open cleanly in Norwegian Excel and cannot smuggle formulas into it."""

import io
from datetime import UTC, date, datetime
from decimal import Decimal

import openpyxl

from crm.spreadsheet import MACHINE, csv_bytes, neutralise, xlsx_bytes


def test_cells_that_could_be_formulas_get_a_leading_quote():
    for dangerous in ("=SUM(A1:A9)", "+47 912 34 567", "-2+3", "@cmd", "\tx", "\rx"):
        assert neutralise(dangerous) == "'" + dangerous
    assert neutralise("Kongsvinger AS") == "Kongsvinger AS"
    assert neutralise("") == ""


def test_full_width_and_small_formula_signs_are_neutralised_too():
    for dangerous in ("＝SUM(A1)", "＋47", "－2＋3", "＠cmd", "﹦1+1", "﹢1", "﹣1", "﹫x"):
        assert neutralise(dangerous) == "'" + dangerous
        data = csv_bytes(["a"], [[dangerous]], MACHINE).decode()
        assert data == f"a\r\n'{dangerous}\r\n"
    assert neutralise("Ålesund AS") == "Ålesund AS"
    assert neutralise("＄5") == "＄5"


def test_csv_for_norwegian_excel_has_bom_semicolons_and_decimal_comma():
    data = csv_bytes(
        ["Navn", "Beløp", "Dato"],
        [["Ås Mek; avd. 2", Decimal("12500.50"), date(2026, 3, 1)], ["=1+2", -3, None]],
    )
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "Navn;Beløp;Dato"
    assert lines[1] == '"Ås Mek; avd. 2";12500,50;01.03.2026'
    # A negative number stays a number; only text is neutralised.
    assert lines[2] == "'=1+2;-3;"


def test_machine_csv_uses_commas_decimal_point_and_iso_dates():
    data = csv_bytes(["a", "b", "c"], [[Decimal("12500.00"), date(2026, 3, 1), "@x"]], MACHINE)
    assert data.decode() == "a,b,c\r\n12500.00,2026-03-01,'@x\r\n"


def test_xlsx_keeps_numbers_and_dates_typed_and_neutralises_formulas():
    data = xlsx_bytes(
        ["Navn", "Ansatte", "Beløp", "Dato", "Tid"],
        [
            [
                '=HYPERLINK("http://evil")',
                42,
                Decimal("-12.50"),
                date(2026, 1, 2),
                datetime(2026, 6, 1, 10, 0, tzinfo=UTC),
            ],
            ["Grue\x00 Bygg", None, None, None, None],
        ],
        sheet_title="Bedrifter",
    )
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert sheet.title == "Bedrifter"
    assert sheet.freeze_panes == "A2"
    assert [c.value for c in sheet[1]] == ["Navn", "Ansatte", "Beløp", "Dato", "Tid"]
    name, employees, amount, day, moment = sheet[2]
    assert name.value == '\'=HYPERLINK("http://evil")' and name.data_type == "s"
    assert employees.value == 42 and employees.data_type == "n"
    assert amount.value == -12.5 and amount.data_type == "n"
    assert day.value == datetime(2026, 1, 2) and day.number_format == "dd.mm.yyyy"
    assert moment.value == datetime(2026, 6, 1, 12, 0)  # Oslo summer time
    assert sheet["A3"].value == "Grue Bygg"  # control characters Excel refuses are dropped
