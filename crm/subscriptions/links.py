"""The links in every email: one-click unsubscribe and the preferences page."""

from collections.abc import Iterable
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from crm.bulk import id_in
from crm.extensions import db
from crm.members.models import Contact, Network
from crm.subscriptions.ledger import (
    LIVE_STATUSES,
    allow_mail_again,
    consent_states,
    record_event,
    withdraw_all,
)
from crm.subscriptions.models import (
    ConsentEvent,
    ConsentWording,
    Subscriber,
    Topic,
)
from crm.subscriptions.subscribers import follow_merges, subscriber_profile
from crm.subscriptions.tokens import (
    LinkClaim,
    TokenInvalid,
    make_link_token,
    make_link_tokens,
    read_link_token,
)
from crm.subscriptions.topics import active_topics


def public_url(path: str) -> str:
    return current_app.config["PUBLIC_BASE_URL"] + path


# A contact without a subscriber record has never had a token revoked.
DEFAULT_TOKEN_VERSION = 1


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
    return make_link_token(
        contact.id, _token_versions([contact.id]).get(contact.id, DEFAULT_TOKEN_VERSION)
    )


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


def unsubscribe_urls(
    contact_ids: Iterable[int],
    networks: dict[int, int] | None = None,
    versions: dict[int, int] | None = None,
) -> dict[int, str]:
    """Unsubscribe URLs for many contacts with one query per 1,000 (newsletter sends).

    `networks` maps a contact id to the network whose mail reached them (network mail):
    their link then objects to that network's mail instead (`crm.subscriptions.network_mail`).
    `versions`: their token versions, if the caller read them already (a newsletter
    batch reads them with its rows); else they are read here.
    """
    ids = list(contact_ids)
    if versions is None:
        versions = _token_versions(ids)
    if networks:
        claims = (
            (cid, versions.get(cid, DEFAULT_TOKEN_VERSION), networks[cid])
            if cid in networks
            else (cid, versions.get(cid, DEFAULT_TOKEN_VERSION))
            for cid in ids
        )
    else:
        claims = ((cid, versions.get(cid, DEFAULT_TOKEN_VERSION)) for cid in ids)
    tokens = make_link_tokens(claims)
    base = public_url("/unsubscribe/")
    return {cid: base + token for cid, token in zip(ids, tokens, strict=True)}


def network_unsubscribe_headers(contact: Contact, network_id: int) -> dict[str, str]:
    """RFC 8058 headers for one email of network mail: one click objects to its mail."""
    url = unsubscribe_urls([contact.id], {contact.id: network_id})[contact.id]
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


@dataclass(frozen=True)
class LinkHolder:
    """Whom an unsubscribe/preferences link speaks for, and (network mail) which
    network's mail it stops."""

    contact: Contact
    network: Network | None = None


def link_holder(token: str) -> LinkHolder | None:
    """The contact (and network) a link token speaks for, or None if it is void.

    Void: forged, revoked by a token-version bump (erase, rotation), or naming a
    network that no longer exists. A token of a contact merged into another speaks for
    the surviving contact.
    """
    try:
        claim: LinkClaim = read_link_token(token)
    except TokenInvalid:
        return None
    contact = db.session.get(Contact, claim.contact_id)
    if contact is None:
        return None
    if _token_versions([contact.id]).get(contact.id, DEFAULT_TOKEN_VERSION) != claim.version:
        return None
    network = None
    if claim.network_id is not None:
        network = db.session.get(Network, claim.network_id)
        if network is None:
            return None
    return LinkHolder(follow_merges(contact), network)


def contact_for_link(token: str) -> Contact | None:
    """The contact an unsubscribe/preferences token speaks for, or None if it is void."""
    holder = link_holder(token)
    return holder.contact if holder is not None else None


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
