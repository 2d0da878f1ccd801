"""The email log: every message we send, each attempt, each provider event, suppressions.

These tables are a log themselves, so they are not `Audited`.
"""

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime

# Message states. A message only ever moves to a state of higher rank, because
# provider events arrive out of order (a late "delivered" must not undo a "bounced").
# "failed" ranks below "sent": a delivery event for a message whose send timed out
# proves it did go out after all.
STATE_RANK = {
    "queued": 0,
    "retrying": 1,
    "sending": 2,
    "failed": 3,
    "sent": 4,
    "delivered": 5,
    "opened": 6,
    "clicked": 7,
    "bounced": 8,
    "dropped": 8,
    "complained": 9,
}
STATES = tuple(STATE_RANK)
# States the worker may pick a message up in.
SENDABLE_STATES = ("queued", "retrying")

SUPPRESSION_REASONS = ("bounce", "dropped", "spamreport", "unsubscribe", "manual")


def new_message_uuid() -> str:
    return str(uuid.uuid4())


class EmailMessage(db.Model):
    __tablename__ = "email_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The stable id the outside world sees: Message-ID, X-Klynge-Message-Id, SendGrid
    # custom_args, RQ job ids.
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_message_uuid)
    # Idempotency key chosen by the caller: queueing the same key again sends nothing new.
    key: Mapped[str | None] = mapped_column(String(200), unique=True)
    to_email: Mapped[str] = mapped_column(String(254), index=True)
    to_name: Mapped[str] = mapped_column(String(200), default="")
    from_header: Mapped[str] = mapped_column(String(400), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(50), default="", index=True)
    template: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(10), default="nb")
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact.id", ondelete="SET NULL"), index=True
    )
    text_body: Mapped[str] = mapped_column(Text, default="")
    html_body: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    # A message queued unrendered (`queue_email(render_in_worker=True)`): what the send
    # job renders `template` with. Emptied once the text is written.
    context: Mapped[dict | None] = mapped_column(JSON)

    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    # Attempts ever made; `retry_base` is the count when the current round began
    # (a staff "resend" starts a new round with the full number of tries).
    attempts: Mapped[int] = mapped_column(default=0)
    retry_base: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_message_id: Mapped[str | None] = mapped_column(String(100), index=True)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    attachments: Mapped[list["EmailAttachment"]] = relationship(
        back_populates="message",
        order_by="EmailAttachment.id",
        cascade="all, delete-orphan",
    )
    attempt_log: Mapped[list["EmailAttempt"]] = relationship(
        back_populates="message",
        order_by="EmailAttempt.id",
        cascade="all, delete-orphan",
    )
    events: Mapped[list["EmailEvent"]] = relationship(
        back_populates="message", order_by="EmailEvent.occurred_at, EmailEvent.id"
    )
    contact = relationship("Contact")

    @property
    def awaiting_render(self) -> bool:
        """Queued unrendered: its subject and text are written by its send job."""
        return self.context is not None and not self.subject

    @property
    def to_display(self) -> str:
        return f"{self.to_name} <{self.to_email}>" if self.to_name else self.to_email

    @property
    def can_resend(self) -> bool:
        return self.state == "failed"

    def __repr__(self) -> str:
        return f"<EmailMessage {self.id} {self.state} {self.to_email}>"


class EmailAttachment(db.Model):
    __tablename__ = "email_attachment"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("email_message.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)

    message: Mapped[EmailMessage] = relationship(back_populates="attachments")

    @property
    def size(self) -> int:
        return len(self.content or b"")


class EmailAttempt(db.Model):
    """One try at handing a message to the backend, with its outcome."""

    __tablename__ = "email_attempt"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("email_message.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration_ms: Mapped[int] = mapped_column(default=0)
    backend: Mapped[str] = mapped_column(String(20), default="")
    # sent | retry | failed
    outcome: Mapped[str] = mapped_column(String(10))
    status_code: Mapped[int | None] = mapped_column()
    error: Mapped[str] = mapped_column(Text, default="")
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    message: Mapped[EmailMessage] = relationship(back_populates="attempt_log")


class EmailEvent(db.Model):
    """An event from the provider's webhook, stored whatever its type."""

    __tablename__ = "email_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SendGrid repeats deliveries for up to 24 h: this is what makes a replay a no-op.
    sg_event_id: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(30), index=True)
    email: Mapped[str] = mapped_column(String(254), default="", index=True)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
    sg_message_id: Mapped[str] = mapped_column(String(200), default="")
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("email_message.id", ondelete="SET NULL"), index=True
    )
    raw: Mapped[dict] = mapped_column(JSON, default=dict)

    message: Mapped[EmailMessage | None] = relationship(back_populates="events")


class Suppression(db.Model):
    """An address we must not mail: it bounced, complained, unsubscribed or staff said so."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased: addresses are compared case-insensitively.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    reason: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("email_event.id", ondelete="SET NULL"))
