"""Newsletter topics (general news plus one per network) and the consent wording versions."""

from flask_babel import gettext as _
from sqlalchemy import select

from crm import cache
from crm.extensions import db
from crm.members.models import Network
from crm.subscriptions.ledger import ConsentError
from crm.subscriptions.models import (
    GENERAL_TOPIC,
    ConsentWording,
    Topic,
    in_display_order,
)
from crm.timeutil import utcnow

# The first checkbox text. Later versions are added with `add_wording`, never edited.
DEFAULT_WORDING = {
    "nb": (
        "Ja, jeg vil få nyhetsbrev og invitasjoner fra klyngen på e-post om temaene jeg "
        "har valgt. Jeg kan melde meg av når som helst med lenken nederst i hver e-post."
    ),
    "en": (
        "Yes, I want to receive newsletters and invitations from the cluster by email on "
        "the topics I have chosen. I can unsubscribe at any time with the link at the "
        "bottom of every email."
    ),
}


GENERAL_TOPIC_NAMES = ("Generelt", "General news")


def _insert_reference_row(model, **values) -> None:
    """INSERT … ON CONFLICT DO NOTHING for topic and wording rows created on first use.

    Two first visitors at once must not fail on the unique keys, nor break the
    caller's transaction (so no IntegrityError, no savepoint).
    """
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    db.session.execute(insert(model).values(**values).on_conflict_do_nothing())
    db.session.info[REFERENCE_ROWS_WRITTEN] = True


# Set in the session's info when a topic or wording row was inserted outside the ORM.
REFERENCE_ROWS_WRITTEN = "crm_reference_rows_written"


def sync_topics() -> list[Topic]:
    """The active topics, general newsletter first, then one per active network.

    Topics follow the networks: a new network gets a topic, a renamed one renames it,
    an inactive one hides it (its consent history stays).
    """
    topics = list(db.session.scalars(select(Topic)))
    by_slug = {t.slug: t for t in topics}
    by_network = {t.network_id: t for t in topics if t.network_id is not None}
    if GENERAL_TOPIC not in by_slug:
        name, name_en = GENERAL_TOPIC_NAMES
        _insert_reference_row(Topic, slug=GENERAL_TOPIC, name=name, name_en=name_en, active=True)
    for network in db.session.scalars(select(Network)):
        topic = by_network.get(network.id)
        if topic is None:
            if network.active:
                slug = network.slug if network.slug not in by_slug else f"network-{network.id}"
                _insert_reference_row(
                    Topic,
                    slug=slug,
                    name=network.name,
                    name_en="",
                    network_id=network.id,
                    active=True,
                )
            continue
        if topic.name != network.name:
            topic.name = network.name
        if topic.active != network.active:
            topic.active = network.active
    for topic in topics:
        if topic.network_id is None and not topic.is_general and topic.active:
            topic.active = False  # its network was deleted
    if db.session.info.get(REFERENCE_ROWS_WRITTEN):
        return active_topics()  # rows were inserted beside the ORM: read them back
    return in_display_order(t for t in topics if t.active)


def reference_data() -> tuple[list[Topic], ConsentWording]:
    """The active topics and the current wording for a public form.

    Topics follow the networks and the first wording is made on first use: when that
    wrote anything it is committed at once (two queries and no commit otherwise, since
    every signup and preferences page asks).
    """
    topics = sync_topics()
    wording = current_wording()
    if db.session.info.pop(REFERENCE_ROWS_WRITTEN, False) or db.session.dirty:
        db.session.commit()
        # Loaded after the commit, which would otherwise expire them attribute by attribute.
        return active_topics(), current_wording()
    return topics, wording


def public_reference_data() -> tuple[list[Topic], ConsentWording]:
    """`reference_data()` as the public signup form uses it: this process's copy
    (crm/cache.py), shared by every request. Read it; never change it or give it to a
    session (use the ids)."""
    return cache.cached("signup-reference", _reference_copies)


def _reference_copies() -> tuple[list[Topic], ConsentWording]:
    topics, wording = reference_data()
    return [cache.detached_copy(t) for t in topics], cache.detached_copy(wording)


def active_topics() -> list[Topic]:
    """Active topics as the public sees them: general first, then by name."""
    return in_display_order(db.session.scalars(select(Topic).where(Topic.active.is_(True))))


def topic_by_slug(slug: str) -> Topic | None:
    return db.session.scalar(select(Topic).where(Topic.slug == slug))


def current_wording() -> ConsentWording:
    """The newest consent wording (version 1 is created on first use)."""
    wording = db.session.scalar(
        select(ConsentWording).order_by(ConsentWording.version.desc()).limit(1)
    )
    if wording is None:
        _insert_reference_row(
            ConsentWording,
            version=1,
            text_nb=DEFAULT_WORDING["nb"],
            text_en=DEFAULT_WORDING["en"],
            created_at=utcnow(),
        )
        wording = db.session.scalar(select(ConsentWording).where(ConsentWording.version == 1))
    return wording


def wording_by_version(version: int) -> ConsentWording | None:
    return db.session.scalar(select(ConsentWording).where(ConsentWording.version == version))


def add_wording(text_nb: str, text_en: str) -> ConsentWording:
    """A new version of the checkbox text; the form shows it from now on."""
    if not text_nb.strip() or not text_en.strip():
        raise ConsentError(_("Both the Norwegian and the English text are required."))
    latest = current_wording()
    wording = ConsentWording(
        version=latest.version + 1, text_nb=text_nb.strip(), text_en=text_en.strip()
    )
    db.session.add(wording)
    db.session.flush()
    return wording
