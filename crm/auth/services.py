"""User rules: creation, first admin, login bookkeeping. No commits here."""

import secrets

from email_validator import EmailNotValidError

from crm.auth.models import ROLES, User
from crm.extensions import db
from crm.members.normalize import normalize_email
from crm.timeutil import utcnow

MIN_PASSWORD_LENGTH = 10


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


def find_user(email: str) -> User | None:
    try:
        email = normalize_email(email)
    except (EmailNotValidError, ValueError):
        return None
    return db.session.scalar(db.select(User).where(User.email == email))


def create_user(email: str, role: str, password: str | None = None, name: str = "") -> tuple:
    """Create a user; returns (user, password). A password is generated when none is given."""
    try:
        email = normalize_email(email)
    except (EmailNotValidError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if find_user(email):
        raise UserError(f"a user with email {email} exists already")
    if password is None:
        password = secrets.token_urlsafe(12)
    elif len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = User(email=email, role=role, name=name.strip()[:200])
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user, password


def ensure_first_admin(email: str | None, password: str | None) -> tuple | None:
    """Create the first admin when there is no user yet; (user, password) or None."""
    if db.session.scalar(db.select(db.func.count(User.id))):
        return None
    return create_user(email or "admin@example.no", "admin", password)


def authenticate(email: str, password: str) -> User | None:
    from crm.auth.models import verify_dummy_password

    user = find_user(email)
    if user is None:
        verify_dummy_password(password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    user.last_login_at = utcnow()
    return user
