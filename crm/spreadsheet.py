"""Writing tables as CSV and XLSX: the one place every export goes through.

Cells are plain Python values: `str`, `int`, `Decimal`, `float`, `date`, `datetime`
(timezone-aware, shown in Europe/Oslo) or `None` (an empty cell). Callers turn
booleans and codes into the words people read before they get here.

Formula injection: a text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage
return could be run as a formula by Excel, LibreOffice or Google Sheets. Such cells
get a leading single quote (OWASP's advice), in CSV and XLSX alike. Numbers are never
touched: a negative amount passed as `Decimal` or `int` stays a number.

CSV for Norwegian Excel (`EXCEL_NB`, the default): UTF-8 with a byte order mark (without
it Excel reads the file as Windows-1252 and mangles æøå), `;` between fields (Excel
splits on the list separator of the user's regional settings, which is `;` wherever the
decimal mark is a comma, as in Norway), decimal comma, dates `dd.mm.yyyy`, CRLF line
ends. Double-clicking such a file opens it in columns with numbers as numbers.
`MACHINE` is for other programs: comma-separated, decimal point, ISO dates, no BOM.
Excel still drops leading zeros from CSV cells that look like numbers (postal code
`0150`); the XLSX export keeps text as text and is the better choice for Excel users.
"""

import csv
import io
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from flask import Response
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from crm.timeutil import OSLO

Cell = str | int | Decimal | float | date | datetime | None

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

# Excel refuses control characters in XLSX text (openpyxl raises IllegalCharacterError).
_ILLEGAL_XLSX = {c: None for c in range(32) if chr(c) not in "\t\n\r"}


@dataclass(frozen=True)
class CsvFormat:
    delimiter: str
    decimal_comma: bool
    byte_order_mark: bool
    date_format: str
    datetime_format: str


EXCEL_NB = CsvFormat(";", True, True, "%d.%m.%Y", "%d.%m.%Y %H:%M")
MACHINE = CsvFormat(",", False, False, "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z")

CSV_MIMETYPE = "text/csv; charset=utf-8"
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def neutralise(value: str) -> str:
    """`value` with a leading quote when a spreadsheet could read it as a formula.

    Spreadsheets (Excel with East Asian input above all) also take the full-width and
    small forms `＝＋－＠` / `﹦﹢﹣﹫` as formula signs: the first character is compared
    in its NFKC form, which maps each of them to its ASCII sign.
    """
    if value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    if (
        value
        and not value[0].isascii()
        and unicodedata.normalize("NFKC", value[0]).startswith(FORMULA_TRIGGERS)
    ):
        return "'" + value
    return value


def _local(value: datetime) -> datetime:
    return value.astimezone(OSLO) if value.tzinfo else value


def _csv_cell(value: Cell, fmt: CsvFormat) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, datetime):
        return _local(value).strftime(fmt.datetime_format)
    if isinstance(value, date):
        return value.strftime(fmt.date_format)
    if isinstance(value, bool | int):
        return str(int(value))
    if isinstance(value, Decimal | float):
        text = format(value, "f") if isinstance(value, Decimal) else repr(value)
        return text.replace(".", ",") if fmt.decimal_comma else text
    return neutralise(str(value))


def csv_bytes(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], fmt: CsvFormat = EXCEL_NB
) -> bytes:
    """The table as CSV in `fmt` (default: for Norwegian Excel), encoded UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=fmt.delimiter, lineterminator="\r\n")
    writer.writerow([_csv_cell(str(h), fmt) for h in headers])
    for row in rows:
        writer.writerow([_csv_cell(value, fmt) for value in row])
    text = buffer.getvalue()
    return ("\ufeff" + text if fmt.byte_order_mark else text).encode("utf-8")


def _xlsx_value(value: Cell):
    if isinstance(value, str):
        return neutralise(value.translate(_ILLEGAL_XLSX))
    if isinstance(value, datetime):
        # Excel has no time zones: write the Oslo wall-clock time people expect.
        return _local(value).replace(tzinfo=None)
    if isinstance(value, bool):
        return int(value)
    return value


def _width(value) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return 16
    if isinstance(value, date):
        return 10
    return min(len(str(value)), 60)


def xlsx_bytes(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], sheet_title: str = "Export"
) -> bytes:
    """The table as an XLSX workbook: bold frozen header row, real dates and numbers."""
    return workbook_bytes([(sheet_title, headers, rows)])


def workbook_bytes(sheets: Iterable[tuple[str, Sequence[str], Iterable[Sequence[Cell]]]]) -> bytes:
    """Several tables as one XLSX workbook, a sheet each: (title, headers, rows)."""
    workbook = Workbook(write_only=True)
    used: set[str] = set()
    for title, headers, rows in sheets:
        name = neutralise(title)[:31].lstrip("'").translate(_SHEET_NAME) or "Export"
        while name in used:  # sheet names are unique, at most 31 characters
            name = f"{name[:28]}_{len(used)}"
        used.add(name)
        _add_sheet(workbook, name, headers, rows)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# Excel refuses these in a sheet's name.
_SHEET_NAME = {ord(c): "-" for c in "[]:*?/\\"}


def _add_sheet(workbook, name: str, headers: Sequence[str], rows) -> None:
    rows = [[_xlsx_value(v) for v in row] for row in rows]
    sheet = workbook.create_sheet(title=name)
    sheet.freeze_panes = "A2"
    sample = rows[:500]
    for index, header in enumerate(headers, start=1):
        widest = max([len(str(header))] + [_width(r[index - 1]) for r in sample if len(r) >= index])
        sheet.column_dimensions[get_column_letter(index)].width = max(8, widest + 2)

    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="E8F1F8")
    header_cells = []
    for header in headers:
        cell = WriteOnlyCell(sheet, value=_xlsx_value(str(header)))
        cell.font = bold
        cell.fill = fill
        header_cells.append(cell)
    sheet.append(header_cells)

    top = Alignment(vertical="top")
    for row in rows:
        cells = []
        for value in row:
            cell = WriteOnlyCell(sheet, value=value)
            if isinstance(value, datetime):
                cell.number_format = "dd.mm.yyyy hh:mm"
            elif isinstance(value, date):
                cell.number_format = "dd.mm.yyyy"
            elif isinstance(value, Decimal):
                cell.number_format = "#,##0.00"
            if isinstance(value, str) and "\n" in value:
                cell.alignment = top
            cells.append(cell)
        sheet.append(cells)


def export_response(
    fmt: str,
    basename: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    sheet_title: str = "Export",
) -> Response:
    """A download of the table: `fmt` is "csv" (for Norwegian Excel) or "xlsx"."""
    if fmt == "xlsx":
        body, mimetype = xlsx_bytes(headers, rows, sheet_title), XLSX_MIMETYPE
    elif fmt == "csv":
        body, mimetype = csv_bytes(headers, rows), CSV_MIMETYPE
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{basename}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response
