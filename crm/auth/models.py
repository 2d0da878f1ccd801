import os
import secrets
from datetime import datetime

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask_login import UserMixin
from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from crm.audit import Audited
from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime

ROLES = ("admin", "staff", "treasurer")

# argon2-cffi's defaults (RFC 9106, 64 MiB): ~0.1 s a hash or check, on purpose. The test
# suite hashes thousands of passwords and sets CRM_TEST_CHEAP_PASSWORD_HASHES=1 for the
# library's profile meant for tests (still argon2id, a right or wrong password alike).
_hasher = (
    PasswordHasher.from_parameters(profiles.CHEAPEST)
    if os.environ.get("CRM_TEST_CHEAP_PASSWORD_HASHES") == "1"
    else PasswordHasher()
)


class User(Audited, UserMixin, db.Model):
    __tablename__ = "user"
    # Secrets and per-login bookkeeping are not history worth reading (or leaking).
    __audit_exclude__ = ("password_hash", "last_login_at", "session_version", "totp_secret")

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
    # Part of every session and "remember me" cookie; raising it ends them all
    # (logout, password change or reset, deactivation): see crm/auth/sessions.py.
    session_version: Mapped[int] = mapped_column(default=1, server_default="1")
    # The first admin's printed password, or one an admin typed in, is changed at login.
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Base32 TOTP secret once the user has set up a second factor.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # When the invitation to set a password was last sent (None: not invited by email).
    invited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users.
        return self.active

    def get_id(self) -> str:
        """`id:session_version:nonce`: what the session and the remember cookie hold.

        The nonce differs per login, so each login's remember cookie differs; the version
        must match the database's on every request (crm/database.py's user loader).
        """
        nonce = self.__dict__.get("login_nonce")
        if nonce is None:
            nonce = self.__dict__["login_nonce"] = secrets.token_urlsafe(12)
        return f"{self.id}:{self.session_version}:{nonce}"

    def end_sessions(self) -> None:
        """End every session and remember cookie of this user (on the next request)."""
        self.session_version = (self.session_version or 1) + 1

    def set_password(self, password: str) -> None:
        self.password_hash = _hasher.hash(password)

    def set_unusable_password(self) -> None:
        """A hash no password matches: the user sets one through an emailed link."""
        self.password_hash = "!" + secrets.token_urlsafe(32)

    @property
    def has_usable_password(self) -> bool:
        return not (self.password_hash or "!").startswith("!")

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


class SecuritySettings(Audited, db.Model):
    """Account rules an admin sets; one row."""

    __tablename__ = "security_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Admins and treasurers must use a second factor (TOTP) to log in.
    require_totp_for_privileged: Mapped[bool] = mapped_column(default=False)

    def audit_label(self) -> str:
        return "security settings"
