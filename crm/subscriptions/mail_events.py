"""Provider events (the SendGrid webhook) that end consent: bounce, spam report, unsubscribe."""

import contextlib

from crm.extensions import db
from crm.members.models import Contact
from crm.members.normalize import normalize_email
from crm.subscriptions.ledger import end_consent
from crm.subscriptions.models import (
    ConsentEvent,
)
from crm.subscriptions.subscribers import (
    find_contact_by_email,
    find_contacts_by_email,
    follow_merges,
    header_safe,
)

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
    if _withdrawal(event) is None:
        return []
    return _end_consent(event, message, find_contact_by_email)


def handle_mail_events(items: list[tuple[dict, object]]) -> None:
    """`handle_mail_event` for a webhook delivery's events at once: the addresses'
    owners are found in one query, then each consent is ended as one by one."""
    relevant = [(event, message) for event, message in items if _withdrawal(event)]
    if not relevant:
        return
    addresses = set()
    for event, message in relevant:
        if message is None or not getattr(message, "contact_id", None):
            with contextlib.suppress(ValueError):
                addresses.add(normalize_email(str(event.get("email") or "")))
    owners = find_contacts_by_email(addresses)
    for event, message in relevant:
        _end_consent(event, message, owners.get)


def _withdrawal(event: dict) -> str | None:
    """The consent event kind a provider event means, if any."""
    kind = MAIL_EVENT_KINDS.get(str(event.get("event", "")))
    if kind is None or (event.get("event") == "bounce" and event.get("type") == "blocked"):
        return None  # a "blocked" bounce is temporary: the address still exists
    return kind


def _end_consent(event: dict, message, owner_of) -> list[ConsentEvent]:
    contact = None
    if message is not None and getattr(message, "contact_id", None):
        contact = follow_merges(db.session.get(Contact, message.contact_id))
    if contact is None:
        try:
            contact = owner_of(normalize_email(str(event.get("email") or "")))
        except ValueError:
            return []
    if contact is None:
        return []
    reason = header_safe(str(event.get("reason") or event.get("type") or ""), 300)
    note = f"{event.get('event')}: {reason}".strip(": ")
    return end_consent(contact, None, _withdrawal(event), "webhook", note=note)
