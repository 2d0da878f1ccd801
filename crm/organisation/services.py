"""The organisation's settings: read them (`get`), change them, and its logo file.

Functions change the session and never commit; the request that calls them does.
"""

import email.utils
import hashlib
from pathlib import Path

from flask import current_app, g, has_app_context, has_request_context, url_for
from flask_babel import gettext as _

from crm import cache
from crm.extensions import db
from crm.organisation.models import DEFAULT_NAME, Organisation

# The logo: a small raster image, recognised by its first bytes (not by its name or
# the browser's word). SVG is refused: it can carry script.
LOGO_TYPES = {
    b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
    b"\xff\xd8\xff": ("image/jpeg", "jpg"),
    b"GIF87a": ("image/gif", "gif"),
    b"GIF89a": ("image/gif", "gif"),
}
MAX_LOGO_BYTES = 512 * 1024


class OrganisationError(ValueError):
    """A change that cannot be made; the message is fit to show the admin."""


def _defaults() -> Organisation:
    return Organisation(
        id=1,
        name=DEFAULT_NAME,
        sender_name="",
        sender_email="",
        privacy_url="",
        footer_text="",
        logo_filename="",
        logo_content_type="",
        orgnr="",
        street_address="",
        postal_code="",
        postal_place="",
        email="",
    )


def get() -> Organisation:
    """The organisation's settings (defaults, not stored, until an admin saves them).

    A copy outside the session, from this process's cache (crm/cache.py): every page
    and every email asks, and they change once in a blue moon. Each request gets its
    own copy; change the settings through `for_update()`.
    """
    cached = g.get(_CACHE) if has_app_context() else None
    if cached is not None:
        return cached
    organisation = cache.detached_copy(cache.cached("organisation", _stored_or_defaults))
    if has_app_context():
        setattr(g, _CACHE, organisation)
    return organisation


def _stored_or_defaults() -> Organisation:
    organisation = db.session.get(Organisation, 1)
    return cache.detached_copy(organisation) if organisation is not None else _defaults()


_CACHE = "crm_organisation"


def for_update() -> Organisation:
    """The stored settings row, created on first save."""
    organisation = db.session.get(Organisation, 1)
    if organisation is None:
        organisation = _defaults()
        db.session.add(organisation)
        db.session.flush()
    if has_app_context():
        setattr(g, _CACHE, organisation)
    return organisation


def display_name(organisation: Organisation | None = None) -> str:
    return (organisation or get()).name or DEFAULT_NAME


def sender_header() -> str:
    """The From of every email: the organisation's sender, else the MAIL_FROM setting."""
    organisation = get()
    if organisation.sender_email:
        name = organisation.sender_name or display_name(organisation)
        return email.utils.formataddr((name, organisation.sender_email))
    return current_app.config.get("MAIL_FROM", "")


def invoice_email(organisation: Organisation | None = None) -> str:
    """Where members write about invoices: the organisation's email, else its sender."""
    organisation = organisation or get()
    return organisation.email or organisation.sender_email


# -- the logo ---------------------------------------------------------------------------


def logo_directory() -> Path:
    return Path(current_app.instance_path) / "branding"


def logo_path(organisation: Organisation | None = None) -> Path | None:
    """The logo file on disk, if there is one."""
    organisation = organisation or get()
    if not organisation.logo_filename:
        return None
    path = logo_directory() / organisation.logo_filename
    return path if path.is_file() else None


def logo_url(*, external: bool = False) -> str | None:
    """The logo's URL on our own host (absolute for emails), or None without a logo."""
    organisation = get()
    if not organisation.logo_filename:
        return None
    path = f"/organisation/logo/{organisation.logo_filename}"
    if external or not has_request_context():
        return current_app.config["PUBLIC_BASE_URL"] + path
    return url_for("organisation.logo", filename=organisation.logo_filename)


def logo_kind(data: bytes) -> tuple[str, str] | None:
    """(content type, file extension) of an accepted image, else None."""
    for magic, kind in LOGO_TYPES.items():
        if data.startswith(magic):
            return kind
    return None


def save_logo(data: bytes) -> None:
    """Store a new logo (PNG, JPEG or GIF, at most 512 kB) in place of the old one."""
    if not data:
        raise OrganisationError(_("Choose an image file."))
    if len(data) > MAX_LOGO_BYTES:
        raise OrganisationError(
            _("The logo is too large: at most %(kb)s kB.", kb=MAX_LOGO_BYTES // 1024)
        )
    kind = logo_kind(data)
    if kind is None:
        raise OrganisationError(_("The logo must be a PNG, JPEG or GIF image."))
    content_type, extension = kind
    directory = logo_directory()
    directory.mkdir(parents=True, exist_ok=True)
    filename = f"logo-{hashlib.sha256(data).hexdigest()[:16]}.{extension}"
    (directory / filename).write_bytes(data)
    organisation = for_update()
    old = organisation.logo_filename
    organisation.logo_filename = filename
    organisation.logo_content_type = content_type
    if old and old != filename:
        (directory / old).unlink(missing_ok=True)


def remove_logo() -> None:
    organisation = for_update()
    if organisation.logo_filename:
        (logo_directory() / organisation.logo_filename).unlink(missing_ok=True)
    organisation.logo_filename = ""
    organisation.logo_content_type = ""
