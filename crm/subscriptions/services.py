"""The rules of the newsletter signup and the consent ledger.

Functions here change the session but never commit: the request or job that calls
them decides. The ledger is append-only; `record_event` is the only writer, and it
keeps `ConsentState` in step in the same transaction (`next_status` is the rule).
"""

import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, delete, func, or_, select, update

from crm.audit import AuditEntry, _plain  # the audit log's JSON-safe rendering
from crm.bulk import id_in
from crm.extensions import db
from crm.mail.services import queue_email
from crm.members.models import Contact, Network
from crm.members.normalize import is_role_address, normalize_email
from crm.subscriptions.models import (
    CONSENT_KINDS,
    CONSENT_SOURCES,
    GENERAL_TOPIC,
    ConsentEvent,
    ConsentState,
    ConsentWording,
    PendingSignup,
    Subscriber,
    Topic,
    ledger_rewrite_allowed,
)
from crm.subscriptions.tokens import (
    CONFIRM_MAX_AGE,
    LinkClaim,
    TokenInvalid,
    make_confirm_token,
    make_link_token,
    make_link_tokens,
    read_link_token,
)
from crm.timeutil import utcnow

# The first checkbox text. Later versions are added with `add_wording`, never edited.
DEFAULT_WORDING = {
    "nb": (
        "Ja, jeg vil få nyhetsbrev og invitasjoner fra klyngen på e-post om temaene jeg "
        "har valgt. Jeg kan melde meg av når som helst med lenken nederst i hver e-post."
    ),
    "en": (
        "Yes, I want to receive newsletters and invitations from the cluster by email on "
        "the topics I have chosen. I can unsubscribe at any time with the link at the "
        "bottom of every email."
    ),
}
GENERAL_TOPIC_NAMES = ("Generelt", "General news")

ACTIVE_STATUSES = ("active",)
# Statuses a withdrawal, bounce or complaint ends (pending: a grant awaiting confirmation).
LIVE_STATUSES = ("active", "pending")
WITHDRAWING_KINDS = ("withdrawn", "bounced", "complained")

# Pending signups are kept a little past their link's expiry, then purged.
PENDING_RETENTION = timedelta(seconds=CONFIRM_MAX_AGE) + timedelta(days=1)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


STATUS_LABELS = {
    "active": _l("Subscribed"),
    "pending": _l("Awaiting confirmation"),
    "withdrawn": _l("Withdrawn"),
    "bounced": _l("Bounced"),
    "complained": _l("Marked as spam"),
}
KIND_LABELS = {
    "granted": _l("Consent given"),
    "confirmed": _l("Confirmed by email"),
    "withdrawn": _l("Withdrawn"),
    "bounced": _l("Bounced"),
    "complained": _l("Spam complaint"),
}
SOURCE_LABELS = {
    "web_form": _l("Web form"),
    "staff": _l("Staff"),
    "import": _l("Import"),
    "email_link": _l("Email link"),
    "webhook": _l("Email provider"),
}


class ConsentError(ValueError):
    """A consent change that breaks a rule; the message is fit to show staff."""


# -- topics and wording ---------------------------------------------------------------


def _insert_reference_row(model, **values) -> None:
    """INSERT … ON CONFLICT DO NOTHING for topic and wording rows created on first use.

    Two first visitors at once must not fail on the unique keys, nor break the
    caller's transaction (so no IntegrityError, no savepoint).
    """
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    db.session.execute(insert(model).values(**values).on_conflict_do_nothing())


def sync_topics() -> list[Topic]:
    """The active topics, general newsletter first, then one per active network.

    Topics follow the networks: a new network gets a topic, a renamed one renames it,
    an inactive one hides it (its consent history stays).
    """
    topics = list(db.session.scalars(select(Topic)))
    by_slug = {t.slug: t for t in topics}
    by_network = {t.network_id: t for t in topics if t.network_id is not None}
    if GENERAL_TOPIC not in by_slug:
        name, name_en = GENERAL_TOPIC_NAMES
        _insert_reference_row(Topic, slug=GENERAL_TOPIC, name=name, name_en=name_en, active=True)
    for network in db.session.scalars(select(Network)):
        topic = by_network.get(network.id)
        if topic is None:
            if network.active:
                slug = network.slug if network.slug not in by_slug else f"network-{network.id}"
                _insert_reference_row(
                    Topic,
                    slug=slug,
                    name=network.name,
                    name_en="",
                    network_id=network.id,
                    active=True,
                )
            continue
        if topic.name != network.name:
            topic.name = network.name
        if topic.active != network.active:
            topic.active = network.active
    for topic in topics:
        if topic.network_id is None and not topic.is_general and topic.active:
            topic.active = False  # its network was deleted
    return active_topics()


def active_topics() -> list[Topic]:
    """Active topics as the public sees them: general first, then by name."""
    topics = db.session.scalars(select(Topic).where(Topic.active.is_(True))).all()
    return sorted(topics, key=lambda t: (not t.is_general, t.name.casefold()))


def topic_by_slug(slug: str) -> Topic | None:
    return db.session.scalar(select(Topic).where(Topic.slug == slug))


def current_wording() -> ConsentWording:
    """The newest consent wording (version 1 is created on first use)."""
    wording = db.session.scalar(
        select(ConsentWording).order_by(ConsentWording.version.desc()).limit(1)
    )
    if wording is None:
        _insert_reference_row(
            ConsentWording,
            version=1,
            text_nb=DEFAULT_WORDING["nb"],
            text_en=DEFAULT_WORDING["en"],
            created_at=utcnow(),
        )
        wording = db.session.scalar(select(ConsentWording).where(ConsentWording.version == 1))
    return wording


def wording_by_version(version: int) -> ConsentWording | None:
    return db.session.scalar(select(ConsentWording).where(ConsentWording.version == version))


def add_wording(text_nb: str, text_en: str) -> ConsentWording:
    """A new version of the checkbox text; the form shows it from now on."""
    if not text_nb.strip() or not text_en.strip():
        raise ConsentError(_("Both the Norwegian and the English text are required."))
    latest = current_wording()
    wording = ConsentWording(
        version=latest.version + 1, text_nb=text_nb.strip(), text_en=text_en.strip()
    )
    db.session.add(wording)
    db.session.flush()
    return wording


# -- the ledger -----------------------------------------------------------------------


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
    if kind in WITHDRAWING_KINDS:
        return kind
    raise ValueError(f"unknown consent event kind {kind!r}")


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
    """Recompute a contact's ConsentState rows from the ledger (after a merge)."""
    db.session.execute(delete(ConsentState).where(ConsentState.contact_id == contact_id))
    statuses: dict[int, tuple[str, int, datetime]] = {}
    events = db.session.execute(
        select(ConsentEvent.id, ConsentEvent.topic_id, ConsentEvent.kind, ConsentEvent.source)
        .add_columns(ConsentEvent.at)
        .where(ConsentEvent.contact_id == contact_id)
        .order_by(ConsentEvent.id)
    )
    for event_id, topic_id, kind, source, at in events:
        previous = statuses.get(topic_id)
        status = next_status(previous[0] if previous else None, kind, source)
        if status is None:
            continue
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
    """Topics the contact has active consent for."""
    return [
        state.topic for state in consent_states(contact).values() if state.status in ACTIVE_STATUSES
    ]


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


def active_consent_exists(contact_id, topic_slugs: Iterable[str]):
    """(Added for newsletters.) An EXISTS clause: the contact whose id is `contact_id`
    (a column, e.g. `Contact.id`) has active consent for any of the topics.

    Correlated, so it is answered by key lookups: the fast form for a known set of
    contacts (a newsletter batch) where `contacts_with_active_consent` would read
    every subscriber of the topic.
    """
    return (
        select(ConsentState.contact_id)
        .where(
            ConsentState.contact_id == contact_id,
            ConsentState.topic_id.in_(select(Topic.id).where(Topic.slug.in_(list(topic_slugs)))),
            ConsentState.status == "active",
        )
        .exists()
    )


def _end_consent(
    contact: Contact,
    topics: Iterable[Topic] | None,
    kind: str,
    source: str,
    **details,
) -> list[ConsentEvent]:
    """Record `kind` for each of the topics (all, when None) whose consent is live."""
    wanted = None if topics is None else {t.id for t in topics}
    events = []
    for state in consent_states(contact).values():
        if state.status in LIVE_STATUSES and (wanted is None or state.topic_id in wanted):
            events.append(record_event(contact, state.topic, kind, source, **details))
    return events


def withdraw_all(
    contact: Contact, *, source: str, ip: str | None = None, user=None, note: str = ""
) -> list[ConsentEvent]:
    """Withdraw every live consent of the contact; nothing is recorded if none is live."""
    return _end_consent(contact, None, "withdrawn", source, ip=ip, user=user, note=note)


def is_company_address(contact: Contact) -> bool:
    """post@, firmapost@, info@…: a company mailbox, not a natural person."""
    return bool(contact.email) and is_role_address(contact.email)


# -- public signup --------------------------------------------------------------------


def header_safe(text: str | None, limit: int = 200) -> str:
    """Text that can go into a header: control characters (CR, LF, …) become spaces."""
    return " ".join(_CONTROL.sub(" ", text or "").split())[:limit]


def split_name(name: str) -> tuple[str, str]:
    """'Kari Anne Nordmann' -> ('Kari Anne', 'Nordmann'); a single word is a first name."""
    words = header_safe(name, 200).split()
    if len(words) < 2:
        return (words[0][:100] if words else ""), ""
    return " ".join(words[:-1])[:100], words[-1][:100]


def public_url(path: str) -> str:
    return current_app.config["PUBLIC_BASE_URL"] + path


def start_signup(
    *,
    name: str,
    email: str,
    company: str,
    topics: list[Topic],
    wording: ConsentWording,
    ip: str | None,
    locale: str,
) -> PendingSignup:
    """Store a signup and queue the confirmation email; nothing else changes yet.

    The register is not even looked at: the response and the email are the same
    whether the address is known or not, so the form reveals nothing about who is
    on file.
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
    )
    db.session.add(pending)
    db.session.flush()
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
        contact_id=None,
        headers={},
        locale=pending.locale,
    )
    return pending


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
    topics = db.session.scalars(select(Topic).where(Topic.id.in_(pending.topic_ids))).all()
    return sorted(topics, key=lambda t: (not t.is_general, t.name.casefold()))


def find_contact_by_email(email: str) -> Contact | None:
    """The contact who owns an address: a current one first, following merges."""
    candidates = db.session.scalars(
        select(Contact).where(Contact.email == email).order_by(Contact.id).limit(20)
    ).all()
    if not candidates:
        return None
    current = [c for c in candidates if c.archived_at is None]
    contact = (current or candidates)[0]
    return follow_merges(contact)


def follow_merges(contact: Contact | None) -> Contact | None:
    """The contact a merged contact lives on in."""
    for _hop in range(10):
        if contact is None or contact.merged_into_id is None:
            return contact
        contact = db.session.get(Contact, contact.merged_into_id)
    return contact


def subscriber_profile(contact: Contact, *, create: bool = False) -> Subscriber | None:
    profile = db.session.scalar(select(Subscriber).where(Subscriber.contact_id == contact.id))
    if profile is None and create:
        profile = Subscriber(contact_id=contact.id, token_version=1)
        db.session.add(profile)
        db.session.flush()
    return profile


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


# -- links in every email: unsubscribe and preferences --------------------------------


def _token_versions(contact_ids: Iterable[int]) -> dict[int, int]:
    ids = list(contact_ids)
    versions = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        versions.update(
            db.session.execute(
                select(Subscriber.contact_id, Subscriber.token_version).where(
                    id_in(Subscriber.contact_id, chunk)
                )
            ).all()
        )
    return versions


def link_token(contact: Contact) -> str:
    """The contact's long-lived token for /unsubscribe and /preferences."""
    return make_link_token(contact.id, _token_versions([contact.id]).get(contact.id, 1))


def unsubscribe_url(contact: Contact) -> str:
    return public_url(f"/unsubscribe/{link_token(contact)}")


def preferences_url(contact: Contact) -> str:
    return public_url(f"/preferences/{link_token(contact)}")


def unsubscribe_headers(contact: Contact) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe headers for an email to `contact`."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(contact)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def unsubscribe_urls(contact_ids: Iterable[int]) -> dict[int, str]:
    """Unsubscribe URLs for many contacts with one query per 1,000 (newsletter sends)."""
    ids = list(contact_ids)
    versions = _token_versions(ids)
    tokens = make_link_tokens((cid, versions.get(cid, 1)) for cid in ids)
    base = public_url("/unsubscribe/")
    return {cid: base + token for cid, token in zip(ids, tokens, strict=True)}


def contact_for_link(token: str) -> Contact | None:
    """The contact an unsubscribe/preferences token speaks for, or None if it is void.

    Void: forged, or revoked by a token-version bump (erase, rotation). A token of a
    contact merged into another speaks for the surviving contact.
    """
    try:
        claim: LinkClaim = read_link_token(token)
    except TokenInvalid:
        return None
    contact = db.session.get(Contact, claim.contact_id)
    if contact is None:
        return None
    if _token_versions([contact.id]).get(contact.id, 1) != claim.version:
        return None
    return follow_merges(contact)


def revoke_links(contact: Contact) -> None:
    """Void every unsubscribe/preferences link sent to the contact so far."""
    profile = subscriber_profile(contact, create=True)
    profile.token_version += 1


def unsubscribe(contact: Contact, *, ip: str | None) -> list[ConsentEvent]:
    """The one-click unsubscribe: withdraw everything, at once."""
    return withdraw_all(contact, source="email_link", ip=ip, note="unsubscribe link")


def update_preferences(
    contact: Contact, chosen: Iterable[Topic], *, ip: str | None, wording: ConsentWording
) -> tuple[list[Topic], list[Topic]]:
    """Set the contact's topics to `chosen` from the preferences page: (added, removed).

    The page is reached through a link mailed to the address, so a grant there is
    confirmed by construction.
    """
    chosen_ids = {t.id for t in chosen}
    states = consent_states(contact)
    added, removed = [], []
    for topic in active_topics():
        state = states.get(topic.id)
        status = state.status if state else None
        if topic.id in chosen_ids and status != "active":
            record_event(contact, topic, "granted", "email_link", ip=ip, wording=wording)
            added.append(topic)
        elif topic.id not in chosen_ids and status in LIVE_STATUSES:
            record_event(contact, topic, "withdrawn", "email_link", ip=ip, note="preferences")
            removed.append(topic)
    if added:
        allow_mail_again(contact.email, deliverable=True)
    return added, removed


# -- staff --------------------------------------------------------------------------


STAFF_CHANNELS = ("in_person", "phone", "email", "letter")


def record_staff_consent(
    contact: Contact, topics: Iterable[Topic], *, user, channel: str, note: str
) -> list[ConsentEvent]:
    """Consent a person gave staff directly (in person, by phone …): active at once.

    The note is the evidence (who said what, when), so it is required; the current
    wording is recorded as what staff read out or showed.
    """
    note = (note or "").strip()
    if not note:
        raise ConsentError(_("Describe how and when the person gave consent."))
    if channel not in STAFF_CHANNELS:
        raise ConsentError(_("Choose how the consent was given."))
    if not contact.email:
        raise ConsentError(_("The contact has no email address."))
    topics = list(topics)
    if not topics:
        raise ConsentError(_("Choose at least one topic."))
    wording = current_wording()
    states = consent_states(contact)
    events = []
    for topic in topics:
        state = states.get(topic.id)
        if state is not None and state.status == "active":
            continue
        events.append(
            record_event(
                contact,
                topic,
                "granted",
                "staff",
                user=user,
                wording=wording,
                note=f"[{channel}] {note}"[:2000],
            )
        )
    if events:
        allow_mail_again(contact.email, deliverable=False)
    return events


def staff_withdraw(
    contact: Contact, topics: Iterable[Topic] | None, *, user, note: str
) -> list[ConsentEvent]:
    """Withdraw consent on the person's request (all topics when `topics` is None)."""
    note = (note or "").strip()[:2000] or "withdrawn on request"
    return _end_consent(contact, topics, "withdrawn", "staff", user=user, note=note)


# -- email provider events (webhook) --------------------------------------------------

MAIL_EVENT_KINDS = {
    "bounce": "bounced",
    "dropped": "bounced",
    "spamreport": "complained",
    "unsubscribe": "withdrawn",
    "group_unsubscribe": "withdrawn",
}


def handle_mail_event(event: dict, message=None) -> list[ConsentEvent]:
    """Withdraw consent on a bounce, drop, spam report or unsubscribe from the provider.

    The contact is the message's, else the owner of the event's address. Registered
    with the mail area's webhook (`crm.mail.services.register_event_handler`).
    """
    kind = MAIL_EVENT_KINDS.get(str(event.get("event", "")))
    if kind is None or (event.get("event") == "bounce" and event.get("type") == "blocked"):
        return []  # a "blocked" bounce is temporary: the address still exists
    contact = None
    if message is not None and getattr(message, "contact_id", None):
        contact = follow_merges(db.session.get(Contact, message.contact_id))
    if contact is None:
        try:
            contact = find_contact_by_email(normalize_email(str(event.get("email") or "")))
        except ValueError:
            return []
    if contact is None:
        return []
    reason = header_safe(str(event.get("reason") or event.get("type") or ""), 300)
    note = f"{event.get('event')}: {reason}".strip(": ")
    return _end_consent(contact, None, kind, "webhook", note=note)


# -- GDPR ---------------------------------------------------------------------------


def _row(obj, exclude: tuple[str, ...] = ()) -> dict:
    return {
        column.key: _plain(getattr(obj, column.key))
        for column in obj.__mapper__.column_attrs
        if column.key not in exclude
    }


def _email_messages(contact: Contact) -> list[dict]:
    try:
        from crm.mail.models import EmailMessage
    except ImportError:
        return []
    conditions = [EmailMessage.contact_id == contact.id]
    if contact.email:
        conditions.append(EmailMessage.to_email == contact.email)
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
    """Everything held about a person, for a data-subject access request (JSON-safe)."""
    profile = subscriber_profile(contact)
    pending = []
    if contact.email:
        pending = db.session.scalars(
            select(PendingSignup).where(PendingSignup.email == contact.email)
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
        "pending_signups": [_row(p, exclude=("nonce",)) for p in pending],
        "email_messages": _email_messages(contact),
        "audit_entries": [_row(e) for e in _audit_entries_of(contact)],
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
    """
    if contact.merged_into_id is not None:
        raise ConsentError(_("Erase the contact this one was merged into instead."))
    email = contact.email
    withdrawals = withdraw_all(contact, source="staff", user=user, note="erased on request")
    activity_ids = [a.id for a in contact.activities]
    db.session.flush()
    # Entries up to here hold the person's data; those the erase writes hold only the
    # old values (the new ones are blanks and the time of erasure).
    before_erase = db.session.scalar(select(func.max(AuditEntry.id))) or 0

    profile = subscriber_profile(contact, create=True)
    profile.company_name = ""
    profile.erased_at = utcnow()
    profile.token_version += 1

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
    contact.first_name = ""
    contact.last_name = ""
    contact.email = None
    contact.phone = None
    contact.job_title = ""
    contact.notes = ""
    contact.active = False
    contact.company_id = None
    contact.networks = []
    contact.archived_at = contact.archived_at or utcnow()
    if email:
        db.session.execute(delete(PendingSignup).where(PendingSignup.email == email))
    db.session.execute(delete(PendingSignup).where(PendingSignup.contact_id == contact.id))
    _erase_email_copies(contact, email)
    db.session.flush()
    _scrub_audit_entries(contact, before_erase, activity_ids)


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
        .values(to_email=ERASED, to_name="", text_body="", html_body=None, headers={})
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


# -- other areas' hooks ---------------------------------------------------------------


def merge_consent(target: Contact, other: Contact) -> None:
    """MERGE_HOOKS: move the other contact's consent ledger to the target it joins.

    Both contacts' current states are re-derived from the ledger afterwards (in the
    order events were written, so the latest choice per topic wins). The other
    contact's links keep working: they resolve to the target through `merged_into_id`.
    """
    token = ledger_rewrite_allowed.set(True)
    try:
        events = db.session.scalars(select(ConsentEvent).where(ConsentEvent.contact_id == other.id))
        for event in events:
            event.contact_id = target.id
        db.session.flush()
    finally:
        ledger_rewrite_allowed.reset(token)
    rebuild_states(other.id)
    rebuild_states(target.id)
    other_profile = subscriber_profile(other)
    if other_profile is not None:
        profile = subscriber_profile(target, create=True)
        if not profile.company_name and other_profile.company_name:
            profile.company_name = other_profile.company_name


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


def register_hooks() -> None:
    """Join the mail webhook, contact merges and demo data (each at most once)."""
    from crm.mail.services import register_event_handler
    from crm.members import services as members_services

    register_event_handler(handle_mail_event)
    if merge_consent not in members_services.MERGE_HOOKS:
        members_services.MERGE_HOOKS.append(merge_consent)
    try:
        from crm.members import demo
    except ImportError:
        return
    from crm.subscriptions.demo import create_demo_subscribers

    hooks = getattr(demo, "DEMO_HOOKS", None)
    if hooks is not None and create_demo_subscribers not in hooks:
        hooks.append(create_demo_subscribers)
