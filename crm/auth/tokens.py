"""Signed links for setting a password: a reset asked for at the login page, or the
invitation a new user gets.

A token names the user and a fingerprint of their current password hash. Setting a
password changes the hash, so a link works once; it also expires (`RESET_MAX_AGE`,
`INVITE_MAX_AGE`). The two purposes have their own salts: one never passes as the other.
"""

import hashlib
from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from crm.auth.models import User
from crm.extensions import db
from crm.urls import MAX_ID

RESET_MAX_AGE = 3600
INVITE_MAX_AGE = 7 * 24 * 3600
SALTS = {"reset": "klynge.auth.password-reset", "invite": "klynge.auth.invitation"}
MAX_AGES = {"reset": RESET_MAX_AGE, "invite": INVITE_MAX_AGE}
MAX_TOKEN_LENGTH = 300


class LinkInvalid(Exception):
    """Tampered, for another purpose, already used, or for a deactivated user."""


class LinkExpired(LinkInvalid):
    """Genuine but too old."""


@dataclass(frozen=True)
class PasswordLink:
    user: User
    purpose: str


def _fingerprint(user: User) -> str:
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:20]


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALTS[purpose])


def make_password_token(user: User, purpose: str = "reset") -> str:
    """A link token for `user` to set a password (`reset` or `invite`)."""
    return _serializer(purpose).dumps([user.id, _fingerprint(user)])


def read_password_token(token: str, purpose: str) -> PasswordLink:
    """The user a still-valid token names; LinkExpired / LinkInvalid otherwise."""
    if purpose not in SALTS or not token or len(token) > MAX_TOKEN_LENGTH:
        raise LinkInvalid
    try:
        payload = _serializer(purpose).loads(token, max_age=MAX_AGES[purpose])
    except SignatureExpired as exc:
        raise LinkExpired from exc
    except (BadData, ValueError, TypeError) as exc:
        raise LinkInvalid from exc
    match payload:
        case [int(user_id), str(fingerprint)] if 0 < user_id <= MAX_ID:
            user = db.session.get(User, user_id)
            if user is not None and user.active and _fingerprint(user) == fingerprint:
                return PasswordLink(user, purpose)
    raise LinkInvalid
