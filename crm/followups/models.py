from datetime import date, datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.audit import Audited
from crm.extensions import db
from crm.members.models import Activity, Company, Contact
from crm.timeutil import utcnow
from crm.types import UTCDateTime


class FollowUp(Audited, db.Model):
    """Something to do about a company or a contact by a date, by one user."""

    __tablename__ = "follow_up"
    __table_args__ = (
        # The home page and the digest read open follow-ups by due date.
        Index(
            "ix_follow_up_open_due",
            "due_on",
            sqlite_where=text("done_at IS NULL"),
            postgresql_where=text("done_at IS NULL"),
        ),
        Index("ix_follow_up_assignee_due", "assignee_id", "due_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    what: Mapped[str] = mapped_column(String(300))
    due_on: Mapped[date] = mapped_column()
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("company.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact.id", ondelete="CASCADE"), index=True
    )
    # The activity it came out of ("call back in two weeks"), if any.
    activity_id: Mapped[int | None] = mapped_column(
        ForeignKey("activity.id", ondelete="SET NULL"), index=True
    )
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    company: Mapped[Company | None] = relationship()
    contact: Mapped[Contact | None] = relationship()
    activity: Mapped[Activity | None] = relationship()
    assignee = relationship("User", foreign_keys=[assignee_id])
    done_by = relationship("User", foreign_keys=[done_by_id])
    created_by = relationship("User", foreign_keys=[created_by_id])

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def audit_label(self) -> str:
        return self.what

    @classmethod
    def audit_label_of(cls, values: dict) -> str:
        """The label of a row written in bulk (crm.audit.bulk_create)."""
        return str(values.get("what") or "")
