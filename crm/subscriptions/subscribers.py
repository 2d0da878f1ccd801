"""Who a subscriber is: the contact behind an address, merges followed, the profile."""

import re
from collections.abc import Iterable

from sqlalchemy import select

from crm.bulk import chunks, text_in
from crm.extensions import db
from crm.mail.backends import is_tidy
from crm.members.models import Company, Contact
from crm.members.normalize import is_role_address
from crm.members.search import matching_ids
from crm.subscriptions.models import (
    Subscriber,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_safe(text: str | None, limit: int = 200) -> str:
    """Text that can go into a header: control characters (CR, LF, …) become spaces."""
    if text and is_tidy(text, limit):
        return text  # no control character is printable: nothing would change
    return " ".join(_CONTROL.sub(" ", text or "").split())[:limit]


def split_name(name: str) -> tuple[str, str]:
    """'Kari Anne Nordmann' -> ('Kari Anne', 'Nordmann'); a single word is a first name."""
    words = header_safe(name, 200).split()
    if len(words) < 2:
        return (words[0][:100] if words else ""), ""
    return " ".join(words[:-1])[:100], words[-1][:100]


# Contacts with one address looked at to find its owner (more are surely duplicates).
_CANDIDATES = 20


def find_contact_by_email(email: str) -> Contact | None:
    """The contact who owns an address: a current one first, following merges."""
    candidates = db.session.scalars(
        select(Contact).where(Contact.email == email).order_by(Contact.id).limit(_CANDIDATES)
    ).all()
    return _owner(candidates)


def find_contacts_by_email(emails: Iterable[str]) -> dict[str, Contact]:
    """`find_contact_by_email` for many addresses, in a query per thousand: the owners of
    those that have one, by address (the provider's webhook brings hundreds of bounces
    at once)."""
    by_email: dict[str, list[Contact]] = {}
    for chunk in chunks(sorted(set(emails))):
        for contact in db.session.scalars(
            select(Contact).where(text_in(Contact.email, chunk)).order_by(Contact.id)
        ):
            by_email.setdefault(contact.email, []).append(contact)
    return {email: _owner(candidates[:_CANDIDATES]) for email, candidates in by_email.items()}


def _owner(candidates: list[Contact]) -> Contact | None:
    if not candidates:
        return None
    current = [c for c in candidates if c.archived_at is None]
    return follow_merges((current or candidates)[0])


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


def stated_companies(contact_ids) -> dict[int, str]:
    """The company name subscribers typed on the public form, for a page of a list (one
    query): it tells staff where a subscriber without a company record works."""
    ids = list(contact_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        select(Subscriber.contact_id, Subscriber.company_name).where(
            Subscriber.contact_id.in_(ids), Subscriber.company_name != ""
        )
    )
    return dict(rows.all())


def is_company_address(contact: Contact) -> bool:
    """post@, firmapost@, info@…: a company mailbox, not a natural person."""
    return bool(contact.email) and is_role_address(contact.email)


# Legal-form words people add or leave out when they type a company's name.
_LEGAL_FORMS = {"as", "asa", "ans", "da", "sa", "ba", "enk", "nuf", "ks", "iks", "sf"}


def company_key(name: str) -> str:
    """A company name as compared for a match: case, punctuation and legal form ignored."""
    words = re.findall(r"\w+", (name or "").casefold())
    return " ".join(w for w in words if w not in _LEGAL_FORMS)


def company_matching(typed: str) -> Company | None:
    """The one company record the company typed at signup names, if exactly one does.

    By organisation number when nine digits were typed, else by name with case,
    punctuation and legal form ("AS", "ASA" …) ignored. Archived companies never match.
    """
    typed = (typed or "").strip()[:200]
    digits = re.sub(r"[\s.]", "", typed)
    if re.fullmatch(r"[0-9]{9}", digits):
        return db.session.scalar(
            select(Company).where(Company.orgnr == digits, Company.archived_at.is_(None))
        )
    key = company_key(typed)
    ids = matching_ids("company", key) if key else None
    if ids is None:
        return None
    candidates = db.session.scalars(
        select(Company).where(Company.id.in_(ids), Company.archived_at.is_(None)).limit(50)
    )
    exact = [c for c in candidates if company_key(c.name) == key]
    return exact[0] if len(exact) == 1 else None


def suggested_company(contact: Contact) -> Company | None:
    """The company record to suggest to staff for a subscriber without one: the match of
    the company they typed at signup."""
    if contact.company_id is not None:
        return None
    profile = subscriber_profile(contact)
    if profile is None or not profile.company_name:
        return None
    return company_matching(profile.company_name)
