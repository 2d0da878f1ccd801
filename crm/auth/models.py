from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_login import UserMixin
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from crm.audit import Audited
from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime

ROLES = ("admin", "staff", "treasurer")

_hasher = PasswordHasher()


class User(Audited, UserMixin, db.Model):
    __tablename__ = "user"
    __audit_exclude__ = ("password_hash", "last_login_at")

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The morning email of one's due follow-ups (crm/followups/tasks.py); off per user.
    followup_digest: Mapped[bool] = mapped_column(default=True)

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users.
        return self.active

    def set_password(self, password: str) -> None:
        self.password_hash = _hasher.hash(password)

    def check_password(self, password: str) -> bool:
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def audit_label(self) -> str:
        return self.email


def verify_dummy_password(password: str) -> None:
    """Spend the same time as a real check, so unknown emails are not revealed by timing."""
    try:
        _hasher.verify(_DUMMY_HASH, password)
    except VerificationError:
        pass


_DUMMY_HASH = _hasher.hash("not-a-real-password")
