"""Tables (CSV text or an XLSX workbook): header aliases, one company record per row.

The headers of our own export are known in every UI language (crm.members.columns),
beside the aliases people use in Norwegian spreadsheets, so an exported list imports
back column for column.
"""

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime

from openpyxl import load_workbook

from crm.members.columns import (
    COMPANY_COLUMNS,
    COMPANY_DERIVED,
    header_aliases,
    in_every_language,
)
from crm.members.forms import ORG_FORMS
from crm.members.importing.fields import clean_text, parse_date, parse_datetime, set_employees
from crm.members.importing.messages import N_, Message
from crm.members.importing.records import (
    CSV_ALIASES,
    CSV_COLUMNS,
    MEMBERSHIP_ALIASES,
    ParsedFile,
    Record,
)
from crm.spreadsheet import FORMULA_TRIGGERS


def header_key(name: str, labels: dict[str, str]) -> str:
    """The column a header names: an export label (any language), an alias, or itself."""
    if name.strip().casefold() in labels:
        return labels[name.strip().casefold()]
    key = re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")
    return CSV_ALIASES.get(key, key)


def clean_cell(value: str) -> str:
    """A cell's text, without the quote our export puts before formula-like text."""
    value = clean_text(value)
    if value.startswith("'") and value[1:2] and value[1:2] in FORMULA_TRIGGERS:
        return value[1:]
    return value


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def csv_rows(text: str, parsed: ParsedFile) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each row of CSV text; a malformed file is a file error."""
    lines_before = 0
    first_line = text.split("\n", 1)[0].strip()
    sep_hint = re.fullmatch(r"sep=([;,\t|])", first_line)
    if sep_hint:  # Excel's "sep=;" first line names the delimiter
        delimiter = sep_hint.group(1)
        text = text.split("\n", 1)[1] if "\n" in text else ""
        lines_before = 1
    else:
        delimiter = _sniff_delimiter(first_line)
    parsed.delimiter = delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous_end = 0
    try:
        for cells in reader:
            line = lines_before + previous_end + 1
            previous_end = reader.line_num
            yield line, [clean_cell(c) for c in cells]
    except csv.Error as exc:
        parsed.error(
            Message(N_("The CSV is malformed: %(reason)s."), reason=str(exc)),
            lines_before + reader.line_num,
        )


# A workbook is a zip archive: 10 MB of it can unpack to gigabytes, and one cell at
# XFD1048576 makes openpyxl hand out a million rows of 16,384 cells each. What is read
# stays within Excel's own rows and a generous number of columns, and the archive
# within what a 10 MB spreadsheet honestly unpacks to.
XLSX_MAX_UNPACKED_BYTES = 200 * 1024 * 1024
XLSX_MAX_ROWS = 1_048_576
XLSX_MAX_COLUMNS = 256


def _unpacked_size(data: bytes) -> int:
    """The sizes the archive declares for its members (zipfile reads no further)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(item.file_size for item in archive.infolist())


def xlsx_rows(data: bytes, parsed: ParsedFile) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells as text) of the first sheet of an XLSX workbook; empty rows
    are left out, and only the first XLSX_MAX_COLUMNS columns are read."""
    try:
        if _unpacked_size(data) > XLSX_MAX_UNPACKED_BYTES:
            parsed.error(
                Message(
                    N_("The Excel workbook is too large unpacked: at most %(mb)s MB."),
                    mb=XLSX_MAX_UNPACKED_BYTES // (1024 * 1024),
                )
            )
            return
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        sheet = workbook.worksheets[0]
        # The sheet's own width (its dimension, or what openpyxl finds), within bounds.
        columns = min(sheet.max_column or XLSX_MAX_COLUMNS, XLSX_MAX_COLUMNS)
        rows = sheet.iter_rows(max_row=XLSX_MAX_ROWS, max_col=columns, values_only=True)
        for number, values in enumerate(rows, start=1):
            if values.count(None) < len(values):  # counted in C: a million empty rows
                yield number, [clean_cell(cell_text(v)) for v in values]
    # SyntaxError: lxml's and ElementTree's XML errors (a broken sheet) derive from it.
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, IndexError, SyntaxError) as exc:
        parsed.error(
            Message(N_("The Excel workbook could not be read: %(reason)s."), reason=str(exc)[:200])
        )


def cell_text(value) -> str:
    """A workbook cell as the text a CSV file would hold (dates dd.mm.yyyy)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        if (value.hour, value.minute, value.second) == (0, 0, 0):
            return value.strftime("%d.%m.%Y")
        return value.strftime("%d.%m.%Y %H:%M")
    if isinstance(value, date):
        return value.strftime("%d.%m.%Y")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_company_rows(rows: Iterable[tuple[int, list[str]]], parsed: ParsedFile) -> None:
    """Company records from a table's rows: the first non-empty row is the header."""
    labels = header_aliases(COMPANY_COLUMNS)
    values = _value_labels()
    header: list[str] | None = None
    for line, cells in rows:
        if not any(cells):
            continue
        if header is None:
            header = [header_key(c, labels) for c in cells]
            if not _check_header(header, parsed, line):
                return
            continue
        parsed.records.append(_csv_record(line, header, cells, values))
    if header is None and not parsed.errors:
        parsed.error(Message(N_("The file is empty.")))


def _check_header(header: list[str], parsed: ParsedFile, line: int) -> bool:
    seen: set[str] = set()
    for name in header:
        if not name:
            continue
        if name in seen:
            parsed.error(Message(N_("The column %(column)s appears twice."), column=name), line)
        seen.add(name)
        if name not in CSV_COLUMNS and name not in COMPANY_DERIVED:
            parsed.warning(
                Message(N_("The column %(column)s is not known and was ignored."), column=name),
                line,
            )
    if "orgnr" not in seen:
        parsed.error(
            Message(
                N_("The header row has no orgnr column. Columns found: %(columns)s."),
                columns=", ".join(h for h in header if h)[:300] or "—",
            ),
            line,
        )
    return not parsed.errors


def _set_registry_flags(record: Record, raw: str, labels: dict[str, str]) -> None:
    """The export's "Register warnings" cell: the flags named are set, the others cleared."""
    named = set()
    for item in filter(None, (part.strip().casefold() for part in raw.split(","))):
        if item not in labels:
            record.errors.append(
                Message(N_("Unknown register warning %(value)s."), value=repr(item[:50]))
            )
            return
        named.add(labels[item])
    for flag in ("bankrupt", "winding_up", "forced_dissolution"):
        record.values[flag] = flag in named


def _value_labels() -> dict[str, dict[str, str]]:
    """The words our export writes for codes, in every UI language."""
    from crm.members.services import MEMBERSHIP_LABELS, WARNING_LABELS

    return {
        "membership": in_every_language(MEMBERSHIP_LABELS),
        "warnings": in_every_language(WARNING_LABELS),
    }


def _csv_record(
    line: int, header: list[str], cells: list[str], labels: dict[str, dict[str, str]]
) -> Record:
    record = Record(line=line, orgnr="", values={})
    if len(cells) > len(header) and any(cells[len(header) :]):
        record.errors.append(
            Message(
                N_("The row has %(cells)s fields but the header has %(columns)s."),
                cells=len(cells),
                columns=len(header),
            )
        )
    row = dict(zip(header, cells, strict=False))
    record.orgnr = row.get("orgnr", "")
    values = record.values
    for column in CSV_COLUMNS[1:]:
        raw = row.get(column, "")
        if not raw:
            continue  # an empty cell leaves the stored value as it is
        if column == "org_form":
            code = raw.upper()
            by_name = {v.casefold(): k for k, v in ORG_FORMS.items()}
            code = by_name.get(raw.casefold(), code)
            values["org_form_code"] = code
            if code in ORG_FORMS:
                values["org_form_name"] = ORG_FORMS[code]
        elif column == "employees":
            set_employees(record, raw)
        elif column == "membership_status":
            status = MEMBERSHIP_ALIASES.get(raw.casefold()) or labels["membership"].get(
                raw.casefold()
            )
            if status is None:
                record.errors.append(
                    Message(
                        N_(
                            "Unknown membership status %(value)s: use prospect, member or resigned."
                        ),
                        value=repr(raw[:50]),
                    )
                )
            else:
                values["membership_status"] = status
        elif column == "registry_warnings":
            _set_registry_flags(record, raw, labels["warnings"])
        elif column == "archived":
            archived = parse_datetime(raw)
            if archived is None:
                record.errors.append(
                    Message(
                        N_("%(column)s: %(value)s is not a time (use dd.mm.yyyy hh:mm)."),
                        column=column,
                        value=repr(raw[:50]),
                    )
                )
            else:
                values["archived_at"] = archived
        elif column in ("member_since", "resigned_on", "deleted_in_registry_on"):
            parsed_date = parse_date(raw)
            if parsed_date is None:
                record.errors.append(
                    Message(
                        N_("%(column)s: %(value)s is not a date (use dd.mm.yyyy or yyyy-mm-dd)."),
                        column=column,
                        value=repr(raw[:50]),
                    )
                )
            else:
                values[column] = parsed_date
        elif column == "municipality_number":
            if not re.fullmatch(r"\d{4}", raw):
                record.errors.append(
                    Message(
                        N_("municipality_number: %(value)s is not a 4-digit number."),
                        value=repr(raw[:50]),
                    )
                )
            else:
                values[column] = raw
        else:
            values[column] = raw
    return record
