from datetime import date, datetime

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.audit import Audited
from crm.extensions import db
from crm.members.municipalities import municipality_name
from crm.timeutil import utcnow
from crm.types import UTCDateTime

MEMBERSHIP_STATUSES = ("prospect", "member", "resigned")
CONTACT_ROLES = ("primary", "invoice", "board")  # flags on Contact, see ROLE_COLUMNS
ROLE_COLUMNS = {
    "primary": "is_primary_contact",
    "invoice": "is_invoice_contact",
    "board": "is_board_representative",
}
ACTIVITY_KINDS = ("meeting", "call", "seminar", "email", "note")

contact_network = Table(
    "contact_network",
    db.metadata,
    Column("contact_id", ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True),
    Column("network_id", ForeignKey("network.id", ondelete="CASCADE"), primary_key=True),
    # A network's members in contact order: merge-joined with ix_contact_current_company
    # to group them by company (migration 0028).
    Index("ix_contact_network_network_contact", "network_id", "contact_id"),
)

# The networks a company takes part in through its current (not archived) contacts,
# kept by database triggers on contact_network and contact (migration 0039): the results
# report counts member companies per network from it. Never written by the application.
company_network = Table(
    "company_network",
    db.metadata,
    Column("company_id", ForeignKey("company.id", ondelete="CASCADE"), primary_key=True),
    Column("network_id", ForeignKey("network.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_company_network_network_company", "network_id", "company_id"),
)

# The contacts who lead a network (a network's "leaders"), named on its page.
network_leader = Table(
    "network_leader",
    db.metadata,
    Column("network_id", ForeignKey("network.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_network_leader_contact_id", "contact_id"),
)

# Who took part in an activity (a meeting, a seminar, a call).
activity_participant = Table(
    "activity_participant",
    db.metadata,
    Column("activity_id", ForeignKey("activity.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_activity_participant_contact_id", "contact_id"),
)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Company(Audited, Timestamps, db.Model):
    __tablename__ = "company"
    __audit_exclude__ = ("updated_at", "created_at", "in_network")
    __table_args__ = (
        # The results report's company counts read only this (migration 0039).
        Index(
            "ix_company_report", "membership_status", "member_since", "resigned_on",
            "municipality_number", "employees", "nace_code", "in_network", "id",
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(primary_key=True)
    orgnr: Mapped[str] = mapped_column(String(9), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    org_form_code: Mapped[str] = mapped_column(String(10), default="")
    org_form_name: Mapped[str] = mapped_column(String(200), default="")
    nace_code: Mapped[str] = mapped_column(String(10), default="")
    nace_text: Mapped[str] = mapped_column(String(300), default="")
    employees: Mapped[int | None] = mapped_column()
    municipality_number: Mapped[str] = mapped_column(String(4), default="", index=True)
    municipality_name: Mapped[str] = mapped_column(String(100), default="")
    street_address: Mapped[str] = mapped_column(String(300), default="")
    postal_code: Mapped[str] = mapped_column(String(10), default="")
    postal_place: Mapped[str] = mapped_column(String(100), default="")
    website: Mapped[str] = mapped_column(String(300), default="")
    membership_status: Mapped[str] = mapped_column(String(10), default="prospect", index=True)
    member_since: Mapped[date | None] = mapped_column()
    resigned_on: Mapped[date | None] = mapped_column()
    notes: Mapped[str] = mapped_column(Text, default="")
    # Flags from Brønnøysund (Enhetsregisteret).
    bankrupt: Mapped[bool] = mapped_column(default=False)
    winding_up: Mapped[bool] = mapped_column(default=False)
    # Tvangsavvikling or tvangsoppløsning: wound up by the court, not by the owners.
    forced_dissolution: Mapped[bool] = mapped_column(default=False)
    deleted_in_registry_on: Mapped[date | None] = mapped_column()
    # A sub-unit (underenhet, e.g. a local plant) names its main unit (overordnetEnhet).
    parent_orgnr: Mapped[str] = mapped_column(String(9), default="")
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Has a row in company_network; kept by the same triggers, never set here.
    in_network: Mapped[bool] = mapped_column(server_default=false())

    contacts: Mapped[list["Contact"]] = relationship(
        back_populates="company", order_by="Contact.last_name, Contact.first_name"
    )
    activities: Mapped[list["Activity"]] = relationship(
        back_populates="company", order_by="Activity.occurred_on.desc(), Activity.id.desc()"
    )

    @property
    def municipality(self) -> str:
        return self.municipality_name or municipality_name(self.municipality_number)

    @property
    def registry_warnings(self) -> list[str]:
        return [
            flag
            for flag, present in (
                ("bankrupt", self.bankrupt),
                ("winding_up", self.winding_up),
                ("forced_dissolution", self.forced_dissolution),
                ("deleted", self.deleted_in_registry_on is not None),
            )
            if present
        ]


class Network(Audited, db.Model):
    __tablename__ = "network"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(default=True)

    contacts: Mapped[list["Contact"]] = relationship(
        secondary=contact_network, back_populates="networks", viewonly=True
    )
    leaders: Mapped[list["Contact"]] = relationship(
        secondary=network_leader, order_by="Contact.last_name, Contact.first_name"
    )


class Contact(Audited, Timestamps, db.Model):
    __tablename__ = "contact"
    __audit_exclude__ = ("updated_at", "created_at")
    __table_args__ = (
        # Serves the contact list's order, offset and count (migration 0001b_members).
        Index(
            "ix_contact_current_name",
            "last_name",
            "first_name",
            "id",
            sqlite_where=text("archived_at IS NULL"),
            postgresql_where=text("archived_at IS NULL"),
        ),
        # The few archived contacts, for the network list's counts (migration 0018).
        Index(
            "ix_contact_archived",
            "id",
            sqlite_where=text("archived_at IS NOT NULL"),
            postgresql_where=text("archived_at IS NOT NULL"),
        ),
        # Current primary contacts by company: the home page's "member companies without
        # a primary contact" probes it once per member company (migration 0021).
        Index(
            "ix_contact_current_primary",
            "company_id",
            sqlite_where=text("is_primary_contact AND active AND archived_at IS NULL"),
            postgresql_where=text("is_primary_contact AND active AND archived_at IS NULL"),
        ),
        # Current contacts' companies in id order, read without the table: a network's
        # page groups its members by company with it (migration 0028).
        Index(
            "ix_contact_current_company",
            "id",
            "company_id",
            sqlite_where=text("archived_at IS NULL"),
            postgresql_where=text("archived_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="", index=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    job_title: Mapped[str] = mapped_column(String(200), default="")
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("company.id", ondelete="SET NULL"), index=True
    )
    is_primary_contact: Mapped[bool] = mapped_column(default=False)
    is_invoice_contact: Mapped[bool] = mapped_column(default=False)
    is_board_representative: Mapped[bool] = mapped_column(default=False)
    # False once the person has left the company; kept for history.
    active: Mapped[bool] = mapped_column(default=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))

    company: Mapped[Company | None] = relationship(back_populates="contacts")
    networks: Mapped[list[Network]] = relationship(
        secondary=contact_network, back_populates="contacts", order_by="Network.name"
    )
    activities: Mapped[list["Activity"]] = relationship(
        back_populates="contact", order_by="Activity.occurred_on.desc(), Activity.id.desc()"
    )

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def roles(self) -> list[str]:
        return [role for role, column in ROLE_COLUMNS.items() if getattr(self, column)]

    def audit_label(self) -> str:
        return self.name or self.email or str(self.id)


class Activity(Audited, db.Model):
    __tablename__ = "activity"
    # Upcoming meetings on the home page: a range scan on the date.
    __table_args__ = (Index("ix_activity_occurred_on", "occurred_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    occurred_on: Mapped[date] = mapped_column()
    summary: Mapped[str] = mapped_column(String(300))
    details: Mapped[str] = mapped_column(Text, default="")
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("company.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact.id", ondelete="CASCADE"), index=True
    )
    # A meeting of a network (its page lists them); None for a company's own activities.
    network_id: Mapped[int | None] = mapped_column(
        ForeignKey("network.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    company: Mapped[Company | None] = relationship(back_populates="activities")
    contact: Mapped[Contact | None] = relationship(back_populates="activities")
    network: Mapped[Network | None] = relationship()
    participants: Mapped[list[Contact]] = relationship(
        secondary=activity_participant,
        order_by="Contact.last_name, Contact.first_name",
        lazy="selectin",
    )
    created_by = relationship("User")

    def audit_label(self) -> str:
        return self.summary


class SearchTerm(db.Model):
    """Word-prefix index for search as you type; maintained by crm/members/search.py."""

    __tablename__ = "search_term"

    record_type: Mapped[str] = mapped_column(String(20), primary_key=True)
    # Binary ("C") collation on PostgreSQL makes the prefix range scan exact.
    term: Mapped[str] = mapped_column(
        String(254).with_variant(String(254, collation="C"), "postgresql"), primary_key=True
    )
    record_id: Mapped[int] = mapped_column(primary_key=True)

    __table_args__ = (Index("ix_search_term_record", "record_type", "record_id"),)
