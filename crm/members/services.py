"""The rules of the member register: saving, archiving, merging, exports, networks.

Functions here change the session but never commit: the request (or job) that calls
them decides. Every change goes through the ORM, so the audit log records it.
"""

import re
import unicodedata
from collections.abc import Callable
from datetime import date

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.members import columns, listing
from crm.members.models import (
    ACTIVITY_KINDS,
    MEMBERSHIP_STATUSES,
    ROLE_COLUMNS,
    Activity,
    Company,
    Contact,
    Network,
    contact_network,
)
from crm.members.municipalities import municipality_name
from crm.members.normalize import format_orgnr, format_phone
from crm.timeutil import today_oslo, utcnow

MEMBERSHIP_LABELS = {
    "prospect": _l("Prospect"),
    "member": _l("Member"),
    "resigned": _l("Resigned"),
}
ROLE_LABELS = {
    "primary": _l("Primary contact"),
    "invoice": _l("Invoice contact"),
    "board": _l("Board representative"),
}
ACTIVITY_LABELS = {
    "meeting": _l("Meeting"),
    "call": _l("Phone call"),
    "seminar": _l("Seminar"),
    "email": _l("Email"),
    "note": _l("Note"),
}
WARNING_LABELS = {
    "bankrupt": _l("Bankrupt"),
    "winding_up": _l("Being wound up"),
    "forced_dissolution": _l("Forced dissolution"),
    "deleted": _l("Deleted from the register"),
}


class MembersError(ValueError):
    """A rule of the register was broken; the message is fit to show the user."""


def network_choices(include: list[Network] | None = None) -> list[Network]:
    """Active networks, plus inactive ones a record already belongs to."""
    networks = db.session.scalars(select(Network).order_by(Network.name)).all()
    keep = {n.id for n in include or []}
    return [n for n in networks if n.active or n.id in keep]


# -- companies ---------------------------------------------------------------------


def company_by_orgnr(orgnr: str, exclude_id: int | None = None) -> Company | None:
    stmt = select(Company).where(Company.orgnr == orgnr)
    if exclude_id is not None:
        stmt = stmt.where(Company.id != exclude_id)
    return db.session.scalar(stmt)


def apply_membership(
    company: Company, status: str, member_since: date | None, resigned_on: date | None
) -> None:
    """Set the membership status with dates that agree with it.

    A member has a member-since date (today unless given) and no resignation date; a
    resigned company keeps when it joined and gets a resignation date (today unless
    given); a prospect has neither.
    """
    if status not in MEMBERSHIP_STATUSES:
        raise MembersError(_("Unknown membership status."))
    if status == "prospect":
        member_since, resigned_on = None, None
    elif status == "member":
        member_since, resigned_on = member_since or today_oslo(), None
    else:
        resigned_on = resigned_on or today_oslo()
        if member_since and resigned_on < member_since:
            raise MembersError(_("The resignation date is before the member-since date."))
    company.membership_status = status
    company.member_since = member_since
    company.resigned_on = resigned_on


def set_municipality(company: Company, number: str, name: str) -> None:
    """The number decides; the name comes from the known list where it can."""
    company.municipality_number = number or ""
    company.municipality_name = municipality_name(number) or (name if number else "")


def archive(record: Company | Contact) -> None:
    if record.archived_at is None:
        record.archived_at = utcnow()


def unarchive(record: Company | Contact) -> None:
    record.archived_at = None
    if isinstance(record, Contact):
        record.merged_into_id = None


def company_table(companies) -> tuple[list[str], list[list]]:
    """Headers and rows of the company export (crm.members.columns; the import reads it)."""
    headers = columns.headers(columns.COMPANY_COLUMNS)
    rows = []
    for c in companies:
        current = [p for p in c.contacts if p.archived_at is None and p.active]
        primary = next((p for p in current if p.is_primary_contact), None)
        invoice = next((p for p in current if p.is_invoice_contact and p.email), None)
        rows.append(
            [
                c.orgnr,
                c.name,
                c.org_form_code,
                c.nace_code,
                c.nace_text,
                c.employees,
                c.municipality_number,
                c.municipality,
                c.street_address,
                c.postal_code,
                c.postal_place,
                c.website,
                str(MEMBERSHIP_LABELS.get(c.membership_status, c.membership_status)),
                c.member_since,
                c.resigned_on,
                primary.name if primary else "",
                (primary.email or "") if primary else "",
                invoice.email if invoice else "",
                ", ".join(str(WARNING_LABELS[w]) for w in c.registry_warnings if w != "deleted"),
                c.deleted_in_registry_on,
                c.archived_at,
            ]
        )
    return headers, rows


def companies_for_export(filters: listing.CompanyFilters) -> list[Company]:
    """Every company the list shows with these filters, not just one page."""
    stmt = listing.company_select(filters).options(selectinload(Company.contacts))
    return list(db.session.scalars(stmt))


def company_suggestions(text: str, limit: int = 20) -> list[Company]:
    """Current companies whose name or orgnr start with what was typed."""
    search = listing.find("company", listing.clean_query(text))
    if not search.words:
        return []
    conditions = listing.search_conditions(Company.id, "company", search)
    return list(
        db.session.scalars(
            select(Company)
            .where(*conditions, Company.archived_at.is_(None))
            .order_by(Company.name, Company.id)
            .limit(limit)
        )
    )


def company_choice_label(company: Company) -> str:
    """How a company is written in the contact form's company field."""
    return f"{company.name} ({format_orgnr(company.orgnr)})"


_ORGNR_IN_TEXT = re.compile(r"(?<!\d)(\d{3})\s?(\d{3})\s?(\d{3})(?!\d)")


def resolve_company(text: str) -> Company | None:
    """The company meant by what was typed in a company field: orgnr or exact name.

    Empty text means no company. Raises MembersError when nothing or more than one
    company fits; the caller can offer `company_suggestions` then.
    """
    text = listing.clean_query(text)
    if not text:
        return None
    found = _ORGNR_IN_TEXT.search(text)
    if found:
        company = company_by_orgnr("".join(found.groups()))
        if company is not None:
            return company
    # Not lower(name) = lower(text) in SQL: SQLite's lower() folds ASCII only, so
    # "Ødegården AS" typed as shown would match nothing there. The search index narrows
    # it to names with these words and this length; Python compares the case.
    search = listing.find("company", text)
    candidates = (
        db.session.scalars(
            select(Company).where(
                *listing.search_conditions(Company.id, "company", search),
                func.length(Company.name) == len(text),
                Company.archived_at.is_(None),
            )
        )
        if search.words
        else []
    )
    matches = [c for c in candidates if c.name.lower() == text.lower()][:2]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MembersError(
            _("Several companies have that name. Choose one with its organisation number.")
        )
    raise MembersError(_("No company matches. Type the organisation number or pick a suggestion."))


# -- contacts ----------------------------------------------------------------------


def contacts_for_export(filters: listing.ContactFilters) -> list[Contact]:
    """Every contact the list shows with these filters, not just one page."""
    return list(db.session.scalars(listing.contact_select(filters)))


def export_phone(value: str | None) -> str:
    """Norwegian numbers as people dial them (912 34 567), others in full."""
    if not value:
        return ""
    if value.startswith("+47"):
        return format_phone(value).removeprefix("+47").strip()
    return format_phone(value)


def contact_table(contacts) -> tuple[list[str], list[list]]:
    """Headers and rows of the contact export (crm.members.columns; the import reads it)."""
    headers = columns.headers(columns.CONTACT_COLUMNS)
    rows = []
    for p in contacts:
        rows.append(
            [
                p.first_name,
                p.last_name,
                p.email or "",
                export_phone(p.phone),
                p.job_title,
                p.company.name if p.company else "",
                p.company.orgnr if p.company else "",
                p.company.municipality if p.company else "",
                ", ".join(str(ROLE_LABELS[r]) for r in p.roles),
                ", ".join(n.name for n in p.networks),
                _("Active") if p.active else _("Left the company"),
                p.archived_at,
            ]
        )
    return headers, rows


def contacts_with_email(email: str | None, exclude_id: int | None = None) -> list[Contact]:
    """Current (not archived) contacts that already use `email`."""
    if not email:
        return []
    stmt = select(Contact).where(Contact.email == email, Contact.archived_at.is_(None))
    if exclude_id is not None:
        stmt = stmt.where(Contact.id != exclude_id)
    return list(db.session.scalars(stmt.order_by(Contact.id).limit(5)))


def set_roles(contact: Contact, roles: set[str]) -> None:
    for role, column in ROLE_COLUMNS.items():
        setattr(contact, column, role in roles)


def merge_candidates(contact: Contact, query: str = "", limit: int = 20) -> list[Contact]:
    """Contacts that may be the same person: same email, phone or name, or a search."""
    base = select(Contact).where(Contact.id != contact.id, Contact.archived_at.is_(None))
    query = listing.clean_query(query)
    if query:
        search = listing.find("contact", query)
        if not search.words:
            return []
        stmt = base.where(*listing.search_conditions(Contact.id, "contact", search))
    else:
        same = []
        if contact.email:
            same.append(Contact.email == contact.email)
        if contact.phone:
            same.append(Contact.phone == contact.phone)
        if contact.first_name and contact.last_name:
            same.append(
                and_(
                    func.lower(Contact.first_name) == contact.first_name.lower(),
                    func.lower(Contact.last_name) == contact.last_name.lower(),
                )
            )
        if not same:
            return []
        stmt = base.where(or_(*same))
    stmt = stmt.order_by(func.lower(Contact.last_name), func.lower(Contact.first_name), Contact.id)
    return list(db.session.scalars(stmt.limit(limit)))


# Called as hook(target, other) after a merge has moved the members area's rows, so
# other areas (consent ledger, newsletter ledger, …) can move theirs. No commits.
MERGE_HOOKS: list[Callable[[Contact, Contact], None]] = []

_FILLABLE = ("first_name", "last_name", "email", "phone", "job_title", "company_id")


def merge_contacts(target: Contact, other: Contact) -> None:
    """Fold `other` into `target`, which is kept.

    Activities and networks move to the target; the target's empty fields are filled
    from the other; roles held by either are kept; notes are joined. The other contact
    is archived with `merged_into_id` pointing at the target, never deleted, so its
    history stays readable.
    """
    if target.id == other.id:
        raise MembersError(_("A contact cannot be merged with itself."))
    if target.archived_at is not None or other.archived_at is not None:
        raise MembersError(_("Archived contacts cannot be merged. Restore them first."))

    # Load everything first: a query in the middle would flush half a merge, and the
    # audit log would show it as two changes.
    activities = list(other.activities)
    networks = {n.id: n for n in list(target.networks) + list(other.networks)}
    with db.session.no_autoflush:
        _fold_fields(target, other)
        for activity in activities:
            activity.contact_id = target.id
        target.networks = sorted(networks.values(), key=lambda n: n.name)
        other.networks = []
        other.archived_at = utcnow()
        other.merged_into_id = target.id
    db.session.flush()
    for hook in MERGE_HOOKS:
        hook(target, other)


def merge_preview(target: Contact, other: Contact) -> list[tuple[str, str, str, str]]:
    """(label, kept value, duplicate's value, value after the merge) for the merge page."""

    def company(c: Contact) -> str:
        return c.company.name if c.company else ""

    def networks(contacts) -> str:
        return ", ".join(sorted({n.name for c in contacts for n in c.networks}))

    def roles(contacts) -> str:
        held = [r for r, col in ROLE_COLUMNS.items() if any(getattr(c, col) for c in contacts)]
        return ", ".join(str(ROLE_LABELS[r]) for r in held)

    rows = []
    for label, value in (
        (_("Name"), lambda c: c.name),
        (_("Email"), lambda c: c.email or ""),
        (_("Phone"), lambda c: format_phone(c.phone)),
        (_("Job title"), lambda c: c.job_title),
        (_("Company"), company),
    ):
        kept, theirs = value(target), value(other)
        rows.append((label, kept, theirs, kept or theirs))
    rows.append((_("Roles"), roles([target]), roles([other]), roles([target, other])))
    rows.append((_("Networks"), networks([target]), networks([other]), networks([target, other])))
    kept_n, their_n = len(target.activities), len(other.activities)
    rows.append((_("Activities"), str(kept_n), str(their_n), str(kept_n + their_n)))
    return rows


def _fold_fields(target: Contact, other: Contact) -> None:
    for name in _FILLABLE:
        if not getattr(target, name) and getattr(other, name):
            setattr(target, name, getattr(other, name))
    for column in ROLE_COLUMNS.values():
        if getattr(other, column):
            setattr(target, column, True)
    if other.notes and other.notes.strip() not in (target.notes or ""):
        target.notes = "\n\n".join(n for n in (target.notes, other.notes) if n)


# -- activities and networks -------------------------------------------------------


def add_activity(
    *,
    kind: str,
    occurred_on: date,
    summary: str,
    details: str = "",
    company: Company | None = None,
    contact: Contact | None = None,
    user=None,
) -> Activity:
    """A dated note on a company or contact; a contact's note also shows on its company."""
    if kind not in ACTIVITY_KINDS:
        raise MembersError(_("Unknown activity type."))
    if contact is not None and company is None:
        company = contact.company
    activity = Activity(
        kind=kind,
        occurred_on=occurred_on,
        summary=summary,
        details=details or "",
        company=company,
        contact=contact,
        created_by=user,
    )
    db.session.add(activity)
    return activity


def record_participants_and_followup(activity: Activity, form, candidates, user) -> None:
    """Who of `candidates` took part (ticked on the form), and the follow-up the
    activity promised ("call back in two weeks"), if any."""
    chosen = set(form.participants.data or [])
    activity.participants = [c for c in candidates if c.id in chosen]
    if form.followup_what.data:
        from crm.auth.models import User
        from crm.followups.services import create_followup

        assignee = (
            db.session.get(User, form.followup_assignee.data)
            if form.followup_assignee.data
            else user
        )
        create_followup(
            what=form.followup_what.data,
            due_on=form.followup_due_on.data,
            assignee=assignee,
            company=activity.company,
            contact=activity.contact,
            activity=activity,
            user=user,
        )


def slugify(name: str) -> str:
    """A URL-friendly key: "Marked/salg" → "marked-salg", "Bærekraft" → "baerekraft"."""
    text = name.lower().replace("æ", "ae").replace("ø", "o").replace("å", "a")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:90] or "nettverk"


def save_network(network: Network, name: str, description: str, active: bool) -> None:
    """Name, description and active flag; names are unique (case-insensitive)."""
    clash = db.session.scalar(
        select(Network.id).where(
            # Exact match too: SQLite's lower() folds ASCII only, the unique index none.
            or_(Network.name == name, func.lower(Network.name) == name.lower()),
            Network.id != (network.id or 0),
        )
    )
    if clash:
        raise MembersError(_("A network with that name already exists."))
    network.name = name
    network.description = description or ""
    network.active = active
    if not network.slug or network.id is None:
        base = slugify(name)
        slug, n = base, 2
        while db.session.scalar(select(Network.id).where(Network.slug == slug)):
            slug, n = f"{base}-{n}", n + 1
        network.slug = slug


def network_overview() -> list[tuple[Network, int]]:
    """Every network with the number of its current contacts."""
    # All memberships less those of archived contacts (few): counting the current ones
    # directly joined every membership to its contact (0.2 s at 200,000 contacts).
    link = contact_network.c
    memberships = dict(
        db.session.execute(select(link.network_id, func.count()).group_by(link.network_id)).all()
    )
    archived = dict(
        db.session.execute(
            select(link.network_id, func.count())
            .join(Contact, Contact.id == link.contact_id)
            .where(Contact.archived_at.is_not(None))
            .group_by(link.network_id)
        ).all()
    )
    networks = db.session.scalars(
        select(Network).order_by(Network.active.desc(), Network.name)
    ).all()
    return [(n, memberships.get(n.id, 0) - archived.get(n.id, 0)) for n in networks]
