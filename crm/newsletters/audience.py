"""Who may be mailed, and why: the one place that decides.

`eligible_contacts` is the rule, used both when the ledger is created and again for
each batch just before it is sent (consent may be withdrawn, an objection made, an
address suppressed or a person erased while a large mailing is going out). Each
recipient has a *basis* (`recipients_with_basis`, stored on their ledger row):

- **consent**: active consent for at least one of the mailing's topics (the consent
  ledger's current state; `crm.subscriptions.ledger.contacts_with_active_consent`).
  A newsletter (marketing) reaches nobody on any other basis.
- **membership of network N**: network mail (and invitations) of network N reach the
  contacts in N of member companies without newsletter consent, unless the person has
  objected to N's mail (an `objected` event in the consent ledger for N's topic). An
  objection to any of the mailing's networks also stops it reaching them on consent.
- always: an email address, not archived, not erased, not on the suppression list;
- a mailing with picked contacts (a bulk "invite to an event" from a list) reaches only
  those, and only those of them the rules above allow;
- then the contact filters staff chose: networks (for a newsletter; for network mail
  its networks are the basis instead), municipalities (of the contact's company),
  member / non-member companies, contact roles. Within one filter any value matches;
  different filters must all match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    Integer,
    Select,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
)

from crm.bulk import id_in
from crm.extensions import db
from crm.mail.models import Suppression
from crm.members.models import ROLE_COLUMNS, Company, Contact, contact_network
from crm.subscriptions.ledger import active_consent_contact_ids, active_consent_exists
from crm.subscriptions.models import GENERAL_TOPIC, ConsentState, Subscriber, Topic

BASIS_CONSENT = "consent"
BASIS_MEMBERSHIP = "membership"
# Kinds of mail whose networks are a basis (membership), not just a filter.
MEMBERSHIP_KINDS = ("network_mail", "event_invitation", "event_invitation_reminder")
# Mail to an event's registrants (about the event they registered for), by the
# registration statuses it goes to; their basis is the registration.
BASIS_REGISTRATION = "registration"
REGISTRANT_KINDS = {
    "event_registrant_reminder": ("confirmed", "offered"),
    "event_message": ("confirmed", "offered", "waitlisted"),
}


@dataclass(frozen=True)
class Audience:
    topics: tuple[str, ...] = (GENERAL_TOPIC,)
    network_ids: tuple[int, ...] = ()
    municipalities: tuple[str, ...] = ()
    membership: str = ""  # "" | "member" | "non_member"
    roles: tuple[str, ...] = ()
    kind: str = "newsletter"
    # Event mail: its event, the newsletter itself (an invitation leaves out people
    # another invitation to the event reached) and, for a reminder, its invitation.
    event_id: int | None = None
    newsletter_id: int | None = None
    parent_id: int | None = None

    @classmethod
    def of(cls, newsletter) -> Audience:
        return cls(
            topics=tuple(newsletter.topics or ()),
            network_ids=tuple(int(n) for n in newsletter.network_ids or ()),
            municipalities=tuple(str(m) for m in newsletter.municipalities or ()),
            membership=newsletter.membership or "",
            roles=tuple(newsletter.roles or ()),
            kind=getattr(newsletter, "kind", None) or "newsletter",
            event_id=getattr(newsletter, "event_id", None),
            newsletter_id=getattr(newsletter, "id", None),
            parent_id=getattr(newsletter, "parent_id", None),
        )

    @property
    def basis_networks(self) -> tuple[int, ...]:
        """The networks whose membership is a basis for this mail (none for newsletters)."""
        return self.network_ids if self.kind in MEMBERSHIP_KINDS else ()


def _not_suppressed():
    return ~exists().where(Suppression.email == func.lower(Contact.email))


def _not_erased():
    # correlate_except: a query that already joins Subscriber (a batch's rows) must not
    # have this subquery taken over by its join.
    erased = (
        select(Subscriber.contact_id)
        .where(Subscriber.contact_id == Contact.id, Subscriber.erased_at.is_not(None))
        .correlate_except(Subscriber)
    )
    return ~erased.exists()


def _has_consent(topics: Iterable[str], correlated: bool):
    slugs = [t for t in topics if t]
    if not slugs:
        return false()  # no topic, no consent: nobody
    if correlated:
        # A batch: key lookups per contact (correlated EXISTS) — nested IN subqueries
        # can make PostgreSQL re-read every subscriber for every row.
        return active_consent_exists(Contact.id, slugs)
    # The whole audience: one set of the consent ledger's rows, joined by hash (not
    # `contacts_with_active_consent`, which reads `contact` once more for conditions
    # the rule checks anyway).
    return Contact.id.in_(active_consent_contact_ids(slugs))


def _objected(contact_id, network_id):
    """The contact objected to the network's mail: its topic's state is `objected`.

    Correlated on both (columns of enclosing queries, however deep, or values): key
    lookups on consent_state's primary key.
    """
    return (
        select(ConsentState.contact_id)
        .join(Topic, Topic.id == ConsentState.topic_id)
        .where(
            ConsentState.contact_id == contact_id,
            ConsentState.status == "objected",
            Topic.network_id == network_id,
        )
        .correlate_except(ConsentState, Topic)
        .exists()
    )


def _objected_to_any(networks: tuple[int, ...]):
    return (
        select(ConsentState.contact_id)
        .join(Topic, Topic.id == ConsentState.topic_id)
        .where(
            ConsentState.contact_id == Contact.id,
            ConsentState.status == "objected",
            Topic.network_id.in_(networks),
        )
        .correlate_except(ConsentState, Topic)
        .exists()
    )


def _of_member_company():
    return Contact.company_id.in_(select(Company.id).where(Company.membership_status == "member"))


def _membership_basis(networks: tuple[int, ...]):
    """In one of the networks, at a member company, without objecting to that network."""
    cn = contact_network
    return and_(
        _of_member_company(),
        select(cn.c.contact_id)
        .where(
            cn.c.contact_id == Contact.id,
            cn.c.network_id.in_(networks),
            ~_objected(Contact.id, cn.c.network_id),
        )
        .correlate_except(cn)
        .exists(),
    )


def _basis(audience: Audience, correlated: bool):
    """Some basis to mail the contact: consent, or (network mail) membership."""
    consent = _has_consent(audience.topics, correlated)
    networks = audience.basis_networks
    if not networks:
        return consent
    return or_(_membership_basis(networks), and_(consent, ~_objected_to_any(networks)))


def _filters(audience: Audience) -> list:
    conditions = []
    if audience.network_ids and not audience.basis_networks:
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
    if among is not None and audience.basis_networks:
        # Network mail: the batch's ids as one array. With the membership test beside
        # the consent test (an OR) PostgreSQL cannot estimate the contact rows and, given
        # the batch as a subquery, re-read it for every contact (2 s for 1,000 rows).
        among = db.session.scalars(among).all() if isinstance(among, Select) else list(among)
        return _eligible(audience, among).where(id_in(Contact.id, among))
    if among is not None and not isinstance(among, Select):
        among = list(among)
    statement = _eligible(audience, among)
    if among is not None:
        statement = statement.where(Contact.id.in_(among))
    return statement


def _eligible(audience: Audience, among) -> Select:
    return select(Contact.id).where(*_rule(audience, correlated=among is not None))


def may_receive(audience: Audience):
    """The rule as a condition on `Contact` in an enclosing query (a batch's ledger rows
    joined to their contacts): each row answered by key lookups, in the query that
    reads the batch, instead of a second query over the same contacts."""
    return and_(*_rule(audience, correlated=True))


def _rule(audience: Audience, correlated: bool) -> list:
    """The conditions a contact (`Contact`) must meet; `correlated`: answered per contact
    by key lookups (a known set of contacts) rather than by reading every subscriber."""
    conditions = [
        Contact.email.is_not(None),
        Contact.email != "",
        Contact.archived_at.is_(None),
        _not_suppressed(),
        _not_erased(),
    ]
    if audience.kind in REGISTRANT_KINDS:
        return [*conditions, _registered(audience.event_id, REGISTRANT_KINDS[audience.kind])]
    conditions += [
        _basis(audience, correlated),
        *_filters(audience),
        _picked(audience.newsletter_id),
    ]
    if audience.kind == "event_invitation":
        conditions += [~_answered(audience.event_id), ~_invited_before(audience.event_id, audience)]
    elif audience.kind == "event_invitation_reminder":
        conditions += [~_answered(audience.event_id), _sent(audience.parent_id)]
    return conditions


def _picked(newsletter_id: int | None):
    """A mailing with picked contacts (a bulk invitation from a list) reaches only them."""
    if newsletter_id is None:
        return true()
    from crm.newsletters.models import newsletter_pick as pick

    has_picks = exists().where(pick.c.newsletter_id == newsletter_id)
    picked = (
        exists()
        .where(pick.c.newsletter_id == newsletter_id, pick.c.contact_id == Contact.id)
        .correlate(Contact)
    )
    return or_(~has_picks, picked)


# -- event mail --------------------------------------------------------------------------


def _registered(event_id: int | None, statuses: tuple[str, ...]):
    from crm.events.models import Registration

    return (
        select(Registration.id)
        .where(
            Registration.event_id == event_id,
            Registration.contact_id == Contact.id,
            Registration.status.in_(statuses),
        )
        .correlate_except(Registration)
        .exists()
    )


def _answered(event_id: int | None):
    """Registered (in any state, cancelled too) or said "can't come"."""
    from crm.events.models import InvitationAnswer, Registration

    registered = (
        select(Registration.id)
        .where(Registration.event_id == event_id, Registration.contact_id == Contact.id)
        .correlate_except(Registration)
        .exists()
    )
    declined = (
        select(InvitationAnswer.id)
        .where(InvitationAnswer.event_id == event_id, InvitationAnswer.contact_id == Contact.id)
        .correlate_except(InvitationAnswer)
        .exists()
    )
    return or_(registered, declined)


def _invited_before(event_id: int | None, audience: Audience):
    """Reached (or being reached) by another invitation to the event: one each."""
    from crm.newsletters.models import Newsletter, NewsletterRecipient

    R = NewsletterRecipient
    return (
        select(R.id)
        .join(Newsletter, Newsletter.id == R.newsletter_id)
        .where(
            Newsletter.event_id == event_id,
            Newsletter.kind == "event_invitation",
            Newsletter.id != (audience.newsletter_id or 0),
            R.contact_id == Contact.id,
            R.state.in_(("pending", "sent")),
        )
        .correlate_except(R, Newsletter)
        .exists()
    )


def _sent(newsletter_id: int | None):
    """Got that newsletter (a reminder goes to those the invitation reached)."""
    from crm.newsletters.models import NewsletterRecipient

    R = NewsletterRecipient
    return (
        select(R.id)
        .where(R.newsletter_id == newsletter_id, R.contact_id == Contact.id, R.state == "sent")
        .correlate_except(R)
        .exists()
    )


def recipient_contacts(audience: Audience) -> Select:
    """Eligible contacts, one per email address (the lowest contact id wins).

    Two contact records sharing an address are one mailbox: it gets one copy.
    """
    # One read of `contact`: the rule and the grouping in the same query (joining the
    # eligible ids back to `contact` for their address read it twice more).
    return (
        select(func.min(Contact.id).label("contact_id"))
        .where(*_rule(audience, correlated=False))
        .group_by(func.lower(Contact.email))
    )


def recipients_with_basis(audience: Audience) -> Select:
    """`recipient_contacts` with why each may be mailed: (contact_id, basis, network_id).

    Membership of the lowest-numbered of the mail's networks that holds wins over
    consent, so the email carries the objection link for that network's mail. A
    newsletter's recipients all have consent: no per-row work for it.
    """
    chosen = recipient_contacts(audience).subquery()
    networks = audience.basis_networks
    if not networks:
        basis = BASIS_REGISTRATION if audience.kind in REGISTRANT_KINDS else BASIS_CONSENT
        return select(
            chosen.c.contact_id,
            literal(basis).label("basis"),
            null().cast(Integer).label("network_id"),
        )
    cn = contact_network
    member = (
        select(Contact.id)
        .where(Contact.id == chosen.c.contact_id, _of_member_company())
        .correlate_except(Contact, Company)
        .exists()
    )
    network = (
        select(func.min(cn.c.network_id))
        .where(
            cn.c.contact_id == chosen.c.contact_id,
            cn.c.network_id.in_(networks),
            ~_objected(chosen.c.contact_id, cn.c.network_id),
            member,
        )
        .correlate_except(cn)
        .scalar_subquery()
    )
    with_network = select(chosen.c.contact_id, network.label("network_id")).subquery()
    return select(
        with_network.c.contact_id,
        case((with_network.c.network_id.is_(None), BASIS_CONSENT), else_=BASIS_MEMBERSHIP).label(
            "basis"
        ),
        with_network.c.network_id,
    )


def count(audience: Audience) -> int:
    """How many would receive it now."""
    return db.session.scalar(
        select(func.count()).select_from(recipient_contacts(audience).subquery())
    )


def count_by_basis(audience: Audience) -> dict[int | str | None, int]:
    """How many would receive it now, per basis: None = consent, a network id =
    membership of it, "registration" = registered for the event."""
    if not audience.basis_networks:
        total = count(audience)
        key = BASIS_REGISTRATION if audience.kind in REGISTRANT_KINDS else None
        return {key: total} if total else {}
    rows = recipients_with_basis(audience).subquery()
    return {
        network_id: int(number)
        for network_id, number in db.session.execute(
            select(rows.c.network_id, func.count()).group_by(rows.c.network_id)
        )
    }


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
    if audience.kind in REGISTRANT_KINDS:
        mark("filter", true())  # no longer registered
    if audience.basis_networks:
        mark("objected", _objected_to_any(audience.basis_networks))
    mark("no_consent", ~_basis(audience, correlated=True))
    for contact_id in ids:
        reasons.setdefault(contact_id, "filter")
    return reasons
