"""Who receives a newsletter: the one place that decides.

`eligible_contacts` is the rule, used both when the ledger is created and again for
each batch just before it is sent (consent may be withdrawn, an address suppressed or
a person erased while a large newsletter is going out):

- active consent for at least one of the newsletter's topics (the consent ledger's
  current state; `crm.subscriptions.ledger.contacts_with_active_consent`) — always;
- an email address, not archived, not erased, not on the suppression list — always;
- then the contact filters staff chose: networks, municipalities (of the contact's
  company), member / non-member companies, contact roles. Within one filter any value
  matches; different filters must all match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, exists, false, func, or_, select

from crm.extensions import db
from crm.mail.models import Suppression
from crm.members.models import ROLE_COLUMNS, Company, Contact, contact_network
from crm.subscriptions.ledger import active_consent_exists, contacts_with_active_consent
from crm.subscriptions.models import GENERAL_TOPIC, Subscriber


@dataclass(frozen=True)
class Audience:
    topics: tuple[str, ...] = (GENERAL_TOPIC,)
    network_ids: tuple[int, ...] = ()
    municipalities: tuple[str, ...] = ()
    membership: str = ""  # "" | "member" | "non_member"
    roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, newsletter) -> Audience:
        return cls(
            topics=tuple(newsletter.topics or ()),
            network_ids=tuple(int(n) for n in newsletter.network_ids or ()),
            municipalities=tuple(str(m) for m in newsletter.municipalities or ()),
            membership=newsletter.membership or "",
            roles=tuple(newsletter.roles or ()),
        )


def _not_suppressed():
    return ~exists().where(Suppression.email == func.lower(Contact.email))


def _not_erased():
    return ~exists().where(Subscriber.contact_id == Contact.id, Subscriber.erased_at.is_not(None))


def _has_consent(topics: Iterable[str], among=None):
    slugs = [t for t in topics if t]
    if not slugs:
        return false()  # no topic, no consent: nobody
    if among is not None:
        # A batch: key lookups per contact (correlated EXISTS) — nested IN subqueries
        # can make PostgreSQL re-read every subscriber for every row.
        return active_consent_exists(Contact.id, slugs)
    return or_(*[Contact.id.in_(contacts_with_active_consent(slug)) for slug in slugs])


def _filters(audience: Audience) -> list:
    conditions = []
    if audience.network_ids:
        conditions.append(
            exists().where(
                contact_network.c.contact_id == Contact.id,
                contact_network.c.network_id.in_(audience.network_ids),
            )
        )
    if audience.municipalities:
        conditions.append(
            Contact.company_id.in_(
                select(Company.id).where(Company.municipality_number.in_(audience.municipalities))
            )
        )
    if audience.membership == "member":
        conditions.append(
            Contact.company_id.in_(select(Company.id).where(Company.membership_status == "member"))
        )
    elif audience.membership == "non_member":
        conditions.append(
            or_(
                Contact.company_id.is_(None),
                Contact.company_id.in_(
                    select(Company.id).where(Company.membership_status != "member")
                ),
            )
        )
    roles = [ROLE_COLUMNS[r] for r in audience.roles if r in ROLE_COLUMNS]
    if roles:
        conditions.append(or_(*[getattr(Contact, column).is_(True) for column in roles]))
    return conditions


def eligible_contacts(audience: Audience, among: Select | Iterable[int] | None = None) -> Select:
    """A select of the ids of contacts who may receive a newsletter to `audience`.

    `among` restricts it to some contacts: a select of contact ids (a batch's ledger
    rows — the fast way at 100,000 recipients) or a list of ids.
    """
    if among is not None and not isinstance(among, Select):
        among = list(among)
    statement = select(Contact.id).where(
        Contact.email.is_not(None),
        Contact.email != "",
        Contact.archived_at.is_(None),
        _has_consent(audience.topics, among),
        _not_suppressed(),
        _not_erased(),
        *_filters(audience),
    )
    if among is not None:
        statement = statement.where(Contact.id.in_(among))
    return statement


def recipient_contacts(audience: Audience) -> Select:
    """Eligible contacts, one per email address (the lowest contact id wins).

    Two contact records sharing an address are one mailbox: it gets one copy.
    """
    eligible = eligible_contacts(audience).subquery()
    return (
        select(func.min(Contact.id).label("contact_id"))
        .join(eligible, eligible.c.id == Contact.id)
        .group_by(func.lower(Contact.email))
    )


def count(audience: Audience) -> int:
    """How many would receive it now."""
    return db.session.scalar(
        select(func.count()).select_from(recipient_contacts(audience).subquery())
    )


def exclusion_reasons(audience: Audience, contact_ids: Iterable[int]) -> dict[int, str]:
    """Why each of these (ineligible) contacts is left out: for the ledger's skip_reason."""
    ids = list(contact_ids)
    if not ids:
        return {}
    reasons: dict[int, str] = {}

    def mark(reason: str, condition) -> None:
        remaining = [i for i in ids if i not in reasons]
        if not remaining:
            return
        found = db.session.scalars(
            select(Contact.id).where(Contact.id.in_(remaining), condition)
        ).all()
        for contact_id in found:
            reasons[contact_id] = reason

    mark("erased", ~_not_erased())
    mark(
        "no_email",
        or_(Contact.email.is_(None), Contact.email == "", Contact.archived_at.is_not(None)),
    )
    mark("suppressed", ~_not_suppressed())
    mark("no_consent", ~_has_consent(audience.topics, among=ids))
    for contact_id in ids:
        reasons.setdefault(contact_id, "filter")
    return reasons
