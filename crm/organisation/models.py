"""The organisation's settings: one row (id 1)."""

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm.audit import Audited
from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime

DEFAULT_NAME = "Klynge"


class Organisation(Audited, db.Model):
    """Who sends Klynge's pages, emails and invoices."""

    __tablename__ = "organisation"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default=DEFAULT_NAME)
    # The sender of every email ("From"); empty: the MAIL_FROM setting.
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    sender_email: Mapped[str] = mapped_column(String(254), default="")
    privacy_url: Mapped[str] = mapped_column(String(500), default="")
    footer_text: Mapped[str] = mapped_column(Text, default="")
    # The logo file under instance/branding/ (its name carries a digest of its bytes,
    # so a new logo gets a new URL and browsers may cache each one for good).
    logo_filename: Mapped[str] = mapped_column(String(100), default="")
    logo_content_type: Mapped[str] = mapped_column(String(50), default="")
    # The organisation as the sender of invoices (the register's data).
    orgnr: Mapped[str] = mapped_column(String(9), default="")
    street_address: Mapped[str] = mapped_column(String(300), default="")
    postal_code: Mapped[str] = mapped_column(String(10), default="")
    postal_place: Mapped[str] = mapped_column(String(100), default="")
    # Where members write about invoices (shown on them); empty: the sender address.
    email: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __audit_exclude__ = ("updated_at",)

    def audit_label(self) -> str:
        return self.name or DEFAULT_NAME
