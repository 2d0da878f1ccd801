"""The public signup: a pending signup, its confirmation email, its confirmation (opt-in)."""

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from crm.extensions import db
from crm.mail.services import queue_email
from crm.members.models import Contact
from crm.members.normalize import normalize_email
from crm.subscriptions.ledger import (
    allow_mail_again,
    consent_states,
    record_event,
    subscribed_topics,
)
from crm.subscriptions.links import (
    preferences_url,
    public_url,
    unsubscribe_headers,
    unsubscribe_url,
)
from crm.subscriptions.models import (
    ConsentWording,
    PendingSignup,
    Topic,
    in_display_order,
)
from crm.subscriptions.subscribers import (
    find_contact_by_email,
    follow_merges,
    header_safe,
    split_name,
    subscriber_profile,
)
from crm.subscriptions.tokens import (
    CONFIRM_MAX_AGE,
    make_confirm_token,
)
from crm.timeutil import utcnow

# Pending signups are kept a little past their link's expiry, then purged.
PENDING_RETENTION = timedelta(seconds=CONFIRM_MAX_AGE) + timedelta(days=1)


class FormAlreadyUsed(Exception):
    """The form token started a signup before; the session must be rolled back."""


def start_signup(
    *,
    name: str,
    email: str,
    company: str,
    topics: list[Topic],
    wording: ConsentWording,
    ip: str | None,
    locale: str,
    form_token: str | None = None,
) -> PendingSignup:
    """Store a signup and queue the confirmation email; nothing else changes yet.

    The register is not even looked at: the response and the email are the same
    whether the address is known or not, so the form reveals nothing about who is
    on file. `form_token` (a digest, see `tokens.form_token_digest`) starts one signup
    only: `FormAlreadyUsed` when it started one before.
    """
    email = normalize_email(email)
    first_name, last_name = split_name(name)
    pending = PendingSignup(
        nonce=secrets.token_urlsafe(16),
        email=email,
        first_name=first_name,
        last_name=last_name,
        company_name=header_safe(company, 200),
        topic_ids=sorted({t.id for t in topics}),
        wording_id=wording.id,
        ip=(ip or None) and ip[:45],
        locale=locale if locale in ("nb", "en") else "nb",
        created_at=utcnow(),
        form_token=form_token,
    )
    db.session.add(pending)
    try:
        db.session.flush()
    except IntegrityError as exc:
        if form_token is not None and "form_token" in str(exc.orig):
            raise FormAlreadyUsed from exc
        raise
    token = make_confirm_token(pending.id, pending.nonce)
    queue_email(
        to=email,
        to_name=f"{first_name} {last_name}".strip(),
        category="subscription",
        template="subscriptions/confirm",
        context={
            "name": first_name,
            "confirm_url": public_url(f"/subscribe/confirm/{token}"),
            "topics": [t.label(pending.locale) for t in topics],
            "valid_days": CONFIRM_MAX_AGE // 86400,
        },
        key=f"confirm:{pending.id}:{pending.nonce}",
        fresh_key=True,  # it names the row just inserted
        render_in_worker=True,  # the visitor waits for this request, not for the email
        contact_id=None,
        headers={},
        locale=pending.locale,
    )
    return pending


# Built once: every signup asks, and building a statement costs more than running it.
_ANY_EXPIRED = (
    select(PendingSignup.id).where(PendingSignup.created_at < bindparam("cutoff")).limit(1)
)


def expired_signups_exist(now: datetime | None = None) -> bool:
    """Whether `purge_expired_signups` has anything to do (one probe of the index)."""
    cutoff = (now or utcnow()) - PENDING_RETENTION
    return db.session.scalar(_ANY_EXPIRED, {"cutoff": cutoff}) is not None


def purge_expired_signups(now: datetime | None = None) -> int:
    """Delete pending signups whose link has expired (with a day's grace)."""
    cutoff = (now or utcnow()) - PENDING_RETENTION
    result = db.session.execute(delete(PendingSignup).where(PendingSignup.created_at < cutoff))
    return result.rowcount or 0


def pending_for_claim(pending_id: int, nonce: str) -> PendingSignup | None:
    """The pending signup a confirmation token names, if it still exists."""
    pending = db.session.get(PendingSignup, pending_id)
    if pending is None or not hmac.compare_digest(pending.nonce, nonce):
        return None
    return pending


def pending_topics(pending: PendingSignup) -> list[Topic]:
    if not pending.topic_ids:
        return []
    return in_display_order(
        db.session.scalars(select(Topic).where(Topic.id.in_(pending.topic_ids)))
    )


@dataclass
class Confirmation:
    contact: Contact
    topics: list[Topic]
    first_time: bool


def confirm_signup(pending: PendingSignup, *, ip: str | None) -> Confirmation:
    """Activate a pending signup: the address owner pressed the confirm button.

    Finds the contact by address or creates one (never a duplicate), records the grant
    (time, IP and wording of the form) and the confirmation, and queues the welcome
    email. Only the address owner has the link, and pressing the button is their
    latest word, so it counts even after an unsubscribe. Confirming again changes
    nothing.
    """
    topics = pending_topics(pending)
    if pending.confirmed_at is not None:
        contact = follow_merges(db.session.get(Contact, pending.contact_id))
        if contact is not None:
            return Confirmation(contact, topics, first_time=False)

    contact = find_contact_by_email(pending.email)
    if contact is None:
        contact = Contact(
            first_name=pending.first_name, last_name=pending.last_name, email=pending.email
        )
        db.session.add(contact)
        db.session.flush()
    else:
        if not contact.first_name and not contact.last_name:
            contact.first_name, contact.last_name = pending.first_name, pending.last_name
    profile = subscriber_profile(contact, create=True)
    if pending.company_name and not profile.company_name:
        profile.company_name = pending.company_name
    profile.locale = pending.locale

    states = consent_states(contact)
    for topic in topics:
        state = states.get(topic.id)
        if state is not None and state.status == "active":
            continue
        record_event(
            contact,
            topic,
            "granted",
            "web_form",
            at=pending.created_at,
            ip=pending.ip,
            wording=pending.wording,
        )
        record_event(contact, topic, "confirmed", "email_link", ip=ip, wording=pending.wording)
    pending.confirmed_at = utcnow()
    pending.contact_id = contact.id
    db.session.flush()
    allow_mail_again(contact.email, deliverable=True)

    queue_email(
        to=contact.email,
        to_name=header_safe(contact.name),
        category="subscription",
        template="subscriptions/welcome",
        context={
            "name": contact.first_name,
            "topics": [t.label(pending.locale) for t in subscribed_topics(contact)],
            "unsubscribe_url": unsubscribe_url(contact),
            "preferences_url": preferences_url(contact),
        },
        key=f"welcome:{pending.id}",
        contact_id=contact.id,
        headers=unsubscribe_headers(contact),
        locale=pending.locale,
    )
    return Confirmation(contact, topics, first_time=True)
