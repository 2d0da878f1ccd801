"""Login throttling that slows guessing down without letting anyone lock a user out.

Only failed attempts count, in Redis, over a short window (`WINDOW_SECONDS`):

- per (address, IP): `SOURCE_LIMIT` failures. One attacker IP cannot guess much, and
  blocking that pair does not touch the real user, who is somewhere else.
- per address from everywhere: `ADDRESS_LIMIT` failures, a higher bound, against
  guessing from many IPs. An attacker can exhaust it on purpose, which is why it
  does not apply to a browser that has logged in to this account before:
- a *device cookie* (signed, set at each successful login, per account) exempts that
  browser from the per-address bound; its own failures are counted per device
  (`SOURCE_LIMIT`), so a stolen device cookie buys no more guesses than one IP.

So the real user's usual browser always gets in with the right password, whatever an
attacker does elsewhere; a new browser can wait out the short window or reset the
password by email (a reset clears the address's counters). The per-IP limit of the
login route (Flask-Limiter) stays on top of this.

The address is counted in its normal form (NFKC, lower case: `canonical_email`), so
`ＫＡＲＩ@example.no` or `kari@example。no` share `kari@example.no`'s counters.
"""

import hashlib
import secrets

from flask import current_app, request
from itsdangerous import BadData, URLSafeTimedSerializer
from redis.exceptions import RedisError

from crm.queue import get_redis

WINDOW_SECONDS = 15 * 60
SOURCE_LIMIT = 8
ADDRESS_LIMIT = 30
DEVICE_COOKIE = "klynge_device"
DEVICE_SALT = "klynge.auth.device"
DEVICE_MAX_AGE = 180 * 24 * 3600


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def _enabled() -> bool:
    return bool(current_app.config.get("RATELIMIT_ENABLED", True))


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=DEVICE_SALT)


def device_for(address_key: str) -> str | None:
    """This browser's device id for the account `address_key`, if it logged in before."""
    token = request.cookies.get(DEVICE_COOKIE, "")
    if not token or len(token) > 300:
        return None
    try:
        payload = _device_serializer().loads(token, max_age=DEVICE_MAX_AGE)
    except (BadData, ValueError, TypeError):
        return None
    match payload:
        case [str(account), str(device)] if account == _digest(address_key):
            return device
    return None


def remember_device(response, address_key: str) -> None:
    """Set the device cookie for this account after a successful login."""
    token = _device_serializer().dumps([_digest(address_key), secrets.token_urlsafe(12)])
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=DEVICE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure or current_app.config.get("SESSION_COOKIE_SECURE", False),
    )


def _keys(address_key: str, ip: str | None, device: str | None) -> list[tuple[str, int]]:
    account = _digest(address_key)
    if device:
        return [(f"klynge:login-fail:device:{account}:{_digest(device)}", SOURCE_LIMIT)]
    return [
        (f"klynge:login-fail:source:{account}:{_digest(ip or '-')}", SOURCE_LIMIT),
        (f"klynge:login-fail:address:{account}", ADDRESS_LIMIT),
    ]


def is_blocked(address_key: str, ip: str | None, device: str | None) -> bool:
    """True when this address may not be tried from here right now."""
    if not _enabled():
        return False
    keys = _keys(address_key, ip, device)
    try:
        counts = get_redis().mget([key for key, _ in keys])
    except RedisError:
        current_app.logger.warning("login throttle: Redis unavailable")
        return False
    return any(int(count or 0) >= limit for count, (_, limit) in zip(counts, keys, strict=True))


def record_failure(address_key: str, ip: str | None, device: str | None) -> None:
    if not _enabled():
        return
    try:
        pipe = get_redis().pipeline()
        for key, _ in _keys(address_key, ip, device):
            # The window starts at the first failure (SET NX; INCR keeps the expiry).
            pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)
            pipe.incr(key)
        pipe.execute()
    except RedisError:
        current_app.logger.warning("login throttle: Redis unavailable")


def clear(address_key: str, ip: str | None = None) -> None:
    """Forget the address's failures (after a password reset), or one source's (login)."""
    account = _digest(address_key)
    try:
        if ip is None:
            redis = get_redis()
            keys = list(redis.scan_iter(f"klynge:login-fail:*:{account}*", count=500))
            if keys:
                redis.delete(*keys)
        else:
            get_redis().delete(f"klynge:login-fail:source:{account}:{_digest(ip)}")
    except RedisError:
        current_app.logger.warning("login throttle: Redis unavailable")
