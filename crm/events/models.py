"""Events, their sessions, registrations (with the waitlist) and attendance.

Money is integer øre (BIGINT) like in crm/fees. Times are timezone-aware UTC
(`UTCDateTime`), shown in Europe/Oslo. Every model is `Audited`.

The waitlist: `Registration.waitlist_position` is the place in the queue given on
arrival (1, 2, 3, … per event, never reused, unique per event), so arrival order is
kept and no two registrations share a position. The place a person is shown is
their rank among those still waiting (`services.waitlist_place`).
"""

import uuid
from datetime import datetime
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.audit import Audited
from crm.extensions import db
from crm.members.models import Company, Contact, Network
from crm.timeutil import utcnow
from crm.types import UTCDateTime

EVENT_KINDS = {
    "seminar": _l("Styrketrening seminar"),
    "network_meeting": _l("Network meeting"),
    "course": _l("Course package"),
    "other": _l("Other"),
}
# Who may register.
AUDIENCES = {
    "members": _l("Members only"),
    "members_and_guests": _l("Members and invited guests"),
    "open": _l("Open to all"),
}
PARTICIPANT_TYPES = {
    "member_employee": _l("Employee of a member company"),
    "politician": _l("Politician"),
    "public_sector": _l("Public sector"),
    "research_education": _l("Research / education"),
    "organisation": _l("Organisation"),
    "other": _l("Other"),
}
REGISTRATION_STATUSES = {
    "confirmed": _l("Confirmed"),
    "waitlisted": _l("Waitlist"),
    "offered": _l("Offered a seat"),
    "cancelled": _l("Cancelled"),
}
# Registrations that hold a seat: an open offer keeps the seat until it expires.
SEAT_STATUSES = ("confirmed", "offered")

event_network = Table(
    "event_network",
    db.metadata,
    Column("event_id", ForeignKey("event.id", ondelete="CASCADE"), primary_key=True),
    Column("network_id", ForeignKey("network.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_event_network_network_id", "network_id"),
)


class Event(Audited, db.Model):
    __tablename__ = "event"
    __audit_exclude__ = ("created_at", "updated_at")
    __table_args__ = (
        CheckConstraint("capacity IS NULL OR capacity >= 0", name="capacity_not_negative"),
        CheckConstraint(
            "company_quota IS NULL OR company_quota >= 1", name="company_quota_positive"
        ),
        CheckConstraint(
            "member_price_ore >= 0 AND price_ore >= 0 AND cancellation_fee_ore >= 0",
            name="amounts_not_negative",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="other")
    # Markdown, rendered through the newsletter's sanitising renderer.
    description: Mapped[str] = mapped_column(Text, default="")
    venue: Mapped[str] = mapped_column(String(300), default="")
    audience: Mapped[str] = mapped_column(String(20), default="open")
    # None = unlimited seats / no per-company limit.
    capacity: Mapped[int | None] = mapped_column()
    company_quota: Mapped[int | None] = mapped_column()
    registration_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancellation_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancellation_fee_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    # Prices including nothing: VAT is added on the invoice line at `vat_percent`.
    member_price_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    price_ore: Mapped[int] = mapped_column(BigInteger, default=0)
    vat_percent: Mapped[int] = mapped_column(default=25)
    # Courses: share of the sessions a participant must attend for a certificate.
    completion_percent: Mapped[int | None] = mapped_column()
    published: Mapped[bool] = mapped_column(default=False, index=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # iCalendar SEQUENCE: bumped whenever a change reaches registrants' calendars.
    sequence: Mapped[int] = mapped_column(default=0)
    # The queue number the next waitlisted registration gets (see module docstring).
    next_waitlist_position: Mapped[int] = mapped_column(default=1)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    duplicated_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("event.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    sessions: Mapped[list["EventSession"]] = relationship(
        back_populates="event",
        order_by="EventSession.starts_at, EventSession.id",
        cascade="all, delete-orphan",
    )
    networks: Mapped[list[Network]] = relationship(secondary=event_network, order_by="Network.name")
    registrations: Mapped[list["Registration"]] = relationship(
        back_populates="event", order_by="Registration.id", viewonly=True
    )

    def audit_label(self) -> str:
        return self.title

    @property
    def starts_at(self) -> datetime | None:
        return self.sessions[0].starts_at if self.sessions else None

    @property
    def ends_at(self) -> datetime | None:
        return max((s.ends_at for s in self.sessions), default=None)

    @property
    def is_free(self) -> bool:
        return self.member_price_ore == 0 and self.price_ore == 0

    @property
    def kind_label(self) -> str:
        return str(EVENT_KINDS.get(self.kind, self.kind))

    @property
    def audience_label(self) -> str:
        return str(AUDIENCES.get(self.audience, self.audience))


class EventSession(Audited, db.Model):
    """One meeting of an event: a seminar has one, a course package several."""

    __tablename__ = "event_session"
    __table_args__ = (CheckConstraint("ends_at > starts_at", name="ends_after_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Course hours credited on a certificate; None = the session's length.
    hours: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    # iCalendar UID: stays when the session moves, so calendars update, not duplicate.
    uid: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: uuid.uuid4().hex)

    event: Mapped[Event] = relationship(back_populates="sessions")

    def audit_label(self) -> str:
        return f"{self.event.title if self.event else self.event_id} {self.starts_at:%Y-%m-%d}"

    @property
    def credited_hours(self) -> Decimal:
        if self.hours is not None:
            return self.hours
        seconds = (self.ends_at - self.starts_at).total_seconds()
        return (Decimal(int(seconds)) / Decimal(3600)).quantize(Decimal("0.01"))


class Registration(Audited, db.Model):
    __tablename__ = "registration"
    __audit_exclude__ = ("created_at", "updated_at", "form_token")
    __table_args__ = (
        # One registration per address and event: a second try finds the first.
        UniqueConstraint("event_id", "email", name="uq_registration_event_email"),
        UniqueConstraint(
            "event_id", "waitlist_position", name="uq_registration_event_waitlist_position"
        ),
        Index("ix_registration_event_status", "event_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(30), default="")
    # A member company picked from the register, or a name typed by the person.
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("company.id", ondelete="SET NULL"), index=True
    )
    company_name: Mapped[str] = mapped_column(String(200), default="")
    participant_type: Mapped[str] = mapped_column(String(30), default="other")
    note: Mapped[str] = mapped_column(Text, default="")  # dietary needs and other notes
    status: Mapped[str] = mapped_column(String(12), default="confirmed")
    waitlist_position: Mapped[int | None] = mapped_column()
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    offer_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invoice_id: Mapped[int | None] = mapped_column(
        ForeignKey("invoice.id", ondelete="SET NULL"), index=True
    )
    # Bumped to revoke every personal link sent so far (e.g. when the seat is handed on).
    token_version: Mapped[int] = mapped_column(default=1)
    # The digest of the public form's token that made it (`tokens.form_token_digest`):
    # a form registers once, as the signup form signs up once (migration 0037).
    form_token: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    locale: Mapped[str] = mapped_column(String(5), default="nb")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    event: Mapped[Event] = relationship(back_populates="registrations")
    contact: Mapped[Contact | None] = relationship()
    company: Mapped[Company | None] = relationship()
    attendances: Mapped[list["Attendance"]] = relationship(
        back_populates="registration", cascade="all, delete-orphan"
    )

    def audit_label(self) -> str:
        return f"{self.name} <{self.email}>"

    @property
    def company_label(self) -> str:
        return self.company.name if self.company is not None else self.company_name

    @property
    def status_label(self) -> str:
        return str(REGISTRATION_STATUSES.get(self.status, self.status))

    @property
    def participant_type_label(self) -> str:
        return str(PARTICIPANT_TYPES.get(self.participant_type, self.participant_type))


class Attendance(Audited, db.Model):
    """A participant marked present at one session."""

    __tablename__ = "attendance"
    __table_args__ = (
        UniqueConstraint(
            "registration_id", "session_id", name="uq_attendance_registration_session"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    registration_id: Mapped[int] = mapped_column(
        ForeignKey("registration.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[int] = mapped_column(
        ForeignKey("event_session.id", ondelete="CASCADE"), index=True
    )
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    marked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))

    registration: Mapped[Registration] = relationship(back_populates="attendances")
    session: Mapped[EventSession] = relationship()

    def audit_label(self) -> str:
        return f"{self.registration_id}@{self.session_id}"


class Certificate(Audited, db.Model):
    """A course certificate; `code` is the public verification key."""

    __tablename__ = "event_certificate"

    id: Mapped[int] = mapped_column(primary_key=True)
    registration_id: Mapped[int] = mapped_column(
        ForeignKey("registration.id", ondelete="CASCADE"), unique=True
    )
    code: Mapped[str] = mapped_column(String(32), unique=True)
    sessions_attended: Mapped[int] = mapped_column(default=0)
    hours: Mapped[Decimal] = mapped_column(Numeric(6, 2), default=Decimal("0"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))

    registration: Mapped[Registration] = relationship()

    def audit_label(self) -> str:
        return self.code


class InvitationAnswer(Audited, db.Model):
    """An invitee's "can't come" (the one answer that is not a registration).

    Invitations themselves are newsletter ledger rows (crm/events/invitations.py); a
    registration is the other answer. One row per event and contact.
    """

    __tablename__ = "event_invitation_answer"
    __table_args__ = (
        UniqueConstraint("event_id", "contact_id", name="uq_event_invitation_answer_contact"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contact.id", ondelete="CASCADE"), index=True
    )
    answer: Mapped[str] = mapped_column(String(12), default="declined")
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))

    def audit_label(self) -> str:
        return f"invitation answer {self.answer} contact #{self.contact_id} event #{self.event_id}"
