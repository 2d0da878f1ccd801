"""Bulk actions on the company and contact lists: what a selection is, what an action
would change (the preview), and applying it in one transaction.

A selection is the rows staff ticked (on any page) or "all N matching this filter".
Every action checks the whole selection first and raises BulkError, changing nothing,
when any row is invalid (gone, archived, no email for a consent). Changes are written
with crm.bulk (driver speed) and one audit entry per changed record, in the caller's
transaction: 10,000 contacts take a few seconds, not minutes. Nothing here commits.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, select

from crm import audit, bulk
from crm.extensions import db
from crm.members import listing
from crm.members.models import MEMBERSHIP_STATUSES, Company, Contact, Network, contact_network
from crm.timeutil import today_oslo

# A selection larger than this is refused (pick a narrower filter).
MAX_SELECTION = 50_000
ID_CHUNK = 5_000

CONTACT_ACTIONS = ("network_add", "network_remove", "followup", "consent", "invite", "export")
COMPANY_ACTIONS = ("network_add", "network_remove", "status", "followup", "invite", "export")
ACTION_LABELS = {
    "network_add": _l("Add to a network"),
    "network_remove": _l("Remove from a network"),
    "status": _l("Set membership status"),
    "followup": _l("Assign a follow-up"),
    "consent": _l("Record consent for a topic"),
    "invite": _l("Invite to an event"),
    "export": _l("Export"),
}


class BulkError(ValueError):
    """The action cannot be applied to this selection; the message says why."""


def parse_ids(values: Sequence[str]) -> list[int]:
    """Ids from form values (each one id or several separated by commas), in order,
    without repeats. Raises BulkError for anything that is not an id."""
    ids: dict[int, None] = {}
    for value in values:
        for part in str(value or "").split(","):
            part = part.strip()
            if not part:
                continue
            record_id = listing.parse_id(part)
            if record_id is None:
                raise BulkError(_("The selection is not valid. Select the rows again."))
            ids[record_id] = None
            if len(ids) > MAX_SELECTION:
                raise BulkError(_too_many())
    return list(ids)


def _too_many() -> str:
    return _("At most %(num)s records at a time. Narrow the filter.", num=f"{MAX_SELECTION:,}")


def _chunks(ids: Sequence[int]):
    for start in range(0, len(ids), ID_CHUNK):
        yield ids[start : start + ID_CHUNK]


def rows_for(stmt, column, ids: Sequence[int]) -> list:
    """`stmt`'s rows whose `column` is among `ids`, a few thousand ids per query."""
    rows = []
    for chunk in _chunks(list(ids)):
        rows.extend(db.session.execute(stmt.where(bulk.id_in(column, chunk))).all())
    return rows


@dataclass
class Selection:
    """The records an action is about, checked: all exist and none is archived."""

    record_type: str  # "contact" | "company"
    ids: list[int]
    labels: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def _model(record_type: str):
    return Contact if record_type == "contact" else Company


def matching_ids(record_type: str, filters) -> list[int]:
    """Every id the list shows with `filters` (all pages), in list order."""
    query = (listing.contact_query if record_type == "contact" else listing.company_query)(filters)
    ids = list(db.session.scalars(query.ids.limit(MAX_SELECTION + 1)))
    if len(ids) > MAX_SELECTION:
        raise BulkError(_too_many())
    return ids


def select_records(record_type: str, ids: Sequence[int]) -> Selection:
    """Check the chosen ids: refused (BulkError) when any is gone or archived."""
    if not ids:
        raise BulkError(_("Nothing is selected."))
    model = _model(record_type)
    if record_type == "contact":
        columns = (Contact.id, Contact.first_name, Contact.last_name, Contact.email)
    else:
        columns = (Company.id, Company.name)
    rows = rows_for(select(*columns, model.archived_at), model.id, ids)
    found = {row[0]: row for row in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise BulkError(
            ngettext_missing(len(missing))
            + " "
            + _("Nothing was changed. Reload the list and select again.")
        )
    archived = [row for row in rows if row[-1] is not None]
    if archived:
        raise BulkError(
            _(
                "%(name)s is archived and cannot be changed in bulk. Nothing was changed.",
                name=_label(record_type, archived[0]),
            )
        )
    labels = {row[0]: _label(record_type, row) for row in rows}
    return Selection(record_type, list(ids), labels)


def ngettext_missing(count: int) -> str:
    from flask_babel import ngettext

    return ngettext(
        "%(num)s selected record no longer exists.",
        "%(num)s selected records no longer exist.",
        count,
    )


def _label(record_type: str, row) -> str:
    if record_type == "contact":
        return f"{row[1]} {row[2]}".strip() or (row[3] or "") or str(row[0])
    return row[1]


# -- networks -------------------------------------------------------------------------


def _network(network_id: int | None) -> Network:
    network = db.session.get(Network, network_id) if network_id else None
    if network is None:
        raise BulkError(_("Choose a network."))
    return network


def contacts_for_network(selection: Selection) -> Selection:
    """The contacts a network action is about: the selected contacts, or the current
    contacts of the selected companies."""
    if selection.record_type == "contact":
        return selection
    rows = rows_for(
        select(Contact.id, Contact.first_name, Contact.last_name, Contact.email).where(
            Contact.archived_at.is_(None), Contact.active.is_(True)
        ),
        Contact.company_id,
        selection.ids,
    )
    return Selection("contact", [r[0] for r in rows], {r[0]: _label("contact", r) for r in rows})


def _networks_of(contact_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = rows_for(
        select(contact_network.c.contact_id, Network.name).join(
            Network, Network.id == contact_network.c.network_id
        ),
        contact_network.c.contact_id,
        contact_ids,
    )
    names: dict[int, list[str]] = {}
    for contact_id, name in rows:
        names.setdefault(contact_id, []).append(name)
    return names


def network_changes(selection: Selection, network_id: int | None, adding: bool) -> list[int]:
    """The contact ids whose membership of the network would change."""
    network = _network(network_id)
    if adding and not network.active:
        raise BulkError(_("%(name)s is not active. Nothing was changed.", name=network.name))
    contacts = contacts_for_network(selection)
    members = {
        row[0]
        for row in rows_for(
            select(contact_network.c.contact_id).where(contact_network.c.network_id == network.id),
            contact_network.c.contact_id,
            contacts.ids,
        )
    }
    return [i for i in contacts.ids if (i not in members) == adding]


def apply_network(selection: Selection, network_id: int | None, adding: bool) -> int:
    """Add the selection to (or remove it from) a network; one audit entry per contact
    whose networks change. Returns how many changed."""
    network = _network(network_id)
    changing = network_changes(selection, network_id, adding)
    if not changing:
        return 0
    contacts = contacts_for_network(selection)
    before = _networks_of(changing)
    if adding:
        bulk.insert_rows(
            contact_network,
            [{"contact_id": i} for i in changing],
            {"network_id": network.id},
        )
    else:
        for chunk in _chunks(changing):
            db.session.execute(
                delete(contact_network).where(
                    contact_network.c.network_id == network.id,
                    bulk.id_in(contact_network.c.contact_id, chunk),
                )
            )
    entries = []
    for contact_id in changing:
        old = sorted(before.get(contact_id, []))
        new = sorted([*old, network.name]) if adding else [n for n in old if n != network.name]
        entries.append((contact_id, contacts.labels.get(contact_id, ""), {"networks": [old, new]}))
    audit.bulk_log(Contact, entries)
    # Loaded contacts (and their networks lists) are stale after a Core write.
    db.session.expire_all()
    return len(changing)


# -- membership status ----------------------------------------------------------------


def status_changes(selection: Selection, status: str, on: date | None) -> list[tuple]:
    """(id, name, old values, new values) for the companies whose membership changes.
    Refused when the status is unknown or a date breaks the rules for any company."""
    if selection.record_type != "company":
        raise BulkError(_("Membership status is set on companies."))
    if status not in MEMBERSHIP_STATUSES:
        raise BulkError(_("Choose a membership status."))
    rows = rows_for(
        select(
            Company.id,
            Company.name,
            Company.membership_status,
            Company.member_since,
            Company.resigned_on,
        ),
        Company.id,
        selection.ids,
    )
    changes = []
    for company_id, name, old_status, member_since, resigned_on in rows:
        old = {
            "membership_status": old_status,
            "member_since": member_since,
            "resigned_on": resigned_on,
        }
        if status == old_status and (on is None or status == "prospect"):
            continue
        if status == "prospect":
            new_since, new_resigned = None, None
        elif status == "member":
            # Joining again keeps an earlier member-since date unless a date is given.
            new_since = on or (member_since if old_status == "member" else None) or today_oslo()
            new_resigned = None
        else:
            new_resigned = on or today_oslo()
            new_since = member_since
            if member_since and new_resigned < member_since:
                raise BulkError(
                    _(
                        "%(name)s became a member on %(date)s, after that resignation date. "
                        "Nothing was changed.",
                        name=name,
                        date=member_since.strftime("%d.%m.%Y"),
                    )
                )
        new = {
            "membership_status": status,
            "member_since": new_since,
            "resigned_on": new_resigned,
        }
        if new != old:
            changes.append((company_id, name, old, new))
    return changes


def apply_status(selection: Selection, status: str, on: date | None) -> int:
    """Set the membership status (with its date) of the selected companies.

    Through the ORM (a register has some thousands of companies at most): the audit
    listener logs each company, and `updated_at` moves as on any other save."""
    changes = status_changes(selection, status, on)
    by_id = {change[0]: change[3] for change in changes}
    companies = [row[0] for row in rows_for(select(Company), Company.id, list(by_id))]
    for company in companies:
        for name, value in by_id[company.id].items():
            setattr(company, name, value)
    db.session.flush()
    return len(changes)


# -- consent ---------------------------------------------------------------------------


def consent_changes(selection: Selection, topic_id: int | None) -> list[int]:
    """Contacts who would get active consent for the topic (not already active).
    Refused when any selected contact has no email address."""
    from crm.subscriptions.models import ConsentState, Topic

    if selection.record_type != "contact":
        raise BulkError(_("Consent is recorded for contacts."))
    topic = db.session.get(Topic, topic_id) if topic_id else None
    if topic is None:
        raise BulkError(_("Choose a topic."))
    rows = rows_for(select(Contact.id, Contact.email), Contact.id, selection.ids)
    without = [i for i, email in rows if not email]
    if without:
        raise BulkError(
            _(
                "%(name)s has no email address, so consent cannot be recorded. "
                "Nothing was changed.",
                name=selection.labels.get(without[0], str(without[0])),
            )
        )
    active = {
        row[0]
        for row in rows_for(
            select(ConsentState.contact_id).where(
                ConsentState.topic_id == topic.id, ConsentState.status == "active"
            ),
            ConsentState.contact_id,
            selection.ids,
        )
    }
    return [i for i in selection.ids if i not in active]


def apply_consent(
    selection: Selection,
    topic_id: int | None,
    *,
    user,
    channel: str,
    wording_version: int | None,
    note: str,
) -> int:
    """Record consent for one topic for each selected contact, with its evidence, in
    the consent ledger (crm.subscriptions): how it was given, the wording version shown,
    and a note ("signed up on paper at Styrketrening 14.01")."""
    from crm.subscriptions.ledger import record_event
    from crm.subscriptions.models import Topic
    from crm.subscriptions.staff_consent import STAFF_CHANNELS
    from crm.subscriptions.topics import wording_by_version

    note = (note or "").strip()
    if not note:
        raise BulkError(_("Describe how and when the people gave consent."))
    if channel not in STAFF_CHANNELS:
        raise BulkError(_("Choose how the consent was given."))
    wording = wording_by_version(wording_version) if wording_version else None
    if wording is None:
        raise BulkError(_("Choose the wording the people agreed to."))
    changing = consent_changes(selection, topic_id)
    topic = db.session.get(Topic, topic_id)
    contacts = {
        c.id: c for c in (row[0] for row in rows_for(select(Contact), Contact.id, changing))
    }
    for contact_id in changing:
        record_event(
            contacts[contact_id],
            topic,
            "granted",
            "staff",
            user=user,
            wording=wording,
            note=f"[{channel}] {note}"[:2000],
        )
    return len(changing)


# -- invitations ---------------------------------------------------------------------------


def _event(event_id: int | None):
    from crm.events.models import Event

    event = db.session.get(Event, event_id) if event_id else None
    if event is None:
        raise BulkError(_("Choose an event."))
    return event


def invite_changes(selection: Selection, event_id: int | None) -> list[int]:
    """The contacts an invitation to the event would reach: the selected contacts (or
    the current contacts of the selected companies) whom the invitation rule allows
    (crm.events.invitations.invitable), one per email address."""
    from crm.events.invitations import invitable

    event = _event(event_id)
    return invitable(event, contacts_for_network(selection).ids)


def apply_invite(selection: Selection, event_id: int | None, *, user):
    """A draft invitation to the event for the selection (the event's own invitation
    mechanism, crm.events.invitations), with one audit entry per contact it is for.
    Returns the invitation (a newsletter; staff check and send it)."""
    from crm.events.invitations import InvitationError, invite_picked

    event = _event(event_id)
    contacts = contacts_for_network(selection)
    try:
        invitation = invite_picked(event, contacts.ids, user)
    except InvitationError as exc:
        raise BulkError(str(exc)) from exc
    from crm.newsletters.models import newsletter_pick

    picked = db.session.scalars(
        select(newsletter_pick.c.contact_id).where(newsletter_pick.c.newsletter_id == invitation.id)
    ).all()
    audit.bulk_log(
        Contact,
        [
            (i, contacts.labels.get(i, ""), {"invited_to": [None, event.title]})
            for i in sorted(picked)
        ],
    )
    return invitation
