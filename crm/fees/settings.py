"""Fee settings and the one number series invoices and credit notes share.

Like the rest of the fee services: changes the session and flushes, never commits.
"""

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.errors import FeeError
from crm.fees.models import (
    CreditNote,
    FeeSettings,
    Invoice,
)
from crm.organisation import services as organisation

SETTINGS_ID = 1

# --- settings -------------------------------------------------------------------------


def get_settings() -> FeeSettings:
    """The fee settings row, created with defaults the first time it is asked for."""
    settings = db.session.get(FeeSettings, SETTINGS_ID)
    if settings is None:
        settings = FeeSettings(id=SETTINGS_ID)
        db.session.add(settings)
        db.session.flush()
    return settings


def settings_problems(settings: FeeSettings) -> list[str]:
    """What must be filled in before invoices can be issued."""
    problems = []
    seller = organisation.get()
    if not seller.name:
        problems.append(_("The organisation's name is missing in its settings (Admin)."))
    if not seller.orgnr:
        problems.append(
            _("The organisation number is missing in the organisation's settings (Admin).")
        )
    if not settings.bank_account:
        problems.append(_("The bank account is missing in the fee settings."))
    return problems


# --- the number series ----------------------------------------------------------------


def allocate_number(settings: FeeSettings) -> tuple[int, str]:
    """The next invoice number and its KID; MOD11 numbers without a KID are skipped."""
    try:
        number, kid = kidlib.next_kid(
            settings.next_invoice_number, settings.kid_length, settings.kid_scheme
        )
    except kidlib.KidError as exc:
        raise FeeError(
            _("Invoice numbers no longer fit in the KID length; make the KID longer.")
        ) from exc
    # Written with a plain UPDATE and set on the object as already saved: taking a
    # number is not a change of the settings, and the audit log (settings history)
    # records only what a person changes. Every invoice and credit note it numbers is
    # in the audit log itself.
    db.session.execute(
        update(FeeSettings)
        .where(FeeSettings.id == settings.id)
        .values(next_invoice_number=number + 1)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(settings, "next_invoice_number", number + 1)
    return number, kid


def highest_used_number() -> int:
    """The highest number taken in the one series invoices and credit notes share."""
    invoices = db.session.scalar(select(func.max(Invoice.number))) or 0
    notes = db.session.scalar(select(func.max(CreditNote.number))) or 0
    return max(invoices, notes)


def _locked_settings() -> FeeSettings:
    # On PostgreSQL two annual runs at once would otherwise hand out the same numbers
    # (the unique constraints would then refuse one of them at commit).
    settings = get_settings()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.refresh(settings, with_for_update=True)
    return settings
