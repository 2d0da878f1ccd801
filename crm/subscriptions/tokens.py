"""Signed tokens for the public pages, one salt per purpose.

- confirmation links: expire (CONFIRM_MAX_AGE), name a pending signup and its nonce;
- unsubscribe/preferences links: long-lived, name a contact and its token version,
  so bumping `Subscriber.token_version` (erase, rotation) revokes every old link;
- the signup form's start time: proves the form came from us and how long it took
  to fill in (bots post at once).

A token from one purpose never passes as another: the salts differ.
"""

import functools
from dataclasses import dataclass

from flask import current_app
from itsdangerous import (
    BadData,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)

from crm.timeutil import utcnow

CONFIRM_SALT = "klynge.subscriptions.confirm"
LINK_SALT = "klynge.subscriptions.link"
FORM_SALT = "klynge.subscriptions.form-started"

CONFIRM_MAX_AGE = 3 * 24 * 3600
MAX_TOKEN_LENGTH = 400  # longer strings are not ours; refuse before any decoding


class TokenInvalid(Exception):
    """Tampered, truncated or for another purpose."""


class TokenExpired(TokenInvalid):
    """Genuine but too old."""


@dataclass(frozen=True)
class ConfirmClaim:
    pending_id: int
    nonce: str


@dataclass(frozen=True)
class LinkClaim:
    contact_id: int
    version: int


def _secret() -> str:
    return current_app.config["SECRET_KEY"]


def make_confirm_token(pending_id: int, nonce: str) -> str:
    return URLSafeTimedSerializer(_secret(), salt=CONFIRM_SALT).dumps([pending_id, nonce])


def read_confirm_token(token: str, max_age: int | None = None) -> ConfirmClaim:
    """The claim of a confirmation token; TokenExpired / TokenInvalid otherwise."""
    max_age = CONFIRM_MAX_AGE if max_age is None else max_age
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid
    serializer = URLSafeTimedSerializer(_secret(), salt=CONFIRM_SALT)
    try:
        payload = serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise TokenExpired from exc
    except (BadData, ValueError, TypeError) as exc:
        raise TokenInvalid from exc
    match payload:
        case [int(pending_id), str(nonce)]:
            return ConfirmClaim(pending_id, nonce)
    raise TokenInvalid


@functools.lru_cache(maxsize=4)
def _link_serializer(secret: str) -> URLSafeSerializer:
    # (newsletters) One serializer per secret: a newsletter batch makes 1,000 tokens, and
    # building a serializer for each doubled their cost.
    return URLSafeSerializer(secret, salt=LINK_SALT)


def make_link_token(contact_id: int, version: int) -> str:
    return _link_serializer(_secret()).dumps([contact_id, version])


def read_link_token(token: str) -> LinkClaim:
    """The claim of an unsubscribe/preferences token; TokenInvalid otherwise."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid
    try:
        payload = URLSafeSerializer(_secret(), salt=LINK_SALT).loads(token)
    except (BadData, ValueError, TypeError) as exc:
        raise TokenInvalid from exc
    match payload:
        case [int(contact_id), int(version)]:
            return LinkClaim(contact_id, version)
    raise TokenInvalid


def make_form_token() -> str:
    """The signed moment the signup form was rendered."""
    return TimestampSigner(_secret(), salt=FORM_SALT).sign(b"subscribe").decode()


def form_age_seconds(token: str | None) -> float | None:
    """Seconds since the form was rendered, or None for a missing or forged token."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    signer = TimestampSigner(_secret(), salt=FORM_SALT)
    try:
        value, signed_at = signer.unsign(token, return_timestamp=True)
    except (BadData, ValueError, TypeError):
        return None
    if value != b"subscribe":
        return None
    return (utcnow() - signed_at).total_seconds()
