"""Template helpers shared by every page: the menu and human labels."""

from flask import current_app, request
from flask_babel import lazy_gettext as _l

from crm.auth.permissions import can

# (endpoint, label, permission): shown when the endpoint exists and the user may see it.
NAV_ITEMS = (
    ("members.company_list", _l("Companies"), "members.view"),
    ("members.contact_list", _l("Contacts"), "members.view"),
    ("members.network_list", _l("Networks"), "members.view"),
    ("newsletters.newsletter_list", _l("Newsletters"), "newsletters.view"),
    ("mail.message_list", _l("Email log"), "newsletters.view"),
    ("fees.dashboard", _l("Fees"), "fees.view"),
    ("admin.user_list", _l("Admin"), "users.manage"),
)

AUDIT_ACTIONS = {"create": _l("Created"), "update": _l("Changed"), "delete": _l("Deleted")}

# Field names as users know them; unknown fields are shown as they are.
FIELD_LABELS = {
    "name": _l("Name"),
    "orgnr": _l("Organisation number"),
    "org_form_code": _l("Organisation form"),
    "org_form_name": _l("Organisation form"),
    "nace_code": _l("Industry code"),
    "nace_text": _l("Industry"),
    "employees": _l("Employees"),
    "municipality_number": _l("Municipality number"),
    "municipality_name": _l("Municipality"),
    "street_address": _l("Address"),
    "postal_code": _l("Postal code"),
    "postal_place": _l("Postal place"),
    "website": _l("Website"),
    "membership_status": _l("Membership"),
    "member_since": _l("Member since"),
    "resigned_on": _l("Resigned"),
    "notes": _l("Notes"),
    "bankrupt": _l("Bankrupt"),
    "winding_up": _l("Being wound up"),
    "deleted_in_registry_on": _l("Deleted from the register"),
    "archived_at": _l("Archived"),
    "first_name": _l("First name"),
    "last_name": _l("Last name"),
    "email": _l("Email"),
    "phone": _l("Phone"),
    "job_title": _l("Job title"),
    "company_id": _l("Company"),
    "is_primary_contact": _l("Primary contact"),
    "is_invoice_contact": _l("Invoice contact"),
    "is_board_representative": _l("Board representative"),
    "active": _l("Active"),
    "networks": _l("Networks"),
    "merged_into_id": _l("Merged into"),
    "role": _l("Role"),
    "description": _l("Description"),
    "kind": _l("Type"),
    "occurred_on": _l("Date"),
    "summary": _l("Summary"),
    "details": _l("Details"),
}


def audit_value(value):
    """A logged value as people read it: yes/no for booleans, a dash for nothing."""
    if value is None or value == "":
        return "—"
    if value is True:
        return _l("Yes")
    if value is False:
        return _l("No")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return value


# Query keys url_for would take as its own options (a crafted `?_scheme=` is a 500),
# and the live-search flag that must not leak into links.
_RESERVED_ARGS = frozenset({"endpoint", "values", "partial"})


def list_args(**overrides) -> dict:
    """The current query string for links to other pages/sorts of the same list."""
    args = {
        key: values
        for key, values in request.args.to_dict(flat=False).items()
        if not key.startswith("_") and key not in _RESERVED_ARGS
    }
    args.update(overrides)
    return args


def nav_items():
    return [
        (endpoint, label, permission)
        for endpoint, label, permission in NAV_ITEMS
        if endpoint in current_app.view_functions and can(permission)
    ]


def init_app(app) -> None:
    app.jinja_env.globals.update(
        nav_items=nav_items,
        list_args=list_args,
        can=can,
        audit_action_label=lambda action: AUDIT_ACTIONS.get(action, action),
        field_label=lambda field: FIELD_LABELS.get(field, field),
    )
    app.jinja_env.filters["audit_value"] = audit_value
