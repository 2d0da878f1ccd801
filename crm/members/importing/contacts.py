"""Contact import: a CSV or XLSX file (our contact export, or a hand-made list) to contacts.

Columns are those of the contact export (crm.members.columns, headers in any UI
language) or their English keys: first_name, last_name, email, phone, job_title,
company (name), orgnr (the company's), roles, networks, status, archived. A contact is
matched by email address, else by name within the same company; others are created.
An empty cell leaves the stored value as it is; a roles or networks cell sets exactly
the roles or networks it names. The company must already be in the register (import
companies first) and the networks must exist. All or nothing, like the company import.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from crm.audit import acting_as
from crm.database import analyze_after_commit
from crm.extensions import db
from crm.members.columns import CONTACT_COLUMNS, header_aliases, in_every_language
from crm.members.importing.csv_rows import csv_rows, header_key, xlsx_rows
from crm.members.importing.fields import UNSTORABLE, parse_datetime, printable
from crm.members.importing.messages import N_, Message
from crm.members.importing.reading import XLSX_MAGIC, decode
from crm.members.importing.records import (
    LIMITED_CONTACT,
    FieldChange,
    ImportPlan,
    ImportRejected,
    Issue,
    ParsedFile,
    PlanRow,
)
from crm.members.models import ROLE_COLUMNS, Company, Contact, Network
from crm.members.normalize import normalize_email, normalize_orgnr, normalize_phone

CONTACT_KEYS = tuple(key for key, _label in CONTACT_COLUMNS)
# The fields a plan compares and sets, in the order people read a contact.
CONTACT_FIELDS = (
    "first_name last_name email phone job_title company_id is_primary_contact "
    "is_invoice_contact is_board_representative network_ids active archived_at"
).split()


@dataclass
class _Lookups:
    headers: dict[str, str]
    roles: dict[str, str]
    status: dict[str, str]
    companies: dict[str, int]  # orgnr -> id
    company_names: dict[str, list[int]]  # casefolded name -> ids
    networks: dict[str, int]  # casefolded name -> id


def _lookups() -> _Lookups:
    from crm.members.services import ROLE_LABELS  # services imports this package's users

    companies: dict[str, int] = {}
    names: dict[str, list[int]] = {}
    for company_id, orgnr, name in db.session.execute(
        select(Company.id, Company.orgnr, Company.name).where(Company.archived_at.is_(None))
    ):
        companies[orgnr] = company_id
        names.setdefault(name.casefold(), []).append(company_id)
    networks = {n.name.casefold(): n.id for n in db.session.scalars(select(Network))}
    return _Lookups(
        headers=header_aliases(CONTACT_COLUMNS),
        roles=in_every_language(ROLE_LABELS),
        status=in_every_language({"active": _l("Active"), "left": _l("Left the company")}),
        companies=companies,
        company_names=names,
        networks=networks,
    )


def read_contact_rows(data: bytes) -> tuple[ParsedFile, Iterable[tuple[int, list[str]]]]:
    parsed = ParsedFile(source="")
    if not data.strip():
        parsed.error(Message(N_("The file is empty.")))
        return parsed, []
    if data.startswith(XLSX_MAGIC):
        parsed.source = "xlsx"
        return parsed, list(xlsx_rows(data, parsed))
    text = decode(data, parsed)
    if text is None:
        return parsed, []
    parsed.source = "csv"
    return parsed, list(csv_rows(text, parsed))


def plan_contact_import(data: bytes, filename: str) -> ImportPlan:
    """What importing the contact file would do, row by row. Writes nothing."""
    parsed, rows = read_contact_rows(data)
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
    lookups = _lookups()
    header: list[str] | None = None
    seen_emails: dict[str, int] = {}
    for line, cells in rows:
        if not any(cells):
            continue
        if header is None:
            header = [header_key(c, lookups.headers) for c in cells]
            if not _check_header(header, plan, line):
                return plan
            continue
        row = _contact_row(line, dict(zip(header, cells, strict=False)), lookups)
        email = row.values.get("email")
        if email and email in seen_emails:
            row.errors.append(
                Message(
                    N_("The email address %(email)s is in the file twice (also line %(line)s)."),
                    email=email,
                    line=seen_emails[email],
                )
            )
        elif email:
            seen_emails[email] = line
        plan.rows.append(row)
    if header is None:
        plan.file_errors.append(Issue(0, Message(N_("The file is empty."))))
    for row in plan.rows:
        if row.errors:
            row.action = "error"
        else:
            _match(row)
    return plan


def _check_header(header: list[str], plan: ImportPlan, line: int) -> bool:
    known = set(CONTACT_KEYS)
    seen: set[str] = set()
    for name in filter(None, header):
        if name in seen:
            plan.file_errors.append(
                Issue(line, Message(N_("The column %(column)s appears twice."), column=name))
            )
        seen.add(name)
        if name not in known:
            plan.file_warnings.append(
                Issue(
                    line,
                    Message(N_("The column %(column)s is not known and was ignored."), column=name),
                )
            )
    if not seen & {"first_name", "last_name", "email"}:
        plan.file_errors.append(
            Issue(line, Message(N_("The header row names no first name, last name or email.")))
        )
    return not plan.file_errors


def _error(row: PlanRow, msgid: str, **params) -> None:
    row.errors.append(Message(msgid, **params))


def _contact_row(line: int, cells: dict[str, str], lookups: _Lookups) -> PlanRow:
    name = f"{cells.get('first_name', '')} {cells.get('last_name', '')}".strip()
    row = PlanRow(line=line, orgnr="", name=printable(name), action="create")
    values = row.values
    for key in ("first_name", "last_name", "job_title"):
        if cells.get(key):
            values[key] = cells[key]
    if cells.get("email"):
        try:
            values["email"] = normalize_email(cells["email"])
        except ValueError:
            _error(row, N_("%(value)s is not an email address."), value=repr(cells["email"][:60]))
    if cells.get("phone"):
        try:
            values["phone"] = normalize_phone(cells["phone"])
        except ValueError:
            _error(row, N_("%(value)s is not a phone number."), value=repr(cells["phone"][:30]))
    _read_company(row, cells, lookups)
    if cells.get("roles"):
        roles = set()
        for item in filter(None, (p.strip().casefold() for p in cells["roles"].split(","))):
            if item in lookups.roles:
                roles.add(lookups.roles[item])
            else:
                _error(row, N_("Unknown role %(value)s."), value=repr(item[:50]))
        for role, column in ROLE_COLUMNS.items():
            values[column] = role in roles
    if cells.get("networks"):
        ids = []
        for item in filter(None, (p.strip() for p in cells["networks"].split(","))):
            if item.casefold() in lookups.networks:
                ids.append(lookups.networks[item.casefold()])
            else:
                _error(row, N_("There is no network called %(value)s."), value=repr(item[:100]))
        values["network_ids"] = sorted(set(ids))
    if cells.get("status"):
        status = lookups.status.get(cells["status"].casefold())
        if status is None:
            _error(row, N_("Unknown status %(value)s."), value=repr(cells["status"][:50]))
        else:
            values["active"] = status == "active"
    if cells.get("archived"):
        archived = parse_datetime(cells["archived"])
        if archived is None:
            _error(
                row,
                N_("%(column)s: %(value)s is not a time (use dd.mm.yyyy hh:mm)."),
                column="archived",
                value=repr(cells["archived"][:50]),
            )
        else:
            values["archived_at"] = archived
    for key, value in values.items():
        if isinstance(value, str) and UNSTORABLE.search(value):
            _error(row, N_("%(field)s contains characters that cannot be stored."), field=key)
        elif isinstance(value, str) and len(value) > LIMITED_CONTACT.get(key, 10_000):
            _error(
                row,
                N_("%(field)s is too long (%(length)s characters; at most %(limit)s)."),
                field=key,
                length=len(value),
                limit=LIMITED_CONTACT[key],
            )
    if not (values.get("first_name") or values.get("last_name") or values.get("email")):
        _error(row, N_("The row has no name and no email address."))
    return row


def _read_company(row: PlanRow, cells: dict[str, str], lookups: _Lookups) -> None:
    if cells.get("orgnr"):
        try:
            orgnr = normalize_orgnr(cells["orgnr"])
        except ValueError:
            _error(
                row,
                N_("%(orgnr)s is not a valid organisation number."),
                orgnr=repr(cells["orgnr"][:20]),
            )
            return
        row.orgnr = orgnr
        if orgnr not in lookups.companies:
            _error(
                row,
                N_("No company has organisation number %(orgnr)s: import the companies first."),
                orgnr=orgnr,
            )
            return
        row.values["company_id"] = lookups.companies[orgnr]
    elif cells.get("company"):
        ids = lookups.company_names.get(cells["company"].casefold(), [])
        if len(ids) != 1:
            _error(
                row,
                N_("No single company is called %(name)s: give its organisation number."),
                name=repr(cells["company"][:100]),
            )
            return
        row.values["company_id"] = ids[0]


def _current(contact: Contact) -> dict:
    values = {field: getattr(contact, field) for field in CONTACT_FIELDS if field != "network_ids"}
    values["network_ids"] = sorted(n.id for n in contact.networks)
    return values


def _match(row: PlanRow) -> None:
    values = row.values
    contact = None
    if values.get("email"):
        contact = db.session.scalar(
            select(Contact)
            .where(func.lower(Contact.email) == values["email"], Contact.merged_into_id.is_(None))
            .order_by(Contact.archived_at.is_not(None), Contact.id)
            .limit(1)
        )
    elif values.get("company_id"):
        contact = db.session.scalar(
            select(Contact)
            .where(
                Contact.company_id == values["company_id"],
                func.lower(Contact.first_name) == values.get("first_name", "").lower(),
                func.lower(Contact.last_name) == values.get("last_name", "").lower(),
            )
            .limit(1)
        )
    if contact is None:
        row.action = "create"
        row.changes = [
            FieldChange(f, None, values[f])
            for f in CONTACT_FIELDS
            if values.get(f) not in ("", None)
        ]
        return
    row.contact_id = contact.id
    row.before = _current(contact)
    row.changes = [
        FieldChange(f, row.before[f], values[f])
        for f in CONTACT_FIELDS
        if f in values
        and row.before[f] != values[f]
        and not (row.before[f] is None and values[f] == "")
    ]
    row.action = "update" if row.changes else "unchanged"


def apply_contact_plan(plan: ImportPlan, *, user=None) -> dict:
    """Write a contact plan in the current transaction (the caller commits). All or nothing."""
    if not plan.ok:
        raise ImportRejected(plan.errors)
    networks = {n.id: n for n in db.session.scalars(select(Network))}
    with acting_as(f"import: {plan.filename}", user):
        for row in plan.rows:
            if row.action == "create":
                contact = Contact()
                db.session.add(contact)
            elif row.action == "update":
                contact = db.session.get(Contact, row.contact_id)
            else:
                continue
            for change in row.changes:
                if change.field == "network_ids":
                    contact.networks = [networks[i] for i in change.new]
                else:
                    setattr(contact, change.field, change.new)
        db.session.flush()
    # Each contact written is a row here, its search terms and its audit entry; those
    # whose networks the file set, rows of contact_network.
    analyze_after_commit(db.session, ("contact", "search_term", "audit_entry"), plan.changes_count)
    networks_set = sum(
        any(change.field == "network_ids" for change in row.changes)
        for row in plan.creates + plan.updates
    )
    analyze_after_commit(db.session, ("contact_network",), networks_set)
    return plan.counts()
