"""Template helpers shared by every page: the menu and human labels."""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime

from flask import current_app, request
from flask_babel import lazy_gettext as _l

from crm.auth.permissions import can
from crm.i18n import format_date, format_datetime, format_money

# (endpoint, label, permission): shown when the endpoint exists and the user may see it.
NAV_ITEMS = (
    ("home.overview", _l("Home"), "home.view"),
    ("members.company_list", _l("Companies"), "members.view"),
    ("members.contact_list", _l("Contacts"), "members.view"),
    ("members.network_list", _l("Networks"), "members.view"),
    ("followups.followup_list", _l("Follow-ups"), "members.view"),
    ("events.event_list", _l("Events"), "events.view"),
    ("newsletters.newsletter_list", _l("Newsletters"), "newsletters.view"),
    ("mail.message_list", _l("Email log"), "newsletters.view"),
    ("reports.index", _l("Results"), "reports.view"),
    ("fees.dashboard", _l("Fees"), "fees.view"),
    ("admin.user_list", _l("Admin"), "users.manage"),
)

AUDIT_ACTIONS = {"create": _l("Created"), "update": _l("Changed"), "delete": _l("Deleted")}
# Who made a change when it was not a staff user (crm.audit.current_actor's words).
AUDIT_ACTORS = {
    "public": _l("A visitor on a public page"),
    "system": _l("The system"),
    "cli": _l("Command line"),
    "setup": _l("Setup"),
}

# Field names as users know them; unknown fields are shown as they are. A key
# "table.field" names a field of one table only and wins over the plain field name.
FIELD_LABELS = {
    "name": _l("Name"),
    "orgnr": _l("Organisation number"),
    "org_form_code": _l("Organisation form code"),
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
    "forced_dissolution": _l("Forced dissolution"),
    "parent_orgnr": _l("Main unit"),
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
    # Membership fees (crm/fees/models.py). Fields named *_ore hold øre: shown as money.
    "number": _l("Number"),
    "invoice.number": _l("Invoice number"),
    "credit_note.number": _l("Credit note number"),
    "year": _l("Year"),
    "kid": _l("KID"),
    "amount_ore": _l("Amount"),
    "issue_date": _l("Invoice date"),
    "credit_note.issue_date": _l("Date"),
    "due_date": _l("Due date"),
    "pricing_note": _l("Price basis"),
    "customer_name": _l("Customer"),
    "customer_orgnr": _l("Customer's organisation number"),
    "customer_address": _l("Customer's address"),
    "customer_postal_code": _l("Customer's postal code"),
    "customer_postal_place": _l("Customer's postal place"),
    "customer_email": _l("Customer's email"),
    "membership_year": _l("Membership year"),
    "net_ore": _l("Net amount"),
    "vat_ore": _l("VAT"),
    "pro_rata": _l("Members joining during the year pay"),
    "account_receivable": _l("Accounts receivable"),
    "account_bank": _l("Bank"),
    "account_output_vat": _l("Output VAT"),
    "account_income_vat": _l("Income with VAT"),
    "account_income_no_vat": _l("Income without VAT (membership fees)"),
    "account_reminder_fees": _l("Reminder fees"),
    "account_losses": _l("Losses on receivables"),
    "status": _l("Status"),
    "paid_ore": _l("Paid"),
    "written_off_ore": _l("Written off"),
    "credited_ore": _l("Credited"),
    "fees_ore": _l("Reminder fees"),
    "fees_cancelled_ore": _l("Reminder fees cancelled"),
    "sent_at": _l("Sent"),
    "send_count": _l("Times sent"),
    "invoice_id": _l("Invoice"),
    "reason": _l("Reason"),
    "cluster_name": _l("Cluster name"),
    "bank_account": _l("Bank account"),
    "next_invoice_number": _l("Next invoice number"),
    "kid_length": _l("KID length"),
    "kid_scheme": _l("KID check digit"),
    "due_days": _l("Days to pay"),
    "reminder_fee_ore": _l("Reminder fee"),
    "schedule_id": _l("Fee schedule"),
    "min_employees": _l("From employees"),
    "max_employees": _l("To employees"),
    "discount_percent": _l("Discount (%)"),
    "source": _l("Source"),
    "paid_on": _l("Paid on"),
    "booked_on": _l("Booked"),
    "transaction_number": _l("Transaction number"),
    "archive_reference": _l("Archive reference"),
    "payer_account": _l("Payer's account"),
    "note": _l("Note"),
    "ocr_import_id": _l("Payment file"),
    "payment_id": _l("Payment"),
    "state": _l("State"),
    "text": _l("Text"),
    "handled_note": _l("What was done"),
    "handled_at": _l("Handled"),
    "level": _l("Level"),
    "sent_on": _l("Sent"),
    "new_due_date": _l("New due date"),
    "fee_ore": _l("Fee"),
}

# Stored codes in words, per (table, field): each area adds its own in init_app
# (the fees area: an invoice's status, a payment's kind).
VALUE_LABELS: dict[tuple[str, str], Callable[[str], str]] = {}

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def field_label(field: str, record_type: str = ""):
    """The label of a logged field: "table.field" first, then the plain field name."""
    return FIELD_LABELS.get(f"{record_type}.{field}") or FIELD_LABELS.get(field, field)


def _date_or_time(value: str):
    """Dates and times the audit log stored as ISO text, shown as dd.mm.yyyy [HH:MM]."""
    try:
        if _ISO_DATE.fullmatch(value):
            return format_date(date.fromisoformat(value))
        if _ISO_DATETIME.match(value):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:  # times are stored in UTC
                moment = moment.replace(tzinfo=UTC)
            return format_datetime(moment)
    except ValueError:
        pass
    return value


def audit_value(value, field: str = "", record_type: str = ""):
    """A logged value as people read it: yes/no for booleans, a dash for nothing,
    money for øre, dd.mm.yyyy for dates, words for the codes an area registered."""
    if value is None or value == "":
        return "—"
    if value is True:
        return _l("Yes")
    if value is False:
        return _l("No")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, int) and field.endswith("_ore"):
        return format_money(value, ore=True)
    if isinstance(value, str):
        label = VALUE_LABELS.get((record_type, field))
        return label(value) if label else _date_or_time(value)
    return value


def audit_rows(entry) -> list[tuple]:
    """An audit entry's changes as (label, old, new) for display, in the order of the
    table's columns (the model's own order), other fields after them by name."""
    from crm.extensions import db

    table = db.metadata.tables.get(entry.record_type)
    columns = list(table.columns.keys()) if table is not None else []

    def position(field: str) -> tuple[int, str]:
        return (columns.index(field) if field in columns else len(columns), field)

    def shown(value, field: str):
        if isinstance(value, int) and not isinstance(value, bool) and field in columns:
            label = _referenced_label(table.c[field], value)
            if label is not None:
                return label
        return audit_value(value, field, entry.record_type)

    rows = []
    for field in sorted(entry.changes or {}, key=position):
        old, new = entry.changes[field]
        rows.append((field_label(field, entry.record_type), shown(old, field), shown(new, field)))
    return rows


def _referenced_label(column, value: int) -> str | None:
    """For a foreign key column: the referenced record's label (the company's name, not
    its id), or "#id" when that record is gone. None for other columns."""
    from crm.extensions import db

    foreign_key = next(iter(column.foreign_keys), None)
    if foreign_key is None:
        return None
    target = foreign_key.column.table
    model = next((m.class_ for m in db.Model.registry.mappers if m.local_table is target), None)
    record = db.session.get(model, value) if model is not None else None
    if record is None or not hasattr(record, "audit_label"):
        return f"#{value}"
    return record.audit_label()


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
        audit_actor_label=lambda actor: AUDIT_ACTORS.get(actor, actor),
        field_label=field_label,
        audit_rows=audit_rows,
    )
    app.jinja_env.filters["audit_value"] = audit_value
