"""The consent ledger: one append-only event per grant, confirmation or withdrawal.

`record_event` is the only writer, and it keeps `ConsentState` in step in the same
transaction (`next_status` is the rule). Functions here change the session but never
commit: the request or job that calls them decides.
"""

import re
from collections.abc import Iterable
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import any_, delete, func, select

from crm.bulk import chunks, id_in
from crm.extensions import db
from crm.members.models import Contact
from crm.subscriptions.models import (
    CONSENT_KINDS,
    CONSENT_SOURCES,
    ConsentChange,
    ConsentEvent,
    ConsentState,
    ConsentWording,
    Topic,
    in_display_order,
)
from crm.timeutil import utcnow

ACTIVE_STATUSES = ("active",)


# Statuses a withdrawal, bounce or complaint ends (pending: a grant awaiting confirmation).
LIVE_STATUSES = ("active", "pending")


WITHDRAWING_KINDS = ("withdrawn", "bounced", "complained")


STATUS_LABELS = {
    "active": _l("Subscribed"),
    "pending": _l("Awaiting confirmation"),
    "withdrawn": _l("Withdrawn"),
    "bounced": _l("Bounced"),
    "complained": _l("Marked as spam"),
    "objected": _l("Objected to the network's mail"),
}


KIND_LABELS = {
    "granted": _l("Consent given"),
    "confirmed": _l("Confirmed by email"),
    "withdrawn": _l("Withdrawn"),
    "bounced": _l("Bounced"),
    "complained": _l("Spam complaint"),
    "objected": _l("Objection to network mail"),
}


SOURCE_LABELS = {
    "web_form": _l("Web form"),
    "staff": _l("Staff"),
    "import": _l("Import"),
    "email_link": _l("Email link"),
    "webhook": _l("Email provider"),
}


# Notes the system itself writes on ledger events, and how staff read them. The stored
# note stays as written (the ledger is evidence); only its display is translated.
SYSTEM_NOTES = {
    "unsubscribe link": _l("Through the unsubscribe link in an email"),
    "preferences": _l("On the preferences page"),
    "erased on request": _l("Erased on request"),
    "withdrawn on request": _l("Withdrawn on request"),
}
CHANNEL_LABELS = {
    "in_person": _l("In person"),
    "phone": _l("By phone"),
    "email": _l("By email"),
    "letter": _l("In writing"),
}
PROVIDER_EVENT_LABELS = {
    "bounce": _l("Bounced"),
    "dropped": _l("Dropped"),
    "spamreport": _l("Marked as spam"),
    "unsubscribe": _l("Unsubscribed"),
    "group_unsubscribe": _l("Unsubscribed from the group"),
}
_CHANNEL_NOTE = re.compile(r"\[(\w+)\] ?(.*)", re.S)
_PROVIDER_NOTE = re.compile(r"(\w+)(?:: (.*))?", re.S)


def note_label(event: ConsentEvent) -> str:
    """An event's note in the reader's language: system notes and codes in words."""
    note = event.note or ""
    if note in SYSTEM_NOTES:
        return str(SYSTEM_NOTES[note])
    if event.source == "staff":
        match = _CHANNEL_NOTE.fullmatch(note)
        if match and match.group(1) in CHANNEL_LABELS:
            return f"{CHANNEL_LABELS[match.group(1)]}: {match.group(2)}"
    if event.source == "webhook":
        match = _PROVIDER_NOTE.fullmatch(note)
        if match and match.group(1) in PROVIDER_EVENT_LABELS:
            label = str(PROVIDER_EVENT_LABELS[match.group(1)])
            return f"{label}: {match.group(2)}" if match.group(2) else label
    return note


class ConsentError(ValueError):
    """A consent change that breaks a rule; the message is fit to show staff."""


def next_status(status: str | None, kind: str, source: str) -> str | None:
    """The rule: a contact's status for a topic after one more event.

    A grant through the web form only counts once the address owner confirms it by
    email (double opt-in); a grant recorded by staff, by import or through a link sent
    to the address is active at once. Withdrawals, bounces and complaints always end
    consent; a confirmation never revives consent that ended after its grant.
    """
    if kind == "granted":
        if source == "web_form":
            return "active" if status == "active" else "pending"
        return "active"
    if kind == "confirmed":
        return "active" if status in LIVE_STATUSES else status
    if kind in WITHDRAWING_KINDS or kind == "objected":
        return kind
    raise ValueError(f"unknown consent event kind {kind!r}")


def active_change(before: str | None, after: str | None) -> int:
    """+1 where an event made consent active, -1 where it ended it, else 0."""
    return (after == "active") - (before == "active")


def note_change(event_id: int, topic_id: int, at: datetime, before, after) -> None:
    """Keep an event in `ConsentChange` when it changed whether consent is active (status
    `before` -> `after`): every writer of the ledger calls this with the states it keeps."""
    change = active_change(before, after)
    if change:
        db.session.add(ConsentChange(event_id=event_id, topic_id=topic_id, at=at, change=change))


def record_event(
    contact: Contact,
    topic: Topic,
    kind: str,
    source: str,
    *,
    at: datetime | None = None,
    ip: str | None = None,
    user=None,
    wording: ConsentWording | None = None,
    note: str = "",
) -> ConsentEvent:
    """Append one event to the ledger and bring the contact's current state in line."""
    if kind not in CONSENT_KINDS:
        raise ValueError(f"unknown consent event kind {kind!r}")
    if source not in CONSENT_SOURCES:
        raise ValueError(f"unknown consent source {source!r}")
    if source == "staff" and user is None:
        raise ValueError("staff events name the staff user")
    if kind == "granted" and wording is None:
        raise ValueError("a grant records the wording the person agreed to")
    event = ConsentEvent(
        contact_id=contact.id,
        topic_id=topic.id,
        kind=kind,
        source=source,
        at=at or utcnow(),
        ip=(ip or None) and ip[:45],
        user_id=user.id if user is not None else None,
        wording_id=wording.id if wording is not None else None,
        note=note,
    )
    db.session.add(event)
    db.session.flush()
    state = db.session.get(ConsentState, (contact.id, topic.id))
    status = next_status(state.status if state else None, kind, source)
    if status is None:
        return event  # e.g. a confirmation without a grant: evidence, but no consent
    note_change(event.id, topic.id, event.at, state.status if state else None, status)
    if state is None:
        db.session.add(
            ConsentState(
                contact_id=contact.id,
                topic_id=topic.id,
                status=status,
                changed_at=event.at,
                event_id=event.id,
            )
        )
    else:
        if status != state.status:
            state.changed_at = event.at
        state.status = status
        state.event_id = event.id
    return event


def derive_states(contact_id: int) -> dict[int, str]:
    """Status per topic id replayed from the ledger alone (in the order it was written)."""
    statuses: dict[int, str] = {}
    events = db.session.execute(
        select(ConsentEvent.topic_id, ConsentEvent.kind, ConsentEvent.source)
        .where(ConsentEvent.contact_id == contact_id)
        .order_by(ConsentEvent.id)
    )
    for topic_id, kind, source in events:
        status = next_status(statuses.get(topic_id), kind, source)
        if status is not None:
            statuses[topic_id] = status
    return statuses


def rebuild_states(contact_id: int) -> None:
    """Recompute a contact's ConsentState and ConsentChange rows from the ledger (after a
    merge)."""
    own_events = select(ConsentEvent.id).where(ConsentEvent.contact_id == contact_id)
    db.session.execute(delete(ConsentState).where(ConsentState.contact_id == contact_id))
    db.session.execute(delete(ConsentChange).where(ConsentChange.event_id.in_(own_events)))
    statuses: dict[int, tuple[str, int, datetime]] = {}
    events = db.session.execute(
        select(ConsentEvent.id, ConsentEvent.topic_id, ConsentEvent.kind, ConsentEvent.source)
        .add_columns(ConsentEvent.at)
        .where(ConsentEvent.contact_id == contact_id)
        .order_by(ConsentEvent.id)
    ).all()
    for event_id, topic_id, kind, source, at in events:
        previous = statuses.get(topic_id)
        status = next_status(previous[0] if previous else None, kind, source)
        if status is None:
            continue
        note_change(event_id, topic_id, at, previous[0] if previous else None, status)
        changed = at if previous is None or previous[0] != status else previous[2]
        statuses[topic_id] = (status, event_id, changed)
    for topic_id, (status, event_id, changed) in statuses.items():
        db.session.add(
            ConsentState(
                contact_id=contact_id,
                topic_id=topic_id,
                status=status,
                changed_at=changed,
                event_id=event_id,
            )
        )
    db.session.flush()


def consent_states(contact: Contact) -> dict[int, ConsentState]:
    """The contact's current state per topic id."""
    rows = db.session.scalars(select(ConsentState).where(ConsentState.contact_id == contact.id))
    return {row.topic_id: row for row in rows}


def subscribed_topics(contact: Contact) -> list[Topic]:
    """Topics the contact has active consent for, in display order."""
    return in_display_order(
        state.topic for state in consent_states(contact).values() if state.status in ACTIVE_STATUSES
    )


def subscribed_topic_names(contact_ids: Iterable[int]) -> dict[int, list[str]]:
    """Names of the topics each contact has active consent for, in display order, for a
    page of a list: one query whatever the number of contacts."""
    ids = list(contact_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        select(ConsentState.contact_id, Topic)
        .join(Topic, Topic.id == ConsentState.topic_id)
        .where(ConsentState.contact_id.in_(ids), ConsentState.status.in_(ACTIVE_STATUSES))
    ).all()
    topics: dict[int, list[Topic]] = {}
    for contact_id, topic in rows:
        topics.setdefault(contact_id, []).append(topic)
    return {cid: [t.name for t in in_display_order(ts)] for cid, ts in topics.items()}


def consent_history(contact: Contact) -> list[ConsentEvent]:
    """Every ledger event of the contact, newest first."""
    return list(
        db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.contact_id == contact.id)
            .order_by(ConsentEvent.id.desc())
        )
    )


def contacts_with_active_consent(topic: Topic | str):
    """A select of contact ids with active consent for a topic (object or slug).

    For the newsletter audience: join or `in_()` it; archived contacts and contacts
    without an email address are left out.
    """
    topic_id = (
        topic.id
        if isinstance(topic, Topic)
        else (select(Topic.id).where(Topic.slug == topic).scalar_subquery())
    )
    return (
        select(ConsentState.contact_id)
        .join(Contact, Contact.id == ConsentState.contact_id)
        .where(
            ConsentState.topic_id == topic_id,
            ConsentState.status == "active",
            Contact.email.is_not(None),
            Contact.archived_at.is_(None),
        )
    )


def active_consent_contact_ids(topic_slugs: Iterable[str], *, per_contact: bool = False):
    """(Added for newsletters.) A select of the ids of contacts with active consent for
    any of the topics, from the consent ledger alone: for a query that checks the
    contacts' own conditions itself (the newsletter audience reads `contact` once).

    `per_contact`: for a subquery run once per contact (`active_consent_exists`): on
    PostgreSQL the topics' ids are then an array computed once per query, not joined
    again for each contact (a 1,000-contact batch's rule: 7.8 → 6.8 ms).
    """
    topic_ids = select(Topic.id).where(Topic.slug.in_(list(topic_slugs)))
    if per_contact and db.session.get_bind().dialect.name == "postgresql":
        of_topics = ConsentState.topic_id == any_(func.array(topic_ids.scalar_subquery()))
    else:
        of_topics = ConsentState.topic_id.in_(topic_ids)  # SQLite reads such a list once
    return select(ConsentState.contact_id).where(of_topics, ConsentState.status == "active")


def active_consent_exists(contact_id, topic_slugs: Iterable[str]):
    """(Added for newsletters.) An EXISTS clause: the contact whose id is `contact_id`
    (a column, e.g. `Contact.id`) has active consent for any of the topics.

    Correlated, so it is answered by key lookups: the fast form for a known set of
    contacts (a newsletter batch) where `contacts_with_active_consent` would read
    every subscriber of the topic.
    """
    return (
        active_consent_contact_ids(topic_slugs, per_contact=True)
        .where(ConsentState.contact_id == contact_id)
        .exists()
    )


def end_consent(
    contact: Contact,
    topics: Iterable[Topic] | None,
    kind: str,
    source: str,
    *,
    note: str = "",
    **details,
) -> list[ConsentEvent]:
    """Record `kind` for each of the topics (all, when None) whose consent is live."""
    return end_consents([(contact.id, kind, note)], source, topics=topics, **details)


def end_consents(
    ends: Iterable[tuple[int, str, str]],
    source: str,
    *,
    topics: Iterable[Topic] | None = None,
    at: datetime | None = None,
    ip: str | None = None,
    user=None,
) -> list[ConsentEvent]:
    """`end_consent` for many contacts at once: for each (contact id, kind, note), in
    order, record `kind` for each of the topics (all, when None) whose consent is live
    by then (a second end for a contact finds nothing live), and bring the states in
    line as `record_event` does (`next_status` is the rule).

    A few statements whatever the number of contacts (a webhook delivery brings
    hundreds of bounces): the live states read in one query per thousand contacts, the
    events (and their audit entries) written in one flush, the states' changes in the
    next.
    """
    ends = list(ends)
    if source not in CONSENT_SOURCES:
        raise ValueError(f"unknown consent source {source!r}")
    if source == "staff" and user is None:
        raise ValueError("staff events name the staff user")
    for _contact_id, kind, _note in ends:
        if kind not in (*WITHDRAWING_KINDS, "objected"):
            raise ValueError(f"{kind!r} does not end consent")
    wanted = None if topics is None else {t.id for t in topics}
    live: dict[int, list[ConsentState]] = {}
    for ids in chunks(sorted({contact_id for contact_id, _kind, _note in ends})):
        for state in db.session.scalars(
            select(ConsentState)
            .where(id_in(ConsentState.contact_id, ids), ConsentState.status.in_(LIVE_STATUSES))
            .order_by(ConsentState.contact_id, ConsentState.topic_id)
        ):
            if wanted is None or state.topic_id in wanted:
                live.setdefault(state.contact_id, []).append(state)
    at = at or utcnow()
    changes: list[tuple[ConsentState, ConsentEvent, str]] = []
    for contact_id, kind, note in ends:
        for state in live.pop(contact_id, ()):
            event = ConsentEvent(
                contact_id=contact_id,
                topic_id=state.topic_id,
                kind=kind,
                source=source,
                at=at,
                ip=(ip or None) and ip[:45],
                user_id=user.id if user is not None else None,
                note=note,
            )
            changes.append((state, event, next_status(state.status, kind, source)))
    if not changes:
        return []
    db.session.add_all([event for _state, event, _status in changes])
    db.session.flush()
    for state, event, status in changes:
        note_change(event.id, event.topic_id, event.at, state.status, status)
        if status != state.status:
            state.changed_at = event.at
        state.status = status
        state.event_id = event.id
    return [event for _state, event, _status in changes]


def withdraw_all(
    contact: Contact, *, source: str, ip: str | None = None, user=None, note: str = ""
) -> list[ConsentEvent]:
    """Withdraw every live consent of the contact; nothing is recorded if none is live."""
    return end_consent(contact, None, "withdrawn", source, ip=ip, user=user, note=note)


def allow_mail_again(email: str | None, *, deliverable: bool) -> None:
    """Lift the mail suppression of an address whose owner asked for mail again.

    An unsubscribe or complaint is superseded by new consent; a bounce only when the
    new consent came through a link mailed to the address (it is deliverable after
    all). A suppression staff set by hand stays.
    """
    if not email:
        return
    from crm.mail.models import Suppression
    from crm.mail.services import lift_suppression

    reason = db.session.scalar(select(Suppression.reason).where(Suppression.email == email))
    lifting = {"unsubscribe", "spamreport"} | ({"bounce", "dropped"} if deliverable else set())
    if reason in lifting:
        lift_suppression(email)
