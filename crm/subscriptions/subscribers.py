"""Who a subscriber is: the contact behind an address, merges followed, the profile."""

import re

from sqlalchemy import select

from crm.extensions import db
from crm.members.models import Contact
from crm.members.normalize import is_role_address
from crm.subscriptions.models import (
    Subscriber,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_safe(text: str | None, limit: int = 200) -> str:
    """Text that can go into a header: control characters (CR, LF, …) become spaces."""
    return " ".join(_CONTROL.sub(" ", text or "").split())[:limit]


def split_name(name: str) -> tuple[str, str]:
    """'Kari Anne Nordmann' -> ('Kari Anne', 'Nordmann'); a single word is a first name."""
    words = header_safe(name, 200).split()
    if len(words) < 2:
        return (words[0][:100] if words else ""), ""
    return " ".join(words[:-1])[:100], words[-1][:100]


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


def is_company_address(contact: Contact) -> bool:
    """post@, firmapost@, info@…: a company mailbox, not a natural person."""
    return bool(contact.email) and is_role_address(contact.email)
