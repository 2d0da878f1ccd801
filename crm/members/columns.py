"""The columns of the company and contact exports, which the imports read back.

One list per table, each column a key and the label people see as its header, so that
a file exported from a list (in Norwegian or English) imports again without losing a
column: the import knows every header by its key, in either language.
"""

from collections.abc import Iterable

from flask_babel import force_locale
from flask_babel import lazy_gettext as _l

from crm.i18n import LANGUAGES

COMPANY_COLUMNS = (
    ("orgnr", _l("Organisation number")),
    ("name", _l("Name")),
    ("org_form", _l("Organisation form")),
    ("nace_code", _l("Industry code")),
    ("nace_text", _l("Industry")),
    ("employees", _l("Employees")),
    ("municipality_number", _l("Municipality number")),
    ("municipality_name", _l("Municipality")),
    ("street_address", _l("Address")),
    ("postal_code", _l("Postal code")),
    ("postal_place", _l("Postal place")),
    ("website", _l("Website")),
    ("membership_status", _l("Membership")),
    ("member_since", _l("Member since")),
    ("resigned_on", _l("Resigned")),
    # Derived from the contacts: written for people, passed over by the import.
    ("primary_contact", _l("Primary contact")),
    ("primary_contact_email", _l("Primary contact email")),
    ("invoice_contact_email", _l("Invoice contact email")),
    ("registry_warnings", _l("Register warnings")),
    ("deleted_in_registry_on", _l("Deleted from the register on")),
    ("archived", _l("Archived")),
)
COMPANY_DERIVED = frozenset({"primary_contact", "primary_contact_email", "invoice_contact_email"})

CONTACT_COLUMNS = (
    ("first_name", _l("First name")),
    ("last_name", _l("Last name")),
    ("email", _l("Email")),
    ("phone", _l("Phone")),
    ("job_title", _l("Job title")),
    ("company", _l("Company")),
    ("orgnr", _l("Organisation number")),
    # The company's: written for people, passed over by the import.
    ("municipality", _l("Municipality")),
    ("roles", _l("Roles")),
    ("networks", _l("Networks")),
    ("status", _l("Status")),
    ("archived", _l("Archived")),
)
CONTACT_DERIVED = frozenset({"municipality"})


def headers(columns) -> list[str]:
    """The header row in the current language."""
    return [str(label) for _key, label in columns]


def in_every_language(labels: dict[str, object]) -> dict[str, str]:
    """{label as written in any UI language, casefolded: key} for labels keyed by code."""
    found: dict[str, str] = {}
    for code in LANGUAGES:
        with force_locale(code):
            for key, label in labels.items():
                found.setdefault(str(label).casefold(), key)
    return found


def header_aliases(columns: Iterable[tuple[str, object]]) -> dict[str, str]:
    """{header in any UI language, casefolded: column key}."""
    return in_every_language(dict((key, label) for key, label in columns))
