"""Newsletters, their recipient ledger and the batches the ledger is sent in.

The ledger (`NewsletterRecipient`) has one row per (newsletter, contact), created in
one transaction when sending starts. A row is `pending` until the provider accepted
the request that carried it (then `sent`, with the provider's message id), or until
it is `failed` or `skipped` (consent withdrawn, suppressed, erased meanwhile). Rows
are sent in `NewsletterBatch`es of up to 1,000: one provider request each, claimed by
one sender at a time through a lease (see `crm.newsletters.sending`).
"""

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.audit import Audited
from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime

NEWSLETTER_STATES = ("draft", "scheduled", "sending", "paused", "finished", "cancelled")
# States in which the content and audience may still be edited.
EDITABLE_STATES = ("draft", "scheduled")
RECIPIENT_STATES = ("pending", "sent", "failed", "skipped")
# planned: its recipients are fixed (`NewsletterBatch.planned`) but their ledger rows are
# not written yet; nobody claims it until they are (then it is pending).
BATCH_STATES = ("planned", "pending", "sent", "failed")
MEMBERSHIP_FILTERS = ("", "member", "non_member")
# newsletter: to consent holders of its topics. network_mail: a network's own mail
# (meeting notes …), which contacts of member companies in the network get on the basis
# of that membership, without newsletter consent (see crm.newsletters.audience).
# The event kinds belong to an event (`event_id`, see crm/events/invitations.py):
# event_invitation: an invitation, on the same bases as network mail;
# event_invitation_reminder: its one reminder, to invitees who have not answered;
# event_registrant_reminder / event_message: to the event's registrants, who may be
# mailed about the event they registered for (basis "registration").
NEWSLETTER_KINDS = ("newsletter", "network_mail")
EVENT_MAIL_KINDS = (
    "event_invitation",
    "event_invitation_reminder",
    "event_registrant_reminder",
    "event_message",
)
# Why a ledger row may be mailed: consent for a topic, or membership of a network.
BASES = ("consent", "membership", "registration")


class Newsletter(Audited, db.Model):
    __tablename__ = "newsletter"
    # The frozen copies are derived from subject/body; logging them would repeat the body.
    __audit_exclude__ = ("html", "text", "created_at", "updated_at")

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    preheader: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text, default="")  # Markdown

    # Audience: consent for any of `topics` (slugs); for network mail also membership
    # of `network_ids` (then not a filter but the networks whose mail it is). The
    # contact filters narrow it further (empty = no restriction).
    kind: Mapped[str] = mapped_column(String(30), default="newsletter", server_default="newsletter")
    topics: Mapped[list] = mapped_column(JSON, default=list)
    network_ids: Mapped[list] = mapped_column(JSON, default=list)
    municipalities: Mapped[list] = mapped_column(JSON, default=list)
    membership: Mapped[str] = mapped_column(String(12), default="")
    roles: Mapped[list] = mapped_column(JSON, default=list)

    # Event mail: the event, and for a reminder the invitation it follows up.
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("event.id", ondelete="SET NULL"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("newsletter.id", ondelete="SET NULL"))
    in_archive: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(12), default="draft", index=True)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    # Its ledger rows in state "sent", and how many of those have each first webhook
    # event: kept in the transaction that changes the rows (crm.newsletters.ledger), so
    # the statistics and the yearly report read them instead of adding up the ledger.
    sent_count: Mapped[int] = mapped_column(default=0, server_default="0")
    delivered_count: Mapped[int] = mapped_column(default=0, server_default="0")
    bounced_count: Mapped[int] = mapped_column(default=0, server_default="0")
    opened_count: Mapped[int] = mapped_column(default=0, server_default="0")
    clicked_count: Mapped[int] = mapped_column(default=0, server_default="0")
    spam_count: Mapped[int] = mapped_column(default=0, server_default="0")
    # [basis, basis_network_id, rows] of its ledger, counted when the ledger is made
    # (rows never change basis): the detail page's "recipients by basis".
    basis_counts: Mapped[list | None] = mapped_column(JSON)

    # What was sent, rendered once when sending started (with substitution tags), so
    # that every batch — and a resend after a crash — sends the same content.
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)

    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    duplicated_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("newsletter.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    created_by = relationship("User")

    @property
    def editable(self) -> bool:
        return self.state in EDITABLE_STATES

    def audit_label(self) -> str:
        return self.subject or f"newsletter #{self.id}"


class NewsletterBatch(db.Model):
    """Up to 1,000 ledger rows that go out in one provider request."""

    __tablename__ = "newsletter_batch"
    __table_args__ = (
        UniqueConstraint("newsletter_id", "number", name="uq_newsletter_batch_number"),
        Index("ix_newsletter_batch_newsletter_state", "newsletter_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletter.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(String(10), default="pending")
    size: Mapped[int] = mapped_column(default=0)
    sent_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    skipped_count: Mapped[int] = mapped_column(default=0)

    # The lease: who may send this batch now, until when. Claimed and extended with
    # conditional UPDATEs, so two workers never send the same batch at once.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set (committed) just before a request goes out, cleared when its answer is
    # recorded: still set after a crash means "the outcome of a request is unknown".
    in_flight_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last request's outcome is unknown (5xx, timeout, crash): before sending again
    # the batch is checked against the webhook's events (see README, resend policy).
    ambiguous_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    resends: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")

    # While the batch is `planned`: its recipients, [[contact_id, basis network id or
    # null], …] as the audience was when sending started (one snapshot,
    # deduplicated); emptied when their ledger rows are written (crm.newsletters.ledger).
    planned: Mapped[list | None] = mapped_column(JSON, deferred=True)

    job_id: Mapped[str | None] = mapped_column(String(100))
    enqueued_count: Mapped[int] = mapped_column(default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    newsletter: Mapped[Newsletter] = relationship()


# The contacts staff picked for a mailing (a bulk "invite to an event" from the contact or
# company list). A mailing with picks goes to them only, and still only to those the
# audience rule allows (crm.newsletters.audience); one without goes to its whole audience.
newsletter_pick = db.Table(
    "newsletter_pick",
    db.Column("newsletter_id", ForeignKey("newsletter.id", ondelete="CASCADE"), primary_key=True),
    db.Column("contact_id", ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_newsletter_pick_contact_id", "contact_id"),
)


class NewsletterRecipient(db.Model):
    """The ledger: one row per newsletter and contact, at most one send each."""

    __tablename__ = "newsletter_recipient"
    __table_args__ = (
        # At most one row per newsletter and contact; led by the contact, the key also
        # finds a contact's rows (migration 0035: one index fewer to write per row).
        UniqueConstraint("contact_id", "newsletter_id", name="uq_newsletter_recipient_contact"),
        # No index holds `state` (or any column a send or a webhook event changes), so
        # those updates are HOT on PostgreSQL: no index entries per updated row. The
        # table keeps room on its pages for them (fillfactor, migration 0027).
        Index("ix_newsletter_recipient_batch", "newsletter_id", "batch_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Its newsletter and contact, without foreign keys: their per-row checks were half
    # the work of writing the ledger. A trigger on each table deletes the rows of a
    # deleted newsletter or contact, and the ledger's writer joins (and on PostgreSQL
    # locks) the contacts it writes rows for (migration 0034, `ledger.write_planned`).
    newsletter_id: Mapped[int] = mapped_column()
    contact_id: Mapped[int] = mapped_column()
    batch_number: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(String(10), default="pending")
    # no_consent | objected | suppressed | erased | no_email | filter | duplicate | cancelled
    # | merged (its contact was merged with one that has a row of its own)
    skip_reason: Mapped[str] = mapped_column(String(20), default="")
    # Why this person may be mailed (decided by crm.newsletters.audience when the ledger
    # is made): "consent" for a topic, or "membership" of network `basis_network_id`,
    # whose one-click objection link the email then carries. No foreign key: the ledger
    # is history, and per-row key checks slow its 100,000-row INSERT.
    basis: Mapped[str] = mapped_column(String(12), default="consent", server_default="consent")
    basis_network_id: Mapped[int | None] = mapped_column()
    error: Mapped[str] = mapped_column(Text, default="")
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # First occurrence of each webhook event for this recipient (statistics). Any
    # event proves the provider accepted the request, so it also sets processed_at.
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    spam_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    contact = relationship(
        "Contact", primaryjoin="foreign(NewsletterRecipient.contact_id) == Contact.id"
    )
