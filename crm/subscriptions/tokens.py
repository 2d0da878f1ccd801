"""Signed tokens for the public pages, one salt per purpose.

- confirmation links: expire (CONFIRM_MAX_AGE), name a pending signup and its nonce;
- unsubscribe/preferences links: long-lived, name a contact and its token version,
  so bumping `Subscriber.token_version` (erase, rotation) revokes every old link;
  a network mail's link also names the network whose mail it stops;
- the signup form's start time: proves the form came from us and how long it took
  to fill in (bots post at once); it expires (FORM_MAX_AGE) and starts one signup only
  (the pending signup stores its digest under a unique index).

A token from one purpose never passes as another: the salts differ.
"""

import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from flask import current_app
from itsdangerous import (
    BadData,
    Serializer,
    SignatureExpired,
    Signer,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode, want_bytes

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
    # Set in the links of network mail: unsubscribing objects to this network's mail.
    network_id: int | None = None


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


class _KeyOnceSigner(Signer):
    """A Signer that derives each of its keys once, not for every signature or check
    (itsdangerous derives the key anew each time: a checked signature names its secret
    key, so a cache of the key for "no secret key named" alone never served a check)."""

    @functools.cached_property
    def _keys(self) -> dict[bytes, bytes]:
        return {}

    def derive_key(self, secret_key=None) -> bytes:
        secret = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        key = self._keys.get(secret)
        if key is None:
            key = self._keys[secret] = super().derive_key(secret)
        return key


class _LinkSerializer(URLSafeSerializer):
    """URLSafeSerializer made for signing many link tokens fast (a newsletter batch
    makes 1,000). The tokens are the same, and reading them is unchanged.

    - No zlib attempt: `[contact_id, version]` is a dozen bytes that compression does
      not shorten, and trying was 60 % of a token's cost (`loads` accepts both forms).
    - One signer, deriving its key once, instead of a new signer and key per token.
    """

    def __init__(self, secret: str, salt: str):
        super().__init__(secret, salt=salt, signer=_KeyOnceSigner)
        self._signer = super().make_signer()

    def make_signer(self, salt=None) -> Signer:
        return self._signer if salt is None else super().make_signer(salt)

    def dump_payload(self, obj) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


@functools.lru_cache(maxsize=4)
def _link_serializer(secret: str) -> URLSafeSerializer:
    # One serializer per secret, not one per token.
    return _LinkSerializer(secret, salt=LINK_SALT)


def make_link_token(contact_id: int, version: int) -> str:
    return make_link_tokens([(contact_id, version)])[0]


@functools.lru_cache(maxsize=4)
def _link_mac(secret: str) -> hmac.HMAC:
    """The HMAC of the derived key with nothing signed yet: each token signs a copy of
    it. Copying keeps the key's two padded blocks hashed once (`hmac.digest` hashes
    them again for every token): 1,000 tokens take 0.9 ms instead of 1.3."""
    signer = _link_serializer(secret).make_signer()
    # By name, OpenSSL's HMAC (a hash constructor goes the slow way, in Python).
    return hmac.new(signer.derive_key(), digestmod=signer.digest_method().name)


def make_link_tokens(claims: Iterable[tuple[int, ...]]) -> list[str]:
    """A token for each (contact_id, version) or (contact_id, version, network_id),
    signed with one lookup of the secret.

    The same bytes `_LinkSerializer.dumps` makes (compact JSON, URL-safe base64, an
    HMAC of it under the derived key), spelt out: a newsletter batch signs 1,000, and
    itsdangerous's layers of calls were three quarters of a token's cost.
    """
    return _sign_links(_secret(), claims)


# itsdangerous's URL-safe base64 without padding, in one C call and a translate.
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _sign_links(secret: str, claims: Iterable[tuple[int, ...]]) -> list[str]:
    unsigned = _link_mac(secret)
    tokens = []
    for claim in claims:
        payload = _b64(("[" + ",".join([str(int(n)) for n in claim]) + "]").encode())
        mac = unsigned.copy()
        mac.update(payload)
        tokens.append((payload + b"." + _b64(mac.digest())).decode())
    return tokens


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
        case [int(contact_id), int(version), int(network_id)]:
            return LinkClaim(contact_id, version, network_id)
    raise TokenInvalid


FORM_MAX_AGE = 24 * 3600  # a signup form older than a day is not submitted by a person


class _FormSigner(TimestampSigner, _KeyOnceSigner):
    """TimestampSigner deriving its key once."""


@functools.lru_cache(maxsize=4)
def _form_signer(secret: str) -> TimestampSigner:
    # One per secret: every signup posts a token to check, every form shown signs one.
    return _FormSigner(secret, salt=FORM_SALT)


def make_form_token() -> str:
    """The signed moment the signup form was rendered, with a nonce: usable once."""
    value = f"subscribe.{secrets.token_urlsafe(9)}".encode()
    return _form_signer(_secret()).sign(value).decode()


def form_age_seconds(token: str | None) -> float | None:
    """Seconds since the form was rendered, or None for a missing or forged token."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        value, signed_at = _form_signer(_secret()).unsign(token, return_timestamp=True)
    except (BadData, ValueError, TypeError):
        return None
    if not value.startswith(b"subscribe.") or len(value) > 40:
        return None
    return (utcnow() - signed_at).total_seconds()


def fresh_form_age(token: str | None) -> float | None:
    """The age of a genuine form token that has not expired; None otherwise."""
    age = form_age_seconds(token)
    if age is None or age > FORM_MAX_AGE:
        return None
    return age


def form_token_digest(token: str) -> str:
    """What a pending signup stores of the form token that started it: its unique index
    lets a token start one signup only (a bot posting one token again and again, or the
    browser resending the POST, starts nothing new)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]
