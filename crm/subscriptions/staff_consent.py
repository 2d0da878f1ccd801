"""Consent recorded or withdrawn by staff on a person's word (in person, by phone …)."""

from collections.abc import Iterable

from flask_babel import gettext as _

from crm.members.models import Contact
from crm.subscriptions.ledger import (
    ConsentError,
    allow_mail_again,
    consent_states,
    end_consent,
    record_event,
)
from crm.subscriptions.models import (
    ConsentEvent,
    Topic,
)
from crm.subscriptions.topics import current_wording

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
    return end_consent(contact, topics, "withdrawn", "staff", user=user, note=note)
