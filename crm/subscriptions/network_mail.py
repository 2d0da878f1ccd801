"""Objections to a network's mail, kept in the consent ledger.

Network mail (invitations, meeting notes) reaches contacts of member companies in the
network on the basis of that membership, without newsletter consent (the rule is in
`crm.newsletters.audience`). Each such email carries a one-click link (RFC 8058) that
records an `objected` event against the network's topic: from then on the person gets
none of that network's mail, until they choose the network's topic again themselves.
"""

from collections.abc import Iterable

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from crm.extensions import db
from crm.members.models import Contact, Network
from crm.subscriptions.ledger import record_event
from crm.subscriptions.models import ConsentEvent, ConsentState, Topic
from crm.subscriptions.topics import _insert_reference_row

# The footer of network mail says why it came and what its link does. Its version is
# recorded with each objection made through that link (the evidence of what the person
# was shown); bump it, and add the new text, whenever the wording changes.
NETWORK_NOTICE_VERSION = 1
NETWORK_NOTICE = {
    1: _l(
        "You receive this email as a contact of a member company in the network "
        "%(networks)s, or as a subscriber. The unsubscribe link stops this network's mail."
    ),
}


def network_notice(network_names: Iterable[str], version: int = NETWORK_NOTICE_VERSION) -> str:
    """The footer notice of network mail, in the current locale."""
    return str(NETWORK_NOTICE[version]) % {"networks": ", ".join(network_names)}


def network_topic(network: Network) -> Topic:
    """The network's topic (created on first use): objections are recorded against it."""
    topic = db.session.scalar(select(Topic).where(Topic.network_id == network.id))
    if topic is None:
        slug = network.slug
        if db.session.scalar(select(Topic.id).where(Topic.slug == slug)) is not None:
            slug = f"network-{network.id}"
        _insert_reference_row(
            Topic,
            slug=slug,
            name=network.name,
            name_en="",
            network_id=network.id,
            active=network.active,
        )
        topic = db.session.scalar(select(Topic).where(Topic.network_id == network.id))
    return topic


def object_to_network_mail(
    contact: Contact,
    network: Network,
    *,
    source: str,
    ip: str | None = None,
    user=None,
    note: str = "",
    notice_version: int = NETWORK_NOTICE_VERSION,
) -> ConsentEvent | None:
    """Record that the person objects to `network`'s mail; it is respected from now on
    (and ends any consent for the network's topic). None if the objection stands already.

    The event is the evidence: time, source, IP or staff user, and the version of the
    network-mail notice the person was shown.
    """
    topic = network_topic(network)
    state = db.session.get(ConsentState, (contact.id, topic.id))
    if state is not None and state.status == "objected":
        return None
    detail = f"network mail notice v{notice_version}"
    return record_event(
        contact,
        topic,
        "objected",
        source,
        ip=ip,
        user=user,
        note=f"{note} ({detail})" if note else detail,
    )


def objected_network_ids(contact: Contact) -> set[int]:
    """The networks whose mail the contact has objected to (and not re-subscribed since)."""
    return set(
        db.session.scalars(
            select(Topic.network_id)
            .join(ConsentState, ConsentState.topic_id == Topic.id)
            .where(
                ConsentState.contact_id == contact.id,
                ConsentState.status == "objected",
                Topic.network_id.is_not(None),
            )
        )
    )
