"""User rules: creation, invitations, passwords, second factor, first admin. No commits here."""

import secrets
import unicodedata

from email_validator import EmailNotValidError
from flask import current_app, url_for

from crm.auth import tokens
from crm.auth.models import ROLES, SecuritySettings, User
from crm.extensions import db
from crm.members.normalize import normalize_email
from crm.timeutil import utcnow

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200
# Roles that may be required to use a second factor (SecuritySettings).
PRIVILEGED_ROLES = frozenset({"admin", "treasurer"})
TOTP_ISSUER = "Klynge"


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


# --- addresses -----------------------------------------------------------------------


def canonical_email(value: str) -> str:
    """The one normal form of a user's address, for login, throttling and uniqueness.

    NFKC first, so full-width letters (`ｋａｒｉ`), the full-width at sign and dots
    become their ASCII selves; then email-validator's normalisation (which also maps the
    ideographic full stop in domains) and lower case. Raises ValueError.
    """
    return normalize_email(unicodedata.normalize("NFKC", str(value or "")))


def throttle_key(value: str) -> str:
    """The address as the login throttle counts it: its normal form, also when invalid."""
    try:
        return canonical_email(value)
    except ValueError:
        text = unicodedata.normalize("NFKC", str(value or "")).strip().lower()
        return text.replace("\u3002", ".").replace("\uff61", ".")[:254]


def find_user(email: str) -> User | None:
    try:
        email = canonical_email(email)
    except (EmailNotValidError, ValueError):
        return None
    return db.session.scalar(db.select(User).where(User.email == email))


# --- creating users ------------------------------------------------------------------


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password must have at most {MAX_PASSWORD_LENGTH} characters")


def create_user(email: str, role: str, password: str | None = None, name: str = "") -> User:
    """Create a user. Without a password the user has none until they set one through
    the invitation (`invite_user`); nobody ever sees a password on screen."""
    try:
        email = canonical_email(email)
    except (EmailNotValidError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if find_user(email):
        raise UserError(f"a user with email {email} exists already")
    user = User(email=email, role=role, name=clean_name(name))
    if password is None:
        user.set_unusable_password()
    else:
        check_password_rules(password)
        user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


def clean_name(name: str | None) -> str:
    """A person's name as stored: one line of printable characters, at most 200."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(name or ""))
    return " ".join(text.split())[:200]


def invite_user(user: User, locale: str | None = None):
    """Queue the invitation email: a link (valid 7 days) to set one's own password."""
    from crm.mail.services import queue_email

    token = tokens.make_password_token(user, "invite")
    user.invited_at = utcnow()
    return queue_email(
        user.email,
        "auth/invitation",
        {
            "name": user.name,
            "link": _external("auth.set_password", purpose="invite", token=token),
            "valid_days": tokens.INVITE_MAX_AGE // 86400,
            "role": user.role,
        },
        to_name=user.name,
        category="account",
        locale=locale,
    )


def send_password_reset(user: User, locale: str | None = None):
    """Queue the reset email: a link (valid one hour, one use) to choose a new password."""
    from crm.mail.services import queue_email

    token = tokens.make_password_token(user, "reset")
    return queue_email(
        user.email,
        "auth/password_reset",
        {
            "name": user.name,
            "link": _external("auth.set_password", purpose="reset", token=token),
            "valid_minutes": tokens.RESET_MAX_AGE // 60,
        },
        to_name=user.name,
        category="account",
        locale=locale,
    )


def _external(endpoint: str, **values) -> str:
    """An absolute link under PUBLIC_BASE_URL (also from the CLI, with no request)."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    with current_app.test_request_context(base_url=base + "/"):
        return url_for(endpoint, _external=True, **values)


def ensure_first_admin(email: str | None, password: str | None) -> tuple | None:
    """Create the first admin when there is no user yet; (user, password) or None.

    A generated password is printed once, so it must be changed at the first login.
    """
    if db.session.scalar(db.select(db.func.count(User.id))):
        return None
    generated = password is None
    if generated:
        password = secrets.token_urlsafe(12)
    user = create_user(email or "admin@example.no", "admin", password)
    user.must_change_password = generated
    return user, password


# --- passwords -----------------------------------------------------------------------


def authenticate(email: str, password: str) -> User | None:
    from crm.auth.models import verify_dummy_password

    user = find_user(email)
    if user is None:
        verify_dummy_password(password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    return user


def record_login(user: User) -> None:
    user.last_login_at = utcnow()


def change_password(user: User, new_password: str) -> None:
    """Set a new password and end every session and remember cookie of the user."""
    check_password_rules(new_password)
    user.set_password(new_password)
    user.must_change_password = False
    user.end_sessions()


def deactivate(user: User) -> None:
    user.active = False
    user.end_sessions()


# --- second factor -------------------------------------------------------------------


def security_settings() -> SecuritySettings:
    settings = db.session.scalar(db.select(SecuritySettings).order_by(SecuritySettings.id))
    if settings is None:
        settings = SecuritySettings(require_totp_for_privileged=False)
        db.session.add(settings)
        db.session.flush()
    return settings


def totp_required(user: User) -> bool:
    """Must this user have a second factor (their role is required to by the settings)?"""
    if user.role not in PRIVILEGED_ROLES:
        return False
    settings = db.session.scalar(db.select(SecuritySettings).order_by(SecuritySettings.id))
    return bool(settings and settings.require_totp_for_privileged)


def new_totp_secret() -> str:
    import pyotp  # imported where used: only the second-factor pages need it

    return pyotp.random_base32()


def totp_uri(user: User, secret: str) -> str:
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)


def verify_totp(secret: str | None, code: str | None) -> bool:
    """A six-digit code from the authenticator app, one step of clock drift allowed."""
    code = "".join(str(code or "").split())
    if not secret or len(code) != 6 or not (code.isascii() and code.isdigit()):
        return False
    import pyotp

    return pyotp.TOTP(secret).verify(code, valid_window=1)


def enable_totp(user: User, secret: str) -> None:
    user.totp_secret = secret


def disable_totp(user: User) -> None:
    user.totp_secret = None
