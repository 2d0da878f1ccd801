"""Security headers and the session cookie's Secure flag."""

from flask import request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'"
)


class SessionInterface(SecureCookieSessionInterface):
    """Marks the cookie Secure whenever the request itself came over HTTPS, and keeps
    one signing serializer per key: Flask builds a new one for every request (a test
    serialisation included), even for a visitor who sends no session cookie."""

    def __init__(self) -> None:
        self._serializers: dict[tuple, URLSafeTimedSerializer | None] = {}

    def get_cookie_secure(self, app) -> bool:
        return super().get_cookie_secure(app) or request.is_secure

    def get_signing_serializer(self, app) -> URLSafeTimedSerializer | None:
        key = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        serializer = self._serializers.get(key)
        if serializer is None:
            serializer = self._serializers[key] = super().get_signing_serializer(app)
        return serializer


def set_security_headers(response):
    headers = response.headers
    # The names the view set itself, read once: werkzeug's `setdefault` and `in` walk
    # every header, and raise and catch an exception inside when the name is absent
    # (three quarters of this function's time, on every response).
    present = {key.lower() for key, _ in headers}

    def default(name: str, value: str) -> None:
        if name.lower() not in present:
            headers.add(name, value)

    # Pages meant to be embedded (the public signup form) set their own frame policy.
    frame_ancestors = getattr(response, "frame_ancestors", "'none'")
    default("Content-Security-Policy", f"{CSP}; frame-ancestors {frame_ancestors}")
    default("X-Content-Type-Options", "nosniff")
    default("Referrer-Policy", "same-origin")
    if frame_ancestors == "'none'":
        default("X-Frame-Options", "DENY")
    if request.is_secure:
        default("Strict-Transport-Security", "max-age=31536000")
    if "cache-control" not in present and _shows_personal_data():
        # Staff pages, and public pages opened by a personal link, carry personal data:
        # no copy in the browser's or a proxy's cache (the back button on a shared
        # computer after logout shows nothing). A view that chose its own caching (the
        # organisation's logo) keeps it.
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    return response


# Public pages whose link is a person's key (a registration, preferences, unsubscribe,
# invitation or certificate link) show that person's name, address or choices.
PERSONAL_LINK_ARGS = ("token", "code")
PERSONAL_QUERY_ARGS = ("invitasjon",)


def _shows_personal_data() -> bool:
    from flask_login import current_user

    if request.endpoint in (None, "static"):
        return False
    view_args = request.view_args or {}
    if any(name in view_args for name in PERSONAL_LINK_ARGS):
        return True
    if any(name in request.args for name in PERSONAL_QUERY_ARGS):
        return True
    return bool(current_user and current_user.is_authenticated)


def init_app(app) -> None:
    app.session_interface = SessionInterface()
    app.after_request(set_security_headers)
