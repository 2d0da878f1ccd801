"""What a network's page shows and changes: its members (searchable), their companies,
its leaders, meetings and mailings, and who to add. Nothing here commits."""

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.members import bulk_actions, listing, services
from crm.members.models import (
    Activity,
    Company,
    Contact,
    Network,
    company_network,
    contact_network,
)
from crm.members.normalize import normalize_email

MEETINGS_SHOWN = 20
MAILINGS_SHOWN = 20
COMPANIES_SHOWN = 30
# The companies panel counts up to this many, then says "more than" (the link leads to
# the company list, which counts further). Counted from the kept pairs (company_network)
# since migration 0039; when the members themselves were probed, a cap of 1,000 had
# PostgreSQL read every membership of a large network (30–130 ms on the scale set).
COMPANIES_COUNT_CAP = 300


def _member_ids(network: Network):
    return select(contact_network.c.contact_id).where(contact_network.c.network_id == network.id)


def member_query(network: Network, q: str = "") -> listing.ListQuery:
    """The network's current contacts in name order, narrowed by a typed search
    (name, email, phone, or the company's name)."""
    conditions = [Contact.archived_at.is_(None), Contact.id.in_(_member_ids(network))]
    search = listing.find("contact", q)
    if q:
        conditions.append(listing.contact_or_company_match(q, search))
    members = select(Contact.id).where(*conditions)
    order = (Contact.last_name, Contact.first_name, Contact.id)
    return listing.ListQuery(
        # The conditions on the rows themselves (not `id IN (members)`): PostgreSQL then
        # walks the current contacts' name index and probes each for membership, which
        # finds a page of a large network at once (0.5 ms against 36 ms on the scale set).
        rows=select(Contact)
        .options(selectinload(Contact.company))
        .where(*conditions)
        .order_by(*order),
        ids=members.order_by(*order),
        count=members,
        cap=listing.COUNT_CAP,
    )


def member_companies(network: Network) -> dict:
    """The first companies by name that the network's members work at, with how many
    members each (COMPANIES_SHOWN), and how many companies in all, counted up to
    COMPANIES_COUNT_CAP (`more_than` is the cap when there are more).

    Which companies take part is kept by the database (`company_network`, migration
    0039): the companies' name index is walked and each probed there, and only the
    companies shown have their members counted (16 ms a view for a network of 37,000
    members across 15,000 companies when the members themselves were probed).
    """
    takes_part = (
        select(company_network.c.company_id)
        .where(
            company_network.c.company_id == Company.id,
            company_network.c.network_id == network.id,
        )
        .correlate(Company)
        .exists()
    )
    count = (
        select(func.count())
        .where(
            Contact.company_id == Company.id,
            Contact.archived_at.is_(None),
            Contact.id.in_(_member_ids(network)),
        )
        .correlate(Company)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Company.id, Company.name, Company.membership_status, count.label("n"))
        .where(takes_part)
        .order_by(Company.name, Company.id)
        .limit(COMPANIES_SHOWN)
    ).all()
    cap = COMPANIES_COUNT_CAP
    capped = (
        select(company_network.c.company_id)
        .where(company_network.c.network_id == network.id)
        .limit(cap + 1)
        .subquery()
    )
    total = db.session.scalar(select(func.count()).select_from(capped))
    return {
        "rows": [tuple(row) for row in rows],
        "total": min(total, cap),
        "more_than": cap if total > cap else 0,
    }


def meetings(network: Network, limit: int = MEETINGS_SHOWN) -> list[Activity]:
    """The network's meetings (activities recorded on it), newest first."""
    return list(
        db.session.scalars(
            select(Activity)
            .options(
                selectinload(Activity.created_by),
                # Named on the page, nothing more: a network meeting has a dozen.
                selectinload(Activity.participants).load_only(
                    Contact.id, Contact.first_name, Contact.last_name, Contact.email
                ),
            )
            .where(Activity.network_id == network.id)
            .order_by(Activity.occurred_on.desc(), Activity.id.desc())
            .limit(limit)
        )
    )


def mailings(network: Network, limit: int = MAILINGS_SHOWN) -> list:
    """Newsletters written to the network (its audience names it), newest first.

    The audience is stored as a JSON list, which the two databases query differently;
    a cluster writes some hundred newsletters a year, so they are filtered here.
    """
    from crm.newsletters.models import Newsletter

    rows = db.session.execute(
        select(Newsletter.id, Newsletter.network_ids).order_by(
            Newsletter.created_at.desc(), Newsletter.id.desc()
        )
    ).all()
    ids = [row.id for row in rows if network.id in {int(n) for n in row.network_ids or ()}]
    ids = ids[:limit]
    if not ids:
        return []
    found = {n.id: n for n in db.session.scalars(select(Newsletter).where(Newsletter.id.in_(ids)))}
    return [found[i] for i in ids]


def who_to_add(text: str) -> bulk_actions.Selection:
    """The contacts meant by what staff typed: an email address (one contact), else a
    company's name or orgnr (its current contacts)."""
    text = (text or "").strip()
    if "@" in text:
        email = normalize_email(text)
        contacts = db.session.scalars(
            select(Contact).where(
                func.lower(Contact.email) == (email or text).lower(),
                Contact.archived_at.is_(None),
            )
        ).all()
        if not contacts:
            raise services.MembersError(_("No contact has that email address."))
        return bulk_actions.Selection(
            "contact", [c.id for c in contacts], {c.id: c.audit_label() for c in contacts}
        )
    company = services.resolve_company(text)
    if company is None:
        raise services.MembersError(_("Type an email address, or a company's name or number."))
    selection = bulk_actions.contacts_for_network(
        bulk_actions.Selection("company", [company.id], {company.id: company.name})
    )
    if not selection.ids:
        raise services.MembersError(
            _("%(name)s has no current contacts to add.", name=company.name)
        )
    return selection


def set_leader(network: Network, contact: Contact, leading: bool) -> None:
    """Name a member as one of the network's leaders, or no longer (audited on the
    network). Only members can lead."""
    if leading:
        member = db.session.scalar(
            _member_ids(network).where(contact_network.c.contact_id == contact.id)
        )
        if member is None:
            raise services.MembersError(_("Only members of the network can lead it."))
        if contact not in network.leaders:
            network.leaders.append(contact)
    elif contact in network.leaders:
        network.leaders.remove(contact)
