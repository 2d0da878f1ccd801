"""Invitations to an event, and its other mail, through the newsletter recipient ledger.

There is no second sending mechanism: an invitation is a `Newsletter` of kind
`event_invitation` linked to the event (`event_id`). It has the newsletter's audience
picker (networks, whose contacts at member companies may be invited on the basis of
membership; municipalities, contact roles, member / non-member companies, topics), its
ledger (exactly once, crash-safe, rate-limited), its pages for the text, preview,
sending and progress. Who may be invited is decided in `crm.newsletters.audience`, like
all mail; an invitation also leaves out whoever another invitation to the event reached
and whoever already answered.

What is particular to events lives here:

- each invitee's own links, filled in per recipient when a batch is sent: registration
  (`/arrangementer/<id>?invitasjon=<token>`, which pre-fills the public form) and
  "can't come" (`/arrangementer/<id>/kan-ikke/<token>`), a signed token naming the event
  and the contact;
- the status of each invitee: invited (the invitation is on its way), no answer,
  registered, declined;
- one reminder per invitation, to those it reached who have not answered (kind
  `event_invitation_reminder`, its `parent_id` the invitation);
- a reminder to registrants N days before (kind `event_registrant_reminder`, scheduled:
  the newsletter scheduler's RQ job starts it then, and its ledger takes whoever is
  registered at that moment);
- a message to all registrants (kind `event_message`).

Functions change the session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import func, select

from crm.events.models import Event, InvitationAnswer, Registration
from crm.extensions import db
from crm.i18n import format_date
from crm.members.models import Company, Contact
from crm.newsletters import compose
from crm.newsletters import services as newsletters
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions.links import public_url
from crm.subscriptions.tokens import MAX_TOKEN_LENGTH
from crm.subscriptions.topics import sync_topics
from crm.timeutil import OSLO, utcnow

INVITATION_SALT = "klynge.events.invitation"
TAG_REGISTER = "%register_url%"
TAG_DECLINE = "%decline_url%"
INVITATION_KINDS = ("event_invitation", "event_invitation_reminder")
REGISTRANT_KINDS = ("event_registrant_reminder", "event_message")
# Registrants are reminded at this local time of day, N days before the event.
REMINDER_TIME = time(9, 0)
MAX_REMINDER_DAYS = 60

STATUSES = {
    "invited": _l("Invited"),
    "no_answer": _l("No answer"),
    "registered": _l("Registered"),
    "declined": _l("Can't come"),
}
STATUS_BADGES = {
    "invited": "info",
    "no_answer": "neutral",
    "registered": "success",
    "declined": "warning",
}


class InvitationError(ValueError):
    """A request that breaks a rule; the message is fit to show staff or the invitee."""


# -- the invitee's token ---------------------------------------------------------------------


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=INVITATION_SALT)


def invitation_token(event_id: int, contact_id: int) -> str:
    return _serializer().dumps([event_id, contact_id])


def read_invitation(event_id: int, token: str) -> Contact | None:
    """The invitee a token speaks for at this event, or None (forged, another event's,
    or the contact is gone)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        payload = _serializer().loads(token)
    except (BadData, ValueError, TypeError):
        return None
    match payload:
        case [int(token_event), int(contact_id)] if token_event == event_id:
            contact = db.session.get(Contact, contact_id)
            if contact is not None and contact.merged_into_id is not None:
                contact = db.session.get(Contact, contact.merged_into_id)
            return contact
    return None


def register_url(event_id: int, token: str) -> str:
    return public_url(f"/arrangementer/{event_id}?invitasjon={token}")


def decline_url(event_id: int, token: str) -> str:
    return public_url(f"/arrangementer/{event_id}/kan-ikke/{token}")


# -- what an event's mail adds to the newsletter's email (compose.MAIL_EXTRAS) ----------------


class EventMailExtras:
    """Buttons with each invitee's own links in invitations and their reminder; a link
    to the event's page in mail to registrants."""

    def actions(self, newsletter) -> list[tuple[str, str]]:
        if newsletter.event_id is None:
            return []
        if newsletter.kind in INVITATION_KINDS:
            return [(_("Register"), TAG_REGISTER), (_("I can't come"), TAG_DECLINE)]
        if newsletter.kind in REGISTRANT_KINDS:
            return [(_("The event's page"), public_url(f"/arrangementer/{newsletter.event_id}"))]
        return []

    def substitutions(self, newsletter, contact_ids: list[int]) -> dict[int, dict[str, str]]:
        if newsletter.event_id is None or newsletter.kind not in INVITATION_KINDS:
            return {}
        dumps = _serializer().dumps  # one serializer for the whole batch
        event_id = newsletter.event_id
        values = {}
        for contact_id in contact_ids:
            token = dumps([event_id, contact_id])
            values[contact_id] = {
                TAG_REGISTER: register_url(event_id, token),
                TAG_DECLINE: decline_url(event_id, token),
            }
        return values


# -- making an event's mail -----------------------------------------------------------------


def _when(event: Event) -> str:
    sessions = event.sessions
    if not sessions:
        return ""
    lines = []
    for session in sessions:
        start = session.starts_at.astimezone(OSLO)
        end = session.ends_at.astimezone(OSLO)
        lines.append(f"- {format_date(start)} {start:%H:%M}–{end:%H:%M}")
    return "\n".join(lines)


def _event_text(event: Event) -> str:
    parts = [f"## {event.title}"]
    when = _when(event)
    if when:
        parts.append(when)
    if event.venue:
        parts.append(_("Venue: %(venue)s", venue=event.venue))
    if event.description:
        parts.append(event.description)
    return "\n\n".join(parts)


def default_text(event: Event, kind: str) -> tuple[str, str]:
    """A subject and Markdown body to start from, in the newsletters' language."""
    with force_locale(compose.newsletter_locale()):
        if kind == "event_invitation":
            subject = _("Invitation: %(title)s", title=event.title)
            intro = _("You are invited to %(title)s.", title=event.title)
        elif kind == "event_invitation_reminder":
            subject = _("Reminder: %(title)s", title=event.title)
            intro = _(
                "We have not heard from you about %(title)s. Will you come?", title=event.title
            )
        elif kind == "event_registrant_reminder":
            subject = _("Soon: %(title)s", title=event.title)
            intro = _("Welcome to %(title)s. Here is what you need to know.", title=event.title)
        else:
            subject = event.title
            intro = _("A message about %(title)s.", title=event.title)
        return subject, f"{intro}\n\n{_event_text(event)}"


def _new(event: Event, kind: str, user, **fields) -> Newsletter:
    sync_topics()  # the audience picker offers every topic (created on first use)
    subject, body = default_text(event, kind)
    content = newsletters.Content(
        subject=subject,
        body=body,
        kind=kind,
        event_id=event.id,
        topics=fields.pop("topics", ()),
        **fields,
    )
    return newsletters.create_newsletter(content, user)


def new_invitation(event: Event, user=None, **audience) -> Newsletter:
    """A draft invitation to the event, to the event's networks unless told otherwise
    (staff then adjust the audience and text on the newsletter's page, and send it)."""
    audience.setdefault("network_ids", tuple(n.id for n in event.networks))
    if not audience["network_ids"] and not audience.get("topics"):
        raise InvitationError(
            _("The event belongs to no network: choose whom to invite on the next page.")
        )
    return _new(event, "event_invitation", user, **audience)


# -- inviting people picked on a list (the bulk action of the contact and company lists) --------


def _picked_audience(event: Event):
    """Whom an invitation from a list may reach: the event's networks (membership) and
    consent for the general newsletter or one of those networks' topics, as decided in
    crm.newsletters.audience; minus whoever was invited or answered already."""
    from crm.newsletters.audience import Audience
    from crm.subscriptions.models import GENERAL_TOPIC, Topic

    network_ids = tuple(n.id for n in event.networks)
    slugs = (
        db.session.scalars(select(Topic.slug).where(Topic.network_id.in_(network_ids))).all()
        if network_ids
        else []
    )
    topics = tuple(dict.fromkeys((GENERAL_TOPIC, *slugs)))
    return Audience(
        topics=topics, network_ids=network_ids, kind="event_invitation", event_id=event.id
    )


def invitable(event: Event, contact_ids: list[int]) -> list[int]:
    """The picked contacts an invitation to the event would reach now, one per email
    address (the lowest id), in the order given."""
    from crm.members.bulk_actions import rows_for
    from crm.newsletters.audience import eligible_contacts

    sync_topics()
    audience = _picked_audience(event)
    eligible: set[int] = set()
    for start in range(0, len(contact_ids), 5_000):
        chunk = contact_ids[start : start + 5_000]
        eligible.update(db.session.scalars(eligible_contacts(audience, among=chunk)))
    emails = {
        contact_id: (email or "").lower()
        for contact_id, email in rows_for(
            select(Contact.id, Contact.email), Contact.id, sorted(eligible)
        )
    }
    first: dict[str, int] = {}
    for contact_id in sorted(emails):
        first.setdefault(emails[contact_id], contact_id)
    chosen = set(first.values())
    return [i for i in contact_ids if i in chosen]


def invite_picked(event: Event, contact_ids: list[int], user=None) -> Newsletter:
    """A draft invitation to the event limited to the picked contacts it may reach (its
    audience otherwise as `invitable` says); staff check the text and send it from the
    newsletter's page, through the newsletter ledger like every invitation."""
    from crm import bulk
    from crm.newsletters.models import newsletter_pick

    if event.starts_at is None or event.starts_at <= utcnow():
        raise InvitationError(_("Invitations go to events that have not started yet."))
    reach = invitable(event, contact_ids)
    if not reach:
        raise InvitationError(
            _(
                "None of the selected people can be invited: they have neither consent "
                "for newsletters nor membership of the event's networks, or were "
                "invited already. Nothing was changed."
            )
        )
    audience = _picked_audience(event)
    invitation = _new(
        event,
        "event_invitation",
        user,
        topics=audience.topics,
        network_ids=audience.network_ids,
    )
    db.session.flush()
    bulk.insert_rows(
        newsletter_pick, [{"contact_id": i} for i in reach], {"newsletter_id": invitation.id}
    )
    return invitation


def picked_count(newsletter: Newsletter) -> int:
    """How many contacts the invitation is limited to (0: its whole audience)."""
    return newsletters.picked_count(newsletter)


def invitations_of(event: Event) -> list[Newsletter]:
    return list(
        db.session.scalars(
            select(Newsletter)
            .where(Newsletter.event_id == event.id)
            .order_by(Newsletter.created_at, Newsletter.id)
        )
    )


def reminder_of(invitation: Newsletter) -> Newsletter | None:
    return db.session.scalar(
        select(Newsletter).where(
            Newsletter.parent_id == invitation.id,
            Newsletter.kind == "event_invitation_reminder",
        )
    )


def new_reminder(invitation: Newsletter, user=None) -> Newsletter:
    """The one reminder of an invitation that has gone out, to those it reached who have
    not answered; its audience is the invitation's."""
    if invitation.kind != "event_invitation" or invitation.state not in ("sending", "finished"):
        raise InvitationError(_("Only an invitation that has been sent can be followed up."))
    if reminder_of(invitation) is not None:
        raise InvitationError(_("This invitation already has its reminder."))
    event = db.session.get(Event, invitation.event_id)
    content = newsletters.content_of(invitation)
    subject, body = default_text(event, "event_invitation_reminder")
    return newsletters.create_newsletter(
        replace(
            content,
            subject=subject,
            body=body,
            kind="event_invitation_reminder",
            parent_id=invitation.id,
            in_archive=False,
        ),
        user,
    )


def new_message(event: Event, user=None) -> Newsletter:
    """A draft message to everyone registered (confirmed, offered a seat or waiting)."""
    return _new(event, "event_message", user)


def schedule_registrant_reminder(event: Event, days: int, user=None) -> Newsletter:
    """A reminder to those registered, sent `days` days before the first session at
    09:00 Oslo time (started then by the newsletter scheduler's RQ job)."""
    if not 1 <= days <= MAX_REMINDER_DAYS:
        raise InvitationError(_("Choose between 1 and %(max)s days.", max=MAX_REMINDER_DAYS))
    if event.starts_at is None:
        raise InvitationError(_("The event has no sessions yet."))
    day = event.starts_at.astimezone(OSLO).date() - timedelta(days=days)
    at = datetime.combine(day, REMINDER_TIME, tzinfo=OSLO)
    if at <= utcnow() + timedelta(minutes=1):
        raise InvitationError(_("That day has passed: choose fewer days."))
    reminder = _new(event, "event_registrant_reminder", user)
    newsletters.schedule(reminder, at)
    return reminder


# -- answers -----------------------------------------------------------------------------------


def registration_of(event: Event, contact: Contact) -> Registration | None:
    return db.session.scalar(
        select(Registration).where(
            Registration.event_id == event.id,
            Registration.contact_id == contact.id,
            Registration.status != "cancelled",
        )
    )


def decline(event: Event, contact: Contact, *, ip: str | None = None) -> InvitationAnswer:
    """Record "can't come" (once; a second click changes nothing). A registered person
    cancels through their registration's own link instead."""
    if registration_of(event, contact) is not None:
        raise InvitationError(
            _("You are registered. Use the link in your confirmation email to cancel.")
        )
    answer = db.session.scalar(
        select(InvitationAnswer).where(
            InvitationAnswer.event_id == event.id, InvitationAnswer.contact_id == contact.id
        )
    )
    if answer is None:
        answer = InvitationAnswer(
            event_id=event.id, contact_id=contact.id, answer="declined", ip=ip and ip[:45]
        )
        db.session.add(answer)
        db.session.flush()
    return answer


@dataclass(frozen=True)
class Prefill:
    name: str
    email: str
    company: str


def prefill(event: Event, token: str | None) -> Prefill | None:
    """What the invitee's registration link fills into the public form."""
    contact = read_invitation(event.id, token or "")
    if contact is None or not contact.email:
        return None
    company = db.session.get(Company, contact.company_id) if contact.company_id else None
    name = " ".join(p for p in (contact.first_name, contact.last_name) if p)
    return Prefill(name=name, email=contact.email, company=company.name if company else "")


# -- who was invited, and what they answered ------------------------------------------------------


@dataclass(frozen=True)
class Invitee:
    contact_id: int
    name: str
    email: str
    company: str
    status: str

    @property
    def status_label(self) -> str:
        return str(STATUSES[self.status])


def invitees(event: Event) -> list[Invitee]:
    """Everyone an invitation to the event went to (or is going to), with their answer."""
    R = NewsletterRecipient
    rows = db.session.execute(
        select(
            R.contact_id,
            func.max(R.state),  # "sent" > "pending": sent to them at least once
            Contact.first_name,
            Contact.last_name,
            Contact.email,
            Company.name,
        )
        .join(Newsletter, Newsletter.id == R.newsletter_id)
        .join(Contact, Contact.id == R.contact_id)
        .outerjoin(Company, Company.id == Contact.company_id)
        .where(
            Newsletter.event_id == event.id,
            Newsletter.kind == "event_invitation",
            R.state.in_(("pending", "sent")),
        )
        .group_by(
            R.contact_id,
            Contact.first_name,
            Contact.last_name,
            Contact.email,
            Company.name,
        )
    ).all()
    registered = set(
        db.session.scalars(
            select(Registration.contact_id).where(
                Registration.event_id == event.id,
                Registration.contact_id.is_not(None),
                Registration.status != "cancelled",
            )
        )
    )
    declined = set(
        db.session.scalars(
            select(InvitationAnswer.contact_id).where(InvitationAnswer.event_id == event.id)
        )
    )
    result = []
    for contact_id, state, first, last, email, company in rows:
        if contact_id in registered:
            status = "registered"
        elif contact_id in declined:
            status = "declined"
        elif state == "pending":
            status = "invited"
        else:
            status = "no_answer"
        name = " ".join(p for p in (first, last) if p)
        result.append(Invitee(contact_id, name, email or "", company or "", status))
    result.sort(key=lambda i: (i.name.casefold(), i.contact_id))
    return result


def status_counts(people: list[Invitee]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for person in people:
        counts[person.status] += 1
    return counts


def register_hooks() -> None:
    """Join the newsletter's email (buttons and personal links), once."""
    if not any(isinstance(extra, EventMailExtras) for extra in compose.MAIL_EXTRAS):
        compose.MAIL_EXTRAS.append(EventMailExtras())
