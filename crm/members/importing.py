"""Company import: a CSV or Brønnøysund JSON file becomes an import plan, then one transaction.

`read_file` turns the bytes into records with line numbers (nothing touches the database),
`plan_import` matches them to companies by orgnr and says, row by row, what would be
created, updated (field by field) or left alone, and what is wrong. `apply_plan` writes a
plan only when it has no errors at all: an import is all or nothing.

CSV columns (header row; `;`, `,` or tab; UTF-8 with or without BOM, or Windows-1252):
orgnr (required), name, org_form, nace_code, nace_text, employees, street_address,
postal_code, postal_place, municipality_number, municipality_name, website,
membership_status, member_since, resigned_on, notes. An empty cell leaves the stored value
as it is.
"""

import bisect
import csv
import hashlib
import io
import json
import re
import secrets
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from flask_babel import gettext

from crm.audit import acting_as
from crm.extensions import db
from crm.members.forms import ORG_FORMS  # the organisation form codes staff choose from
from crm.members.models import Company
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.members.normalize import normalize_orgnr
from crm.numbers import is_digits

Progress = Callable[[int], None]


def N_(msgid: str) -> str:
    """Marks a message for translation; `Message` translates it when it is shown."""
    return msgid


class Message:
    """A message for people: English on the command line, translated on web pages."""

    __slots__ = ("msgid", "params")

    def __init__(self, msgid: str, **params: Any) -> None:
        self.msgid = msgid
        self.params = params

    def __str__(self) -> str:
        return self.msgid % self.params if self.params else self.msgid

    def __repr__(self) -> str:
        return f"Message({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def translated(self) -> str:
        return gettext(self.msgid, **self.params)


# --- what an import may set -------------------------------------------------------------

CSV_COLUMNS = tuple(
    (
        "orgnr name org_form nace_code nace_text employees street_address postal_code "
        "postal_place municipality_number municipality_name website membership_status "
        "member_since resigned_on notes"
    ).split()
)

# Header names people use in Norwegian spreadsheets, and the Brønnøysund field names.
CSV_ALIASES = {
    "organisasjonsnummer": "orgnr",
    "org_nr": "orgnr",
    "orgnummer": "orgnr",
    "navn": "name",
    "firmanavn": "name",
    "organisasjonsform": "org_form",
    "orgform": "org_form",
    "naeringskode": "nace_code",
    "næringskode": "nace_code",
    "nace": "nace_code",
    "naeringstekst": "nace_text",
    "næringstekst": "nace_text",
    "bransje": "nace_text",
    "ansatte": "employees",
    "antall_ansatte": "employees",
    "adresse": "street_address",
    "address": "street_address",
    "postnummer": "postal_code",
    "poststed": "postal_place",
    "kommunenummer": "municipality_number",
    "kommune": "municipality_name",
    "hjemmeside": "website",
    "nettside": "website",
    "status": "membership_status",
    "medlemsstatus": "membership_status",
    "medlem_siden": "member_since",
    "utmeldt": "resigned_on",
    "notater": "notes",
    "merknader": "notes",
}

MEMBERSHIP_ALIASES = {
    "prospect": "prospect",
    "prospekt": "prospect",
    "potensiell": "prospect",
    "member": "member",
    "medlem": "member",
    "resigned": "resigned",
    "utmeldt": "resigned",
    "sluttet": "resigned",
}


_LIMITED = {
    column.name: column.type.length
    for column in Company.__table__.columns
    if getattr(column.type, "length", None)
}
_LIMITED["notes"] = 10_000
MAX_EMPLOYEES = 1_000_000
# The fields, in the order a person reads a company, that an import compares and sets.
IMPORT_FIELDS = tuple(
    (
        "name org_form_code org_form_name nace_code nace_text employees street_address "
        "postal_code postal_place municipality_number municipality_name website "
        "membership_status member_since resigned_on notes bankrupt winding_up "
        "deleted_in_registry_on"
    ).split()
)
REGISTRY_FLAGS = {
    "bankrupt": N_("Bankrupt according to the register"),
    "winding_up": N_("Being wound up according to the register"),
    "deleted_in_registry_on": N_("Deleted from the register on %(date)s"),
}


# --- results ----------------------------------------------------------------------------


@dataclass
class Record:
    """One row of a CSV file or one unit of a JSON file, not yet checked against the database."""

    line: int
    orgnr: str
    values: dict[str, Any]
    errors: list[Message] = field(default_factory=list)
    unit: int | None = None  # position in a JSON array, 1-based


@dataclass
class ParsedFile:
    source: str  # "csv" | "brreg" | "" (unreadable)
    records: list[Record] = field(default_factory=list)
    errors: list["Issue"] = field(default_factory=list)  # about the file, not one row
    warnings: list["Issue"] = field(default_factory=list)
    delimiter: str = ""
    encoding: str = ""

    def error(self, message: "Message", line: int = 0) -> None:
        self.errors.append(Issue(line, message))

    def warning(self, message: "Message", line: int = 0) -> None:
        self.warnings.append(Issue(line, message))


@dataclass
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass
class PlanRow:
    line: int
    orgnr: str
    name: str
    action: str  # create | update | unchanged | error
    values: dict[str, Any] = field(default_factory=dict)
    changes: list[FieldChange] = field(default_factory=list)
    errors: list[Message] = field(default_factory=list)
    warnings: list[Message] = field(default_factory=list)
    company_id: int | None = None
    before: dict[str, Any] = field(default_factory=dict)  # the stored values, for updates
    unit: int | None = None
    shares_line: bool = False

    @property
    def where(self) -> str:
        """`line 7`, or `line 1 (unit 5)` in a JSON file with several units on one line."""
        if self.shares_line and self.unit is not None:
            return f"line {self.line} (unit {self.unit})"
        return f"line {self.line}"

    @property
    def shown_unit(self) -> int | None:
        return self.unit if self.shares_line else None

    def issue(self, message: "Message") -> "Issue":
        return Issue(self.line, message, self.orgnr, self.name, self.where, self.shown_unit)

    def display_changes(self) -> list[FieldChange]:
        """Changes as people read them: a code and its description make one line."""
        by_field = {c.field: c for c in self.changes}
        shown = []
        for change in self.changes:
            pair = _DISPLAY_PAIRS.get(change.field)
            if pair is None:
                shown.append(change)
                continue
            code_field, text_field, label = pair
            if change.field != code_field and code_field in by_field:
                continue  # already shown with its code
            old = _joined(self, by_field, code_field, text_field, "old")
            new = _joined(self, by_field, code_field, text_field, "new")
            shown.append(FieldChange(label, old, new))
        return shown

    @property
    def flags(self) -> list[str]:
        """Registry flags the company carries after the import."""
        return [
            flag
            for flag in ("bankrupt", "winding_up", "deleted_in_registry_on")
            if self.values.get(flag)
        ]


# Fields shown together in a preview: (code field, text field, the label to show them under).
_DISPLAY_GROUPS = (
    ("org_form_code", "org_form_name", "org_form_code"),
    ("nace_code", "nace_text", "nace_text"),
    ("municipality_number", "municipality_name", "municipality_name"),
    ("postal_code", "postal_place", "postal_place"),
)
_DISPLAY_PAIRS = {field: group for group in _DISPLAY_GROUPS for field in group[:2]}


def _joined(row: PlanRow, by_field: dict, code_field: str, text_field: str, side: str) -> str:
    parts = []
    for name in (code_field, text_field):
        if name in by_field:
            parts.append(getattr(by_field[name], side))
        else:  # unchanged: as stored (a new company has nothing stored)
            parts.append(row.before.get(name))
    return " ".join(str(p) for p in parts if p not in (None, ""))


@dataclass
class Issue:
    """An error or warning as shown to people: where, which company, what."""

    line: int
    message: Message
    orgnr: str = ""
    name: str = ""
    where: str = ""
    shown_unit: int | None = None  # the JSON unit's number, when several share the line

    def __post_init__(self) -> None:
        self.where = self.where or (f"line {self.line}" if self.line else "file")

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ImportPlan:
    filename: str
    source: str
    rows: list[PlanRow] = field(default_factory=list)
    file_errors: list["Issue"] = field(default_factory=list)
    file_warnings: list["Issue"] = field(default_factory=list)
    delimiter: str = ""
    encoding: str = ""

    def _rows(self, action: str) -> list[PlanRow]:
        return [row for row in self.rows if row.action == action]

    @property
    def creates(self) -> list[PlanRow]:
        return self._rows("create")

    @property
    def updates(self) -> list[PlanRow]:
        return self._rows("update")

    @property
    def unchanged(self) -> list[PlanRow]:
        return self._rows("unchanged")

    @property
    def error_rows(self) -> list[PlanRow]:
        return self._rows("error")

    @property
    def errors(self) -> list[Issue]:
        """Every error, file-level first, then by line."""
        issues = list(self.file_errors)
        for row in self.rows:
            issues.extend(row.issue(m) for m in row.errors)
        return issues

    @property
    def warnings(self) -> list[Issue]:
        issues = list(self.file_warnings)
        for row in self.rows:
            if row.action != "error":
                issues.extend(row.issue(m) for m in row.warnings)
        return issues

    @property
    def ok(self) -> bool:
        return not self.file_errors and not self.error_rows

    @property
    def changes_count(self) -> int:
        return len(self.creates) + len(self.updates)

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.creates),
            "updated": len(self.updates),
            "unchanged": len(self.unchanged),
            "errors": len(self.error_rows) + len(self.file_errors),
        }

    def fingerprint(self) -> str:
        """A digest of what applying the plan would do, to notice a changed database."""
        digest = hashlib.sha256()
        for row in self.rows:
            changes = [(c.field, display_value(c.old), display_value(c.new)) for c in row.changes]
            digest.update(json.dumps([row.action, row.orgnr, changes]).encode())
        return digest.hexdigest()[:32]


class ImportRejected(Exception):
    """The plan has errors; nothing was written."""

    def __init__(self, errors: list[Issue]) -> None:
        super().__init__(f"{len(errors)} errors")
        self.errors = errors


def display_value(value: Any) -> str:
    """A value as the command line shows it: dates dd.mm.yyyy, booleans yes/no, empty —."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, date):
        return value.strftime("%d.%m.%Y")
    return str(value)


# --- reading bytes ----------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# NUL and lone surrogates: PostgreSQL refuses them in text, so a value holding one is an error.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _decode(data: bytes, parsed: ParsedFile) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            parsed.encoding = "utf-16"
            return data.decode("utf-16")
        except UnicodeDecodeError:
            parsed.error(Message(N_("The file's character encoding could not be read.")))
            return None
    if data.startswith(b"PK\x03\x04"):
        parsed.error(
            Message(N_("This looks like an Excel workbook. Save it as CSV and upload that."))
        )
        return None
    if b"\x00" in data:
        parsed.error(Message(N_("This is not a CSV or JSON file.")))
        return None
    try:
        parsed.encoding = "utf-8"
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            # Excel on Windows saves CSV as Windows-1252 unless told otherwise.
            text = data.decode("cp1252")
            parsed.encoding = "cp1252"
            parsed.warning(
                Message(N_("The file is not UTF-8; it was read as Windows-1252 (Excel)."))
            )
        except UnicodeDecodeError:
            parsed.error(
                Message(
                    N_("The file's character encoding is not UTF-8 or Windows-1252."),
                )
            )
            return None
    if _CONTROL.search(text[:100_000]):
        parsed.error(Message(N_("This is not a CSV or JSON file.")))
        return None
    return text


def read_file(data: bytes) -> ParsedFile:
    """Records with line numbers from a CSV or Brønnøysund JSON file, detected by content."""
    parsed = ParsedFile(source="")
    if not data.strip():
        parsed.error(Message(N_("The file is empty.")))
        return parsed
    text = _decode(data, parsed)
    if text is None:
        return parsed
    start = text.lstrip()[:1]
    if start in ("[", "{"):
        parsed.source = "brreg"
        _read_json(text, parsed)
    else:
        parsed.source = "csv"
        _read_csv(text, parsed)
    if not parsed.errors and not parsed.records:
        parsed.warning(Message(N_("The file has no companies.")))
    return parsed


# --- CSV --------------------------------------------------------------------------------


def _header_key(name: str) -> str:
    key = re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")
    return CSV_ALIASES.get(key, key)


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _clean(value: str) -> str:
    return value.replace("\u00a0", " ").strip()


def _read_csv(text: str, parsed: ParsedFile) -> None:
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
    header: list[str] | None = None
    previous_end = 0
    try:
        for cells in reader:
            line = lines_before + previous_end + 1
            previous_end = reader.line_num
            cells = [_clean(c) for c in cells]
            if not any(cells):
                continue
            if header is None:
                header = [_header_key(c) for c in cells]
                if not _check_header(header, parsed, line):
                    return
                continue
            parsed.records.append(_csv_record(line, header, cells))
    except csv.Error as exc:
        parsed.error(
            Message(N_("The CSV is malformed: %(reason)s."), reason=str(exc)),
            lines_before + reader.line_num,
        )
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
        if name not in CSV_COLUMNS:
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


def _csv_record(line: int, header: list[str], cells: list[str]) -> Record:
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
            _set_employees(record, raw)
        elif column == "membership_status":
            status = MEMBERSHIP_ALIASES.get(raw.casefold())
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
        elif column in ("member_since", "resigned_on"):
            parsed_date = _parse_date(raw)
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


def _set_employees(record: Record, raw: Any) -> None:
    if isinstance(raw, str):
        digits = raw.replace(" ", "")
        number = int(digits) if is_digits(digits) else None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        number = raw if raw >= 0 else None
    else:
        number = None
    if number is None or number > MAX_EMPLOYEES:
        record.errors.append(
            Message(
                N_("employees: %(value)s is not a whole number of employees."),
                value=repr(str(raw)[:50]),
            )
        )
    else:
        record.values["employees"] = number


def _parse_date(raw: str) -> date | None:
    for pattern in ("%d.%m.%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, pattern).date()
        except ValueError:
            continue
    return None


# --- Brønnøysund JSON -------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _array_items(text: str, pos: int) -> list[tuple[int, Any]]:
    """(start offset, value) of each element of the JSON array starting at `pos`."""
    items = []
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "]":
        return items
    while True:
        value, end = _DECODER.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        else:
            return items


def _member_offset(text: str, pos: int, key: str) -> int | None:
    """Offset of the value of `key` in the JSON object starting at `pos`."""
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "}":
        return None
    found = None
    while True:
        name, end = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, end) + 1)  # past the colon
        if name == key:
            found = pos  # the last duplicate wins, as in json.loads
        _value, end = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, end)
        if text[pos] != ",":
            return found
        pos = _skip_ws(text, pos + 1)


def _read_json(text: str, parsed: ParsedFile) -> None:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        parsed.error(
            Message(
                N_("The file is not valid JSON (column %(column)s: %(reason)s)."),
                column=exc.colno,
                reason=exc.msg,
            ),
            exc.lineno,
        )
        return
    except RecursionError:
        parsed.error(Message(N_("The JSON is nested too deeply to be Brønnøysund data.")))
        return
    start = _skip_ws(text, 0)
    if isinstance(document, list):
        items = _array_items(text, start)
    elif isinstance(document, dict) and "organisasjonsnummer" in document:
        items = [(start, document)]  # a single unit, as the API's /enheter/{orgnr} returns
    elif isinstance(document, dict) and isinstance(document.get("_embedded"), dict):
        embedded = _member_offset(text, start, "_embedded")
        units = _member_offset(text, embedded, "enheter")
        if units is None or not isinstance(document["_embedded"].get("enheter"), list):
            parsed.error(Message(N_("The JSON has no list of units (_embedded.enheter).")))
            return
        items = _array_items(text, units)
    elif isinstance(document, dict) and "page" in document:
        return  # an API search page without hits has no _embedded at all
    else:
        parsed.error(
            Message(
                N_(
                    "The JSON is not Brønnøysund data: expected a list of units or "
                    "an API search page."
                )
            )
        )
        return
    newlines = [m.start() for m in re.finditer("\n", text)]
    for index, (offset, unit) in enumerate(items, start=1):
        line = bisect.bisect_left(newlines, offset) + 1
        parsed.records.append(_unit_record(line, index, unit))


def _text(unit: dict, key: str, record: Record) -> str | None:
    value = unit.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return _clean(value)
    record.errors.append(Message(N_("%(field)s must be text."), field=key))
    return None


def _place_name(value: str) -> str:
    """KONGSVINGER → Kongsvinger, VÅLER I SOLØR → Våler i Solør (the register shouts)."""
    if not value.isupper():
        return value
    small = {"i", "på", "og"}
    words = value.title().split(" ")
    return " ".join(w.lower() if i and w.lower() in small else w for i, w in enumerate(words))


def _unit_record(line: int, index: int, unit: Any) -> Record:
    record = Record(line=line, orgnr="", values={}, unit=index)
    if not isinstance(unit, dict):
        record.errors.append(Message(N_("This entry is not a unit (a JSON object).")))
        return record
    orgnr = unit.get("organisasjonsnummer")
    if isinstance(orgnr, int) and not isinstance(orgnr, bool):
        orgnr = str(orgnr)
    if not isinstance(orgnr, str) or not orgnr.strip():
        record.errors.append(Message(N_("The unit has no organisasjonsnummer.")))
    else:
        record.orgnr = orgnr.strip()
    values = record.values
    name = _text(unit, "navn", record)
    if name:
        values["name"] = name
    for key, code_field, text_field in (
        ("organisasjonsform", "org_form_code", "org_form_name"),
        ("naeringskode1", "nace_code", "nace_text"),
    ):
        block = unit.get(key)
        if block is None:
            continue
        if not isinstance(block, dict):
            record.errors.append(Message(N_("%(field)s must be an object."), field=key))
            continue
        code = _text(block, "kode", record)
        description = _text(block, "beskrivelse", record)
        values[code_field] = code or ""
        values[text_field] = description or ""
    if "antallAnsatte" in unit and unit["antallAnsatte"] is not None:
        _set_employees(record, unit["antallAnsatte"])
    website = _text(unit, "hjemmeside", record)
    if website:  # the register rarely knows a website: never erase one staff entered
        values["website"] = website
    address = unit.get("forretningsadresse")
    if isinstance(address, dict):
        lines = address.get("adresse") or []
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            record.errors.append(Message(N_("%(field)s must be a list of text."), field="adresse"))
            lines = []
        values["street_address"] = ", ".join(_clean(x) for x in lines if x and x.strip())
        values["postal_code"] = _text(address, "postnummer", record) or ""
        values["postal_place"] = _place_name(_text(address, "poststed", record) or "")
        number = _text(address, "kommunenummer", record) or ""
        values["municipality_number"] = number
        values["municipality_name"] = CLUSTER_MUNICIPALITIES.get(number) or _place_name(
            _text(address, "kommune", record) or ""
        )
    elif address is not None:
        record.errors.append(
            Message(N_("%(field)s must be an object."), field="forretningsadresse")
        )
    for key, target in (("konkurs", "bankrupt"), ("underAvvikling", "winding_up")):
        if key not in unit or unit[key] is None:
            continue
        if not isinstance(unit[key], bool):
            record.errors.append(Message(N_("%(field)s must be true or false."), field=key))
        else:
            values[target] = unit[key]
    if unit.get("slettedato") is not None:
        raw = unit["slettedato"]
        deleted = _parse_date(raw) if isinstance(raw, str) else None
        if deleted is None:
            record.errors.append(
                Message(
                    N_("%(column)s: %(value)s is not a date (use dd.mm.yyyy or yyyy-mm-dd)."),
                    column="slettedato",
                    value=repr(str(raw)[:50]),
                )
            )
        else:
            values["deleted_in_registry_on"] = deleted
    return record


# --- planning ---------------------------------------------------------------------------


def _printable(text: str) -> str:
    """Text safe to show and print: a lone surrogate from a JSON escape becomes '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def name_key(name: str) -> str:
    """A company name reduced for duplicate hints: case, accents, punctuation, org form."""
    folded = unicodedata.normalize("NFKD", name.casefold())
    words = re.findall(r"\w+", folded)
    while words and words[-1].upper() in ORG_FORMS:
        words.pop()
    return " ".join(words)


def _same(old: Any, new: Any, case_insensitive: bool) -> bool:
    if old is None and new == "":
        return True
    if case_insensitive and isinstance(old, str) and isinstance(new, str):
        return old.casefold() == new.casefold()
    return old == new


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def plan_import(parsed: ParsedFile, filename: str, progress: Progress | None = None) -> ImportPlan:
    """What importing `parsed` would do to the database, row by row. Writes nothing."""
    plan = ImportPlan(
        filename=filename,
        source=parsed.source,
        file_errors=list(parsed.errors),
        file_warnings=list(parsed.warnings),
        delimiter=parsed.delimiter,
        encoding=parsed.encoding,
    )
    if parsed.errors:
        return plan
    per_line = Counter(r.line for r in parsed.records)
    shared = {line for line, n in per_line.items() if n > 1}
    first_line_of: dict[str, int] = {}
    for record in parsed.records:
        row = PlanRow(
            line=record.line,
            orgnr=record.orgnr,
            name=_printable(record.values.get("name", "")),
            action="error" if record.errors else "create",
            values=dict(record.values),
            errors=list(record.errors),
            unit=record.unit,
            shares_line=record.line in shared,
        )
        plan.rows.append(row)
        if not record.orgnr:
            if not row.errors:
                row.errors.append(Message(N_("The organisation number is missing.")))
            row.action = "error"
            continue
        try:
            row.orgnr = normalize_orgnr(record.orgnr)
        except ValueError:
            row.orgnr = _printable(record.orgnr[:20])
            row.errors.insert(
                0,
                Message(
                    N_("%(orgnr)s is not a valid organisation number."),
                    orgnr=repr(record.orgnr[:20]),
                ),
            )
            row.action = "error"
            continue
        if row.orgnr in first_line_of:
            row.errors.append(
                Message(
                    N_("Organisation number %(orgnr)s is in the file twice (also line %(line)s)."),
                    orgnr=row.orgnr,
                    line=first_line_of[row.orgnr],
                )
            )
            row.action = "error"
        else:
            first_line_of[row.orgnr] = row.line
        for key, value in row.values.items():
            limit = _LIMITED.get(key)
            if isinstance(value, str) and _UNSTORABLE.search(value):
                row.errors.append(
                    Message(N_("%(field)s contains characters that cannot be stored."), field=key)
                )
                row.action = "error"
            elif limit and isinstance(value, str) and len(value) > limit:
                row.errors.append(
                    Message(
                        N_("%(field)s is too long (%(length)s characters; at most %(limit)s)."),
                        field=key,
                        length=len(value),
                        limit=limit,
                    )
                )
                row.action = "error"
    _match_existing(plan, case_insensitive=parsed.source == "brreg", progress=progress)
    return plan


def _match_existing(plan: ImportPlan, case_insensitive: bool, progress: Progress | None) -> None:
    valid = [row for row in plan.rows if row.orgnr and row.action != "error"]
    by_key: dict[str, tuple[str, str]] = {}
    for orgnr, name in db.session.execute(db.select(Company.orgnr, Company.name)):
        by_key.setdefault(name_key(name), (orgnr, name))
    new_names: dict[str, PlanRow] = {}
    for chunk in _chunks(valid, 500):
        existing = {
            c.orgnr: c
            for c in db.session.scalars(
                db.select(Company).where(Company.orgnr.in_([r.orgnr for r in chunk]))
            )
        }
        for row in chunk:
            company = existing.get(row.orgnr)
            if company is None:
                _plan_create(row, by_key, new_names)
            else:
                _plan_update(row, company, case_insensitive)
        if progress:
            progress(len(chunk))
    if progress:
        progress(len(plan.rows) - len(valid))


def _flag_warnings(row: PlanRow, before: Company | None) -> None:
    for flag, msgid in REGISTRY_FLAGS.items():
        new = row.values.get(flag)
        old = getattr(before, flag) if before is not None else None
        if new and not old:
            params = {"date": display_value(new)} if flag == "deleted_in_registry_on" else {}
            row.warnings.append(Message(msgid, **params))


def _plan_create(row: PlanRow, by_key: dict, new_names: dict) -> None:
    values = row.values
    if not values.get("name"):
        row.errors.append(Message(N_("The name is missing (needed for a new company).")))
        row.action = "error"
        return
    values.setdefault("membership_status", "prospect")
    if values.get("municipality_number") and not values.get("municipality_name"):
        values["municipality_name"] = CLUSTER_MUNICIPALITIES.get(values["municipality_number"], "")
    row.changes = [
        FieldChange(f, None, values[f]) for f in IMPORT_FIELDS if values.get(f) not in (None, "")
    ]
    key = name_key(values["name"])
    twin = by_key.get(key)
    if twin and twin[0] != row.orgnr:
        row.warnings.append(
            Message(
                N_("Possible duplicate of %(name)s (%(orgnr)s): same name, other orgnr."),
                name=twin[1],
                orgnr=twin[0],
            )
        )
    elif key in new_names:
        other = new_names[key]
        row.warnings.append(
            Message(
                N_("Possible duplicate of %(name)s on line %(line)s: same name, other orgnr."),
                name=other.name,
                line=other.line,
            )
        )
    new_names.setdefault(key, row)
    _flag_warnings(row, None)


def _plan_update(row: PlanRow, company: Company, case_insensitive: bool) -> None:
    row.company_id = company.id
    row.before = {f: getattr(company, f) for f in IMPORT_FIELDS}
    values = row.values
    if values.get("municipality_number") and "municipality_name" not in values:
        name = CLUSTER_MUNICIPALITIES.get(values["municipality_number"])
        if name:
            values["municipality_name"] = name
    row.changes = [
        FieldChange(f, getattr(company, f), values[f])
        for f in IMPORT_FIELDS
        if f in values and not _same(getattr(company, f), values[f], case_insensitive)
    ]
    row.name = company.name
    # Flags shown are those after the import: stored ones stay unless the file changes them.
    for flag in ("bankrupt", "winding_up", "deleted_in_registry_on"):
        values.setdefault(flag, getattr(company, flag))
    row.action = "update" if row.changes else "unchanged"
    if company.archived_at is not None and row.changes:
        row.warnings.append(Message(N_("This company is archived.")))
    _flag_warnings(row, company)
    for change in row.changes:
        if change.field == "name":
            row.name = change.new


# --- applying ---------------------------------------------------------------------------


def apply_plan(plan: ImportPlan, *, user=None, progress: Progress | None = None) -> dict:
    """Write a plan in the current transaction (the caller commits). All or nothing.

    Raises ImportRejected, writing nothing, when any row has an error. Audit entries name
    the file (`import: <filename>`) and, from the web, the staff user who confirmed.
    """
    if not plan.ok:
        raise ImportRejected(plan.errors)
    with acting_as(f"import: {plan.filename}", user):
        pending = 0
        for row in plan.rows:
            if row.action == "create":
                fields = {f: row.values[f] for f in IMPORT_FIELDS if f in row.values}
                db.session.add(Company(orgnr=row.orgnr, **fields))
            elif row.action == "update":
                company = db.session.get(Company, row.company_id)
                for change in row.changes:
                    setattr(company, change.field, change.new)
            pending += 1
            if pending == 500:
                db.session.flush()
                if progress:
                    progress(pending)
                pending = 0
        db.session.flush()
        if progress and pending:
            progress(pending)
    return plan.counts()


def plan_bytes(data: bytes, filename: str, progress: Progress | None = None) -> ImportPlan:
    """`read_file` then `plan_import`: the whole dry run for one file."""
    return plan_import(read_file(data), filename, progress=progress)


# --- uploads kept between preview and confirm -------------------------------------------

UPLOAD_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
UPLOAD_MAX_AGE = 24 * 3600


def clean_filename(name: str | None) -> str:
    """The base name of an uploaded file, safe to show and to put in the audit log."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _CONTROL.sub("", base).strip()
    return base[:100] or "upload"


def save_upload(directory: Path, data: bytes, filename: str, user_id: int) -> str:
    """Keep an uploaded file server-side; returns the random token that names it."""
    directory.mkdir(parents=True, exist_ok=True)
    _remove_expired(directory)
    token = secrets.token_urlsafe(32)
    (directory / f"{token}.upload").write_bytes(data)
    meta = {"filename": clean_filename(filename), "user_id": user_id, "at": time.time()}
    (directory / f"{token}.json").write_text(json.dumps(meta))
    return token


def load_upload(directory: Path, token: str | None, user_id: int) -> tuple[bytes, str] | None:
    """The bytes and file name behind `token`, if it is well-formed, fresh and `user_id`'s."""
    if not token or not UPLOAD_TOKEN.fullmatch(token):
        return None
    try:
        meta = json.loads((directory / f"{token}.json").read_text())
        data = (directory / f"{token}.upload").read_bytes()
    except (OSError, ValueError):
        return None
    if meta.get("user_id") != user_id or time.time() - meta.get("at", 0) > UPLOAD_MAX_AGE:
        return None
    return data, meta.get("filename") or "upload"


def discard_upload(directory: Path, token: str) -> None:
    if UPLOAD_TOKEN.fullmatch(token or ""):
        for suffix in (".upload", ".json"):
            (directory / f"{token}{suffix}").unlink(missing_ok=True)


def _remove_expired(directory: Path) -> None:
    cutoff = time.time() - UPLOAD_MAX_AGE
    for path in directory.glob("*.json"):
        try:
            expired = path.stat().st_mtime < cutoff
        except OSError:
            continue
        if expired:
            discard_upload(directory, path.stem)
