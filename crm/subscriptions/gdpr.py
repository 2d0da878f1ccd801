"""Data-subject rights (GDPR): export everything held about a person, erase a person."""

from flask_babel import gettext as _
from sqlalchemy import and_, delete, func, or_, select, update

from crm.audit import AuditEntry, _plain  # the audit log's JSON-safe rendering
from crm.extensions import db
from crm.members.models import Contact
from crm.subscriptions.ledger import ConsentError, consent_history, consent_states, withdraw_all
from crm.subscriptions.models import (
    ConsentEvent,
    PendingSignup,
    Subscriber,
    Topic,
    ledger_rewrite_allowed,
)
from crm.subscriptions.subscribers import is_company_address, subscriber_profile
from crm.timeutil import utcnow


def _row(obj, exclude: tuple[str, ...] = ()) -> dict:
    return {
        column.key: _plain(getattr(obj, column.key))
        for column in obj.__mapper__.column_attrs
        if column.key not in exclude
    }


def _email_messages(people: list[Contact]) -> list[dict]:
    """The mail log's messages to any of a person's contact rows, by id or address."""
    try:
        from crm.mail.models import EmailMessage
    except ImportError:
        return []
    conditions = [EmailMessage.contact_id.in_([p.id for p in people])]
    if addresses := [p.email for p in people if p.email]:
        conditions.append(EmailMessage.to_email.in_(addresses))
    messages = db.session.scalars(
        select(EmailMessage).where(or_(*conditions)).order_by(EmailMessage.id)
    )
    return [_row(m) for m in messages]


def _audit_entries_of(contact: Contact, activity_ids: list[int] | None = None) -> list[AuditEntry]:
    """Audit entries about the person: contact, consent events, subscriber, activities."""
    if activity_ids is None:
        activity_ids = [a.id for a in contact.activities]
    event_ids = select(ConsentEvent.id).where(ConsentEvent.contact_id == contact.id)
    profile_ids = select(Subscriber.id).where(Subscriber.contact_id == contact.id)
    return list(
        db.session.scalars(
            select(AuditEntry)
            .where(
                or_(
                    and_(AuditEntry.record_type == "contact", AuditEntry.record_id == contact.id),
                    and_(
                        AuditEntry.record_type == "consent_event",
                        AuditEntry.record_id.in_(event_ids),
                    ),
                    and_(
                        AuditEntry.record_type == "subscriber",
                        AuditEntry.record_id.in_(profile_ids),
                    ),
                    and_(
                        AuditEntry.record_type == "activity",
                        AuditEntry.record_id.in_(activity_ids),
                    ),
                )
            )
            .order_by(AuditEntry.id)
        )
    )


def export_person(contact: Contact) -> dict:
    """Everything held about a person, for a data-subject access request (JSON-safe).

    With the contacts merged into this one: the same person's older records (other
    addresses, names), their pending signups, copies of emails and audit entries."""
    profile = subscriber_profile(contact)
    merged = _merged_into(contact)
    people = [contact, *merged]
    addresses = [p.email for p in people if p.email]
    pending = []
    if addresses:
        pending = db.session.scalars(
            select(PendingSignup)
            .where(PendingSignup.email.in_(addresses))
            .order_by(PendingSignup.id)
        ).all()
    topics = {t.id: t.slug for t in db.session.scalars(select(Topic))}
    return {
        "exported_at": utcnow().isoformat(),
        "contact": _row(contact),
        "company": contact.company.name if contact.company else None,
        "company_address": is_company_address(contact),
        "networks": [n.name for n in contact.networks],
        "activities": [_row(a) for a in contact.activities],
        "subscriber": _row(profile, exclude=("token_version",)) if profile else None,
        "consent_state": [
            {"topic": topics.get(s.topic_id), "status": s.status, "since": s.changed_at.isoformat()}
            for s in consent_states(contact).values()
        ],
        "consent_events": [
            dict(
                _row(e),
                topic=topics.get(e.topic_id),
                wording_version=e.wording.version if e.wording else None,
            )
            for e in reversed(consent_history(contact))
        ],
        "merged_records": [_row(m) for m in merged],
        "pending_signups": [_row(p, exclude=("nonce",)) for p in pending],
        "email_messages": _email_messages(people),
        "audit_entries": [_row(e) for p in people for e in _audit_entries_of(p)],
    }


ERASED = "[erased]"


def erase_person(contact: Contact, *, user) -> None:
    """Anonymise a person (GDPR art. 17) while keeping minimal consent evidence.

    Kept: the contact row as an empty shell (so ledger and history still add up) and
    each consent event's kind, topic, time, source, wording and staff user. Gone:
    names, address, phone, notes, free-text company, networks, IPs and notes on consent
    events, pending signups, the person's own activities, copies of emails, and the
    values in the audit log (who changed which field when stays). Every unsubscribe and
    preferences link stops working. The erase itself is in the audit log.

    The contacts merged into this one (directly or through others) are the same person:
    they are emptied the same way. Left as they were, their addresses led a later
    signup's confirmation to the erased shell (a server error) and kept the person's
    names and addresses.
    """
    if contact.merged_into_id is not None:
        raise ConsentError(_("Erase the contact this one was merged into instead."))
    people = [contact, *_merged_into(contact)]
    withdrawals = withdraw_all(contact, source="staff", user=user, note="erased on request")
    activity_ids = [a.id for a in contact.activities]
    db.session.flush()
    # Entries up to here hold the person's data; those the erase writes hold only the
    # old values (the new ones are blanks and the time of erasure).
    before_erase = db.session.scalar(select(func.max(AuditEntry.id))) or 0

    token = ledger_rewrite_allowed.set(True)
    try:
        for event in consent_history(contact):
            if event not in withdrawals:
                event.ip = None
                event.note = ""
        db.session.flush()
    finally:
        ledger_rewrite_allowed.reset(token)

    for activity in list(contact.activities):
        if activity.company_id is None:
            db.session.delete(activity)
        else:
            activity.contact_id = None  # the company's history stays, without the person
    for person in people:
        _empty(person, profile=subscriber_profile(person, create=person is contact))
    db.session.flush()
    for person in people:
        _scrub_audit_entries(person, before_erase, activity_ids if person is contact else [])


def _merged_into(contact: Contact) -> list[Contact]:
    """The contacts merged into this one, directly or through others."""
    found, ids = [], [contact.id]
    while ids:
        more = db.session.scalars(select(Contact).where(Contact.merged_into_id.in_(ids))).all()
        found += more
        ids = [c.id for c in more]
    return found


def _empty(person: Contact, profile: Subscriber | None) -> None:
    """One contact row of an erased person made an empty shell; their pending signups
    and copies of emails gone, their links dead."""
    email = person.email
    if profile is not None:
        profile.company_name = ""
        profile.erased_at = utcnow()
        profile.token_version += 1
    person.first_name = ""
    person.last_name = ""
    person.email = None
    person.phone = None
    person.job_title = ""
    person.notes = ""
    person.active = False
    person.company_id = None
    person.networks = []
    person.archived_at = person.archived_at or utcnow()
    if email:
        db.session.execute(delete(PendingSignup).where(PendingSignup.email == email))
    db.session.execute(delete(PendingSignup).where(PendingSignup.contact_id == person.id))
    _erase_email_copies(person, email)


def _erase_email_copies(contact: Contact, email: str | None) -> None:
    """Blank the mail log's copies of messages to the person (the log rows stay)."""
    try:
        from crm.mail.models import EmailEvent, EmailMessage
    except ImportError:
        return
    conditions = [EmailMessage.contact_id == contact.id]
    if email:
        conditions.append(EmailMessage.to_email == email)
    db.session.execute(
        update(EmailMessage)
        .where(or_(*conditions))
        .values(to_email=ERASED, to_name="", text_body="", html_body=None, headers={}, context=None)
        .execution_options(synchronize_session=False)
    )
    if email:
        db.session.execute(
            update(EmailEvent)
            .where(EmailEvent.email == email)
            .values(email=ERASED, raw={})
            .execution_options(synchronize_session=False)
        )


# Fields of the person's records whose values the audit log must not keep after erasure.
PERSONAL_FIELDS = {
    "contact": {"first_name", "last_name", "email", "phone", "job_title", "notes", "networks"},
    "consent_event": {"ip", "note"},
    "subscriber": {"company_name"},
    "activity": {"summary", "details"},
}


def _scrub_audit_entries(contact: Contact, before_erase: int, activity_ids: list[int]) -> None:
    """Blank the person's values in the audit log, keeping who changed what when.

    Entries written before the erase lose both values of personal fields; those the
    erase wrote lose only the old value (the new one is a blank).
    """

    def blank(value):
        return None if value is None else ERASED

    for entry in _audit_entries_of(contact, activity_ids):
        personal = PERSONAL_FIELDS[entry.record_type]
        changes = {}
        for field, (old, new) in entry.changes.items():
            if field in personal:
                old, new = blank(old), (blank(new) if entry.id <= before_erase else new)
            changes[field] = [old, new]
        entry.changes = changes
        entry.record_label = f"#{entry.record_id}"
