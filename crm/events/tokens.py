"""The personal link in every registration email: names a registration and its token
version, so bumping `Registration.token_version` revokes every link sent before."""

from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from crm.subscriptions.tokens import MAX_TOKEN_LENGTH, TokenInvalid

REGISTRATION_SALT = "klynge.events.registration"
CERTIFICATE_SALT = "klynge.events.certificate"


@dataclass(frozen=True)
class RegistrationClaim:
    registration_id: int
    version: int


def _serializer(salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt)


def make_registration_token(registration_id: int, version: int) -> str:
    return _serializer(REGISTRATION_SALT).dumps([registration_id, version])


def read_registration_token(token: str) -> RegistrationClaim:
    """The claim of a registration link; TokenInvalid for anything else."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid
    try:
        payload = _serializer(REGISTRATION_SALT).loads(token)
    except (BadData, ValueError, TypeError) as exc:
        raise TokenInvalid from exc
    match payload:
        case [int(registration_id), int(version)]:
            return RegistrationClaim(registration_id, version)
    raise TokenInvalid
