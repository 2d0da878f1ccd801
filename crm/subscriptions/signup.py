"""The public signup: a pending signup, its confirmation email (written by a worker job),
its confirmation (opt-in)."""

import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from crm.database import insert_committed
from crm.extensions import db
from crm.mail.services import InvalidAddress, queue_email
from crm.members.models import Contact
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

log = logging.getLogger(__name__)


class FormAlreadyUsed(Exception):
    """The form token started a signup before; nothing was stored."""


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
) -> None:
    """Store a signup, committed when this returns; nothing else changes yet. `email`
    comes as SubscribeForm's validator normalised it (`normalize_email`).

    The row is the request's only write, so it goes in by one INSERT committed on its
    own, beside the session (`crm.database.insert_committed`): on PostgreSQL one round
    trip, where BEGIN, INSERT and COMMIT were three that a sync worker sat through. The
    commit is as durable as any (`synchronous_commit` as set).

    The row holds all its confirmation email needs: a worker job writes and sends that
    email (`queue_confirmations`), so the visitor waits for one INSERT only. The
    register is not even looked at: the response and the email are the same whether
    the address is known or not, so the form reveals nothing about who is on file.
    `form_token` (a digest, see `tokens.form_token_digest`) starts one signup only:
    `FormAlreadyUsed` when it started one before.
    """
    first_name, last_name = split_name(name)
    values = {
        "nonce": secrets.token_urlsafe(16),
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "company_name": header_safe(company, 200),
        "topic_ids": sorted({t.id for t in topics}),
        "wording_id": wording.id,
        "ip": (ip or None) and ip[:45],
        "locale": locale if locale in ("nb", "en") else "nb",
        "created_at": utcnow(),
        "form_token": form_token,
    }
    try:
        insert_committed(db.engine, PendingSignup.__table__, values)
    except IntegrityError as exc:
        if form_token is not None and "form_token" in str(exc.orig):
            raise FormAlreadyUsed from exc
        raise


_UNMAILED = PendingSignup.confirmation_queued_at.is_(None)
_NEXT_UNMAILED = (
    select(PendingSignup.id).where(_UNMAILED).order_by(PendingSignup.id).limit(bindparam("n"))
)


def unmailed_signups_exist(older_than: timedelta = timedelta(0)) -> bool:
    """Whether a signup is waiting for its confirmation email (for `older_than`)."""
    query = select(PendingSignup.id).where(
        _UNMAILED, PendingSignup.created_at <= utcnow() - older_than
    )
    return db.session.scalar(query.limit(1)) is not None


def queue_confirmations(limit: int = 200) -> tuple[int, int]:
    """Store the confirmation email of up to `limit` signups that have none yet, and
    mark each signup in the same transaction: exactly one email per signup, even with
    two workers sweeping at once (the mark is a conditional UPDATE; on PostgreSQL the
    second waits for the first and then finds the rows taken). The send jobs are
    enqueued after the commit, as for any email. Returns (signups looked at, emails
    stored); the caller commits.
    """
    ids = db.session.scalars(_NEXT_UNMAILED, {"n": limit}).all()
    if not ids:
        return 0, 0
    claimed = db.session.scalars(
        update(PendingSignup)
        .where(PendingSignup.id.in_(ids), _UNMAILED)
        .values(confirmation_queued_at=utcnow())
        .returning(PendingSignup.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return len(ids), 0
    pendings = db.session.scalars(
        select(PendingSignup).where(PendingSignup.id.in_(claimed)).order_by(PendingSignup.id)
    ).all()
    topic_ids = {i for p in pendings for i in (p.topic_ids or [])}
    topics = {t.id: t for t in db.session.scalars(select(Topic).where(Topic.id.in_(topic_ids)))}
    for pending in pendings:
        chosen = in_display_order(topics[i] for i in pending.topic_ids or [] if i in topics)
        token = make_confirm_token(pending.id, pending.nonce)
        try:
            queue_email(
                to=pending.email,
                to_name=f"{pending.first_name} {pending.last_name}".strip(),
                category="subscription",
                template="subscriptions/confirm",
                context={
                    "name": pending.first_name,
                    "confirm_url": public_url(f"/subscribe/confirm/{token}"),
                    "topics": [t.label(pending.locale) for t in chosen],
                    "valid_days": CONFIRM_MAX_AGE // 86400,
                },
                key=f"confirm:{pending.id}:{pending.nonce}",
                fresh_key=True,  # the mark above makes this sweep the only one for it
                render_in_worker=True,
                contact_id=None,
                headers={},
                locale=pending.locale,
            )
        except InvalidAddress:
            # The form refuses such addresses; one that got in some other way must not
            # stop every signup after it.
            log.warning("pending signup %s has an address that cannot be mailed", pending.id)
    return len(ids), len(pendings)


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
    if contact is not None and not contact.email:
        # The address lives on only in a record merged into a contact that has none
        # (staff removed it): its owner, who just proved it, is a contact of their own.
        contact = None
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
