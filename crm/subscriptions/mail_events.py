"""Provider events (the SendGrid webhook) that end consent: bounce, spam report, unsubscribe."""

import contextlib

from sqlalchemy import select

from crm.bulk import chunks, id_in
from crm.extensions import db
from crm.members.models import Contact
from crm.members.normalize import normalize_email
from crm.subscriptions.ledger import end_consent, end_consents
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
    return end_consent(contact, None, _withdrawal(event), "webhook", note=_note(event))


def handle_mail_events(items: list[tuple[dict, object]]) -> list[ConsentEvent]:
    """`handle_mail_event` for a webhook delivery's events at once, in a few statements
    whatever their number: the messages' contacts and the addresses' owners are found
    in a query each, then every consent they end is ended together (`end_consents`),
    with the same ledger events as one by one."""
    relevant = [(event, message) for event, message in items if _withdrawal(event)]
    if not relevant:
        return []
    contact_ids = {
        message.contact_id
        for _event, message in relevant
        if message is not None and getattr(message, "contact_id", None)
    }
    contacts: dict[int, Contact] = {}
    for ids in chunks(sorted(contact_ids)):
        contacts.update(
            (c.id, c) for c in db.session.scalars(select(Contact).where(id_in(Contact.id, ids)))
        )
    addresses = set()
    for event, message in relevant:
        if contacts.get(getattr(message, "contact_id", None)) is None:
            with contextlib.suppress(ValueError):
                addresses.add(normalize_email(str(event.get("email") or "")))
    owners = find_contacts_by_email(addresses)
    ends = []
    for event, message in relevant:
        contact = follow_merges(contacts.get(getattr(message, "contact_id", None)))
        if contact is None:
            with contextlib.suppress(ValueError):
                contact = owners.get(normalize_email(str(event.get("email") or "")))
        if contact is not None:
            ends.append((contact.id, _withdrawal(event), _note(event)))
    return end_consents(ends, "webhook")


def _withdrawal(event: dict) -> str | None:
    """The consent event kind a provider event means, if any."""
    kind = MAIL_EVENT_KINDS.get(str(event.get("event", "")))
    if kind is None or (event.get("event") == "bounce" and event.get("type") == "blocked"):
        return None  # a "blocked" bounce is temporary: the address still exists
    return kind


def _note(event: dict) -> str:
    """What the ledger event says of the provider's: its kind and reason."""
    reason = header_safe(str(event.get("reason") or event.get("type") or ""), 300)
    return f"{event.get('event')}: {reason}".strip(": ")
