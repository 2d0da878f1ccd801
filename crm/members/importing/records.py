"""What an import may set, and the records, plans and issues it works with."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from crm.members.importing.messages import N_, Message
from crm.members.models import Company, Contact

Progress = Callable[[int], None]


# --- what an import may set -------------------------------------------------------------

CSV_COLUMNS = tuple(
    (
        "orgnr name org_form nace_code nace_text employees street_address postal_code "
        "postal_place municipality_number municipality_name website membership_status "
        "member_since resigned_on notes registry_warnings deleted_in_registry_on archived"
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


LIMITED = {
    column.name: column.type.length
    for column in Company.__table__.columns
    if getattr(column.type, "length", None)
}
LIMITED["notes"] = 10_000
LIMITED_CONTACT = {
    column.name: column.type.length
    for column in Contact.__table__.columns
    if getattr(column.type, "length", None)
}
# The fields, in the order a person reads a company, that an import compares and sets.
IMPORT_FIELDS = tuple(
    (
        "name org_form_code org_form_name nace_code nace_text employees street_address "
        "postal_code postal_place municipality_number municipality_name website "
        "membership_status member_since resigned_on notes bankrupt winding_up "
        "forced_dissolution deleted_in_registry_on parent_orgnr archived_at"
    ).split()
)
REGISTRY_FLAGS = {
    "bankrupt": N_("Bankrupt according to the register"),
    "winding_up": N_("Being wound up according to the register"),
    "forced_dissolution": N_("Under forced dissolution according to the register"),
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
    contact_id: int | None = None  # in a contact import: the contact matched
    before: dict[str, Any] = field(default_factory=dict)  # the stored values, for updates
    unit: int | None = None
    shares_line: bool = False

    @property
    def where(self) -> str:
        """`line 7`, or `line 1 (unit 5)` in a JSON file with several units on one line,
        or `unit 5` in a streamed bulk download (which has no line numbers)."""
        if not self.line and self.unit is not None:
            return f"unit {self.unit}"
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
        return [flag for flag in REGISTRY_FLAGS if self.values.get(flag)]


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
