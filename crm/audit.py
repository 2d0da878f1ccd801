"""One mechanism that records every change to audited records.

Models opt in by inheriting `Audited`. A session listener writes one AuditEntry per
created, updated or deleted row, with field-level old → new values, inside the same
transaction as the change itself. Views and services never write audit rows by hand.
"""

import contextvars
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal

from flask import has_request_context
from flask_login import current_user
from sqlalchemy import JSON, ForeignKey, Index, String, event, insert, inspect
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from crm import bulk
from crm.extensions import db
from crm.timeutil import utcnow
from crm.types import UTCDateTime


class Audited:
    """Mixin: changes to this model are written to the audit log.

    `__audit_exclude__` names columns never logged (e.g. password hashes, search keys).
    """

    __audit_exclude__: tuple[str, ...] = ()

    def audit_label(self) -> str:
        return str(getattr(self, "name", None) or getattr(self, "email", None) or self.id)


class AuditEntry(db.Model):
    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_record", "record_type", "record_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(10))  # create | update | delete
    record_type: Mapped[str] = mapped_column(String(50))
    record_id: Mapped[int] = mapped_column()
    record_label: Mapped[str] = mapped_column(String(300), default="")
    changes: Mapped[dict] = mapped_column(JSON, default=dict)

    user = relationship("User", foreign_keys=[user_id])


_actor: contextvars.ContextVar[tuple[int | None, str] | None] = contextvars.ContextVar(
    "audit_actor", default=None
)


@contextmanager
def acting_as(label: str, user=None) -> Iterator[None]:
    """Attribute changes made inside the block to `user` (or a label like 'import')."""
    token = _actor.set((user.id if user is not None else None, label))
    try:
        yield
    finally:
        _actor.reset(token)


@event.listens_for(Audited, "mapper_configured", propagate=True)
def _load_old_values_on_set(mapper, cls) -> None:
    # Without active history, setting an expired attribute (e.g. after a commit) does
    # not load the old value, and the log would show "None → new".
    for attr in mapper.column_attrs:
        event.listen(getattr(cls, attr.key), "set", _noop_set, active_history=True)


def _noop_set(target, value, oldvalue, initiator):
    return value


def current_actor() -> tuple[int | None, str]:
    explicit = _actor.get()
    if explicit is not None:
        return explicit
    if has_request_context() and current_user and current_user.is_authenticated:
        return current_user.id, current_user.email
    if has_request_context():
        return None, "public"
    return None, "system"


def _plain(value):
    """A JSON-safe rendering of a column or relationship value."""
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple | set):
        return sorted(str(_plain(v)) for v in value)
    if isinstance(value, Audited):
        return value.audit_label()
    return str(value)


def _field_changes(obj, only_changed: bool) -> dict:
    state = inspect(obj)
    changes = {}
    excluded = set(obj.__audit_exclude__)
    for attr in state.mapper.column_attrs:
        if attr.key in excluded or attr.key == "id":
            continue
        history = state.attrs[attr.key].history
        if only_changed:
            if not history.has_changes():
                continue
            old = history.deleted[0] if history.deleted else None
            new = history.added[0] if history.added else None
            if _plain(old) == _plain(new):
                continue
            changes[attr.key] = [_plain(old), _plain(new)]
        else:
            value = getattr(obj, attr.key)
            if value is not None and value != "":
                changes[attr.key] = [None, _plain(value)]
    for rel in state.mapper.relationships:
        if not rel.uselist or rel.key in excluded or rel.viewonly:
            continue
        if rel.secondary is None:
            continue  # one-to-many sides are logged on the child rows themselves
        history = state.attrs[rel.key].history
        if not history.has_changes():
            continue
        now = list(history.unchanged) + list(history.added)
        before = list(history.unchanged) + list(history.deleted)
        changes[rel.key] = [_plain(before), _plain(now)]
    return changes


def _entries(session: Session) -> list[dict]:
    user_id, actor = current_actor()
    rows = []

    def add(obj, action, changes):
        rows.append(
            {
                "at": utcnow(),
                "user_id": user_id,
                "actor": actor[:200],
                "action": action,
                "record_type": obj.__tablename__,
                "record_id": obj.id,
                "record_label": obj.audit_label()[:300],
                "changes": changes,
            }
        )

    for obj in session.new:
        if isinstance(obj, Audited):
            add(obj, "create", _field_changes(obj, only_changed=False))
    for obj in session.dirty:
        if isinstance(obj, Audited) and session.is_modified(obj):
            changes = _field_changes(obj, only_changed=True)
            if changes:
                add(obj, "update", changes)
    for obj in session.deleted:
        if isinstance(obj, Audited):
            state = inspect(obj)
            snapshot = {
                a.key: [_plain(getattr(obj, a.key)), None]
                for a in state.mapper.column_attrs
                if a.key not in obj.__audit_exclude__ and a.key != "id"
            }
            add(obj, "delete", snapshot)
    return rows


@event.listens_for(Session, "after_flush")
def _write_audit_entries(session: Session, flush_context) -> None:
    # In after_flush the new rows have ids and attribute history still shows the
    # pre-flush values; a Core insert joins the same transaction without re-flushing.
    rows = _entries(session)
    if rows:
        session.connection().execute(insert(AuditEntry.__table__), rows)


def history_for(record) -> list[AuditEntry]:
    """The audit entries of one record, newest first."""
    return db.session.scalars(
        db.select(AuditEntry)
        .where(
            AuditEntry.record_type == record.__tablename__,
            AuditEntry.record_id == record.id,
        )
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    ).all()


# --- Bulk writes ----------------------------------------------------------------------
# For the few places that write tens of thousands of audited rows at once (the OCR
# import): Core writes at driver speed (crm.bulk) plus the very entries the listener
# above would have written for the same rows, in the same transaction.

# Types `_plain` returns unchanged: skipping the call matters at 100,000 rows.
_AS_IS = frozenset({str, int, bool})


def _bulk_plain(value):
    return value if value is None or type(value) in _AS_IS else _plain(value)


def _logged_columns(model) -> list[str]:
    excluded = set(model.__audit_exclude__) | {"id"}
    return [name for name in model.__table__.columns.keys() if name not in excluded]


def _bulk_entry_base(model, action: str) -> dict:
    user_id, actor = current_actor()
    return {
        "at": utcnow(),
        "user_id": user_id,
        "actor": actor[:200],
        "action": action,
        "record_type": model.__tablename__,
    }


def bulk_create(model, rows: list[dict], *, key: str, scope: tuple[str, object]) -> None:
    """Insert `rows` (dicts with the same keys) of an Audited `model`, each with its
    "create" entry.

    The model labels a row with `audit_label_of(values)`, the rule its audit_label()
    follows. Only the audit entries are written: no ORM events fire. New ids
    are read back by `key`, a column unique among the rows whose `scope` column
    (name, value) matches: an INSERT … RETURNING in a guaranteed order would make
    SQLite run one statement per row.
    """
    if not rows:
        return
    table = model.__table__
    common = bulk.defaults_for(table, set(rows[0]))
    bulk.insert_rows(table, rows, common)
    scope_column, scope_value = scope
    ids = dict(
        db.session.execute(
            db.select(table.c[key], table.c.id).where(table.c[scope_column] == scope_value)
        ).all()
    )
    logged = _logged_columns(model)
    # Values from column defaults are the same in every row: render them once.
    fixed = {
        name: [None, _plain(common[name])]
        for name in logged
        if name in common and common[name] is not None and common[name] != ""
    }
    varying = [name for name in logged if name not in common]
    entries = []
    for row in rows:
        changes = fixed.copy()
        for name in varying:
            value = row.get(name)
            if value is None or value == "":
                continue
            changes[name] = [None, _bulk_plain(value)]
        entries.append(
            {
                "record_id": ids[row[key]],
                "record_label": model.audit_label_of({**common, **row})[:300],
                "changes": changes,
            }
        )
    bulk.insert_rows(AuditEntry.__table__, entries, _bulk_entry_base(model, "create"))


def bulk_update(model, changes: list[tuple[int, str, dict, dict]]) -> None:
    """Apply (id, label, old values, new values) to an Audited `model`, with one
    "update" entry per row. Only fields whose value really changes are written."""
    table = model.__table__
    by_fields: dict[tuple[str, ...], list[dict]] = {}
    entries = []
    for record_id, label, old, new in changes:
        changed = {name: value for name, value in new.items() if old.get(name) != value}
        if not changed:
            continue
        by_fields.setdefault(tuple(sorted(changed)), []).append({"id": record_id, **changed})
        entries.append(
            {
                "record_id": record_id,
                "record_label": label[:300],
                "changes": {
                    name: [_bulk_plain(old.get(name)), _bulk_plain(value)]
                    for name, value in changed.items()
                },
            }
        )
    for fields, rows in by_fields.items():
        bulk.update_rows(table, rows, fields)
    bulk.insert_rows(AuditEntry.__table__, entries, _bulk_entry_base(model, "update"))


def bulk_log(model, changes: list[tuple[int, str, dict]]) -> None:
    """Write one "update" entry per (id, label, {field: [old, new]}) of an Audited
    `model`, for changes made with Core writes the listener does not see (e.g. rows of
    a many-to-many table such as a contact's networks)."""
    entries = [
        {"record_id": record_id, "record_label": label[:300], "changes": fields}
        for record_id, label, fields in changes
        if fields
    ]
    bulk.insert_rows(AuditEntry.__table__, entries, _bulk_entry_base(model, "update"))
