"""Newsletter topics, the consent ledger and public subscribers.

The ledger (`ConsentEvent`) is append-only evidence: who consented to what, when,
through which channel, having seen which wording. `ConsentState` is the current
state per contact and topic, derived from the ledger and kept in step with it in
the same transaction by `services.record_event` (the one place for that rule), so
that "everyone with active consent for topic X" is one indexed query at 100,000 rows.
"""

import contextvars
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, SmallInteger, String, Text, event, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.audit import Audited
from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime

GENERAL_TOPIC = "generelt"

# objected: the person objects to a network's mail (sent on the basis of membership,
# not consent); recorded against the network's topic, see services.object_to_network_mail.
CONSENT_KINDS = ("granted", "confirmed", "withdrawn", "bounced", "complained", "objected")
CONSENT_SOURCES = ("web_form", "staff", "import", "email_link", "webhook")
# pending: granted through the web form, waiting for the email confirmation.
CONSENT_STATUSES = ("pending", "active", "withdrawn", "bounced", "complained", "objected")


class Topic(db.Model):
    """What a person can subscribe to: each network, plus the general newsletter."""

    __tablename__ = "topic"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100), default="")
    # Set for a network's topic; the general newsletter has none.
    network_id: Mapped[int | None] = mapped_column(
        ForeignKey("network.id", ondelete="SET NULL"), unique=True
    )
    active: Mapped[bool] = mapped_column(default=True)

    network = relationship("Network")

    @property
    def is_general(self) -> bool:
        return self.slug == GENERAL_TOPIC

    def label(self, locale: str = "nb") -> str:
        return (self.name_en or self.name) if locale == "en" else self.name


def in_display_order(topics) -> list[Topic]:
    """Topics in the one order every page and email shows them: general news first,
    then by (Norwegian) name."""
    return sorted(topics, key=lambda t: (not t.is_general, t.name.casefold(), t.id))


class ConsentWording(db.Model):
    """A version of the checkbox text people agree to. Never edited: add a new version."""

    __tablename__ = "consent_wording"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(unique=True)
    text_nb: Mapped[str] = mapped_column(Text)
    text_en: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def text(self, locale: str = "nb") -> str:
        return self.text_en if locale == "en" else self.text_nb


# Set only by the two services allowed to touch old ledger rows: GDPR erase (which
# blanks IP and note) and contact merge (which moves rows to the surviving contact).
ledger_rewrite_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ledger_rewrite_allowed", default=False
)


class LedgerIsAppendOnly(RuntimeError):
    pass


class ConsentEvent(Audited, db.Model):
    """One grant, confirmation, withdrawal, bounce or complaint: stored evidence."""

    __tablename__ = "consent_event"
    __table_args__ = (Index("ix_consent_event_contact_topic", "contact_id", "topic_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # No ON DELETE: a contact with consent history is erased (anonymised), not deleted.
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topic.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    source: Mapped[str] = mapped_column(String(12))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    wording_id: Mapped[int | None] = mapped_column(ForeignKey("consent_wording.id"))
    note: Mapped[str] = mapped_column(Text, default="")

    topic: Mapped[Topic] = relationship()
    wording: Mapped[ConsentWording | None] = relationship()
    user = relationship("User")

    def audit_label(self) -> str:
        # Ids only: this runs inside a flush, where loading relationships is unsafe.
        return f"consent {self.kind} contact #{self.contact_id} topic #{self.topic_id}"


@event.listens_for(ConsentEvent, "before_update")
def _refuse_ledger_update(mapper, connection, target) -> None:
    if not ledger_rewrite_allowed.get():
        raise LedgerIsAppendOnly("consent events are never changed; append a new event")


@event.listens_for(ConsentEvent, "before_delete")
def _refuse_ledger_delete(mapper, connection, target) -> None:
    raise LedgerIsAppendOnly("consent events are never deleted")


class ConsentState(db.Model):
    """Current status per contact and topic: the ledger's sum, maintained with it."""

    __tablename__ = "consent_state"
    __table_args__ = (Index("ix_consent_state_topic_status", "topic_id", "status"),)

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topic.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(12))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_event.id"))

    topic: Mapped[Topic] = relationship()


class ConsentChange(db.Model):
    """An event that made a contact's consent to a topic active (+1) or ended it (-1),
    by the rule, in the order the ledger was written: the ledger's sum over time, kept
    with it in the same transaction like `ConsentState` (`ledger.note_change`). The
    results report sums it per month instead of replaying the ledger (migration 0040)."""

    __tablename__ = "consent_change"
    __table_args__ = (Index("ix_consent_change_topic_at", "topic_id", "at", "change"),)

    event_id: Mapped[int] = mapped_column(
        ForeignKey("consent_event.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topic.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    change: Mapped[int] = mapped_column(SmallInteger)


class Subscriber(Audited, db.Model):
    """What the newsletter side keeps about a contact beyond the contact record."""

    __tablename__ = "subscriber"
    # The home page's "new subscribers this week" (count and latest) (migration 0025).
    __table_args__ = (Index("ix_subscriber_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contact.id", ondelete="CASCADE"), unique=True
    )
    # Free text from the public form; public subscribers have no company record.
    company_name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(5), default="nb")
    # Part of every unsubscribe/preferences token: bumping it revokes them all.
    token_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    contact = relationship("Contact")

    def audit_label(self) -> str:
        return f"subscriber contact #{self.contact_id}"


class PendingSignup(db.Model):
    """A web-form signup waiting for its email confirmation.

    Nothing enters the contact register or the ledger before the address owner
    confirms: a form anyone can fill in for anyone's address creates no contacts.
    Rows are purged a while after their link expires.
    """

    __tablename__ = "pending_signup"
    __table_args__ = (
        # The signups whose confirmation email is still to be written (migration 0033):
        # the worker's sweep finds them without reading the days of signups kept.
        Index(
            "ix_pending_signup_unmailed",
            "id",
            sqlite_where=text("confirmation_queued_at IS NULL"),
            postgresql_where=text("confirmation_queued_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    nonce: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(254), index=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    company_name: Mapped[str] = mapped_column(String(200), default="")
    topic_ids: Mapped[list] = mapped_column(JSON, default=list)
    wording_id: Mapped[int] = mapped_column(ForeignKey("consent_wording.id"))
    ip: Mapped[str | None] = mapped_column(String(45))
    locale: Mapped[str] = mapped_column(String(5), default="nb")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"))
    # Digest of the signup form's token: unique, so one form starts one signup only.
    form_token: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    # When the worker stored this signup's confirmation email (in the same transaction);
    # None until then. The request stores only this row (crm.subscriptions.signup).
    confirmation_queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    wording: Mapped[ConsentWording] = relationship()
