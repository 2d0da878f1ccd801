"""Planning an import against the database (writes nothing), and applying a plan."""

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import load_only

from crm.audit import acting_as
from crm.database import analyze_after_commit
from crm.extensions import db
from crm.members.forms import ORG_FORMS
from crm.members.importing.fields import UNSTORABLE, printable
from crm.members.importing.messages import N_, Message
from crm.members.importing.reading import read_file
from crm.members.importing.records import (
    IMPORT_FIELDS,
    LIMITED,
    REGISTRY_FLAGS,
    FieldChange,
    ImportPlan,
    ImportRejected,
    ParsedFile,
    PlanRow,
    Progress,
    display_value,
)
from crm.members.models import Company
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.members.normalize import normalize_orgnr


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
            name=printable(record.values.get("name", "")),
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
            row.orgnr = printable(record.orgnr[:20])
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
                    line=first_line_of[row.orgnr] or row.unit,
                )
            )
            row.action = "error"
        else:
            first_line_of[row.orgnr] = row.line
        for key, value in row.values.items():
            limit = LIMITED.get(key)
            if isinstance(value, str) and UNSTORABLE.search(value):
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
        stmt = (
            db.select(Company)
            .options(load_only(Company.id, Company.archived_at, *_IMPORT_COLUMNS))
            .where(Company.orgnr.in_([r.orgnr for r in chunk]))
        )
        existing = {c.orgnr: c for c in db.session.scalars(stmt)}
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


# Only what planning compares is loaded (timestamps and notes of 20,000 rows cost seconds).
_IMPORT_COLUMNS = [getattr(Company, f) for f in IMPORT_FIELDS] + [Company.orgnr]


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
    for flag in REGISTRY_FLAGS:
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
    # Each company written is a row here, its search terms and its audit entry.
    analyze_after_commit(db.session, ("company", "search_term", "audit_entry"), plan.changes_count)
    return plan.counts()


def register_state() -> tuple:
    """What a plan depends on: the companies' count and their latest change."""
    return tuple(
        db.session.execute(select(func.count(Company.id), func.max(Company.updated_at))).one()
    )


def plan_bytes(data: bytes, filename: str, progress: Progress | None = None) -> ImportPlan:
    """`read_file` then `plan_import`: the whole dry run for one file."""
    return plan_import(read_file(data), filename, progress=progress)
