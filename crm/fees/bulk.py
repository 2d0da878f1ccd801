"""Writing many payments at once (OCR import) with their audit entries.

The audit listener in crm.audit works on ORM objects, at ~0.4 ms per row plus the ORM's
own cost: a bank file of 100,000 payments would take minutes. Here rows go in with Core
executemany statements, and each gets the audit entry the listener would have written
for it (same actor, action, label and field-level `changes` built with crm.audit's own
`_plain`), in the same transaction. Only the OCR import uses this; every other change
goes through the ORM and the listener.

This belongs in crm.audit as a public `record_bulk_*` API; it lives here until then.
"""

from collections.abc import Sequence

from sqlalchemy import bindparam, insert, select, update

from crm.audit import AuditEntry, _plain, current_actor
from crm.extensions import db
from crm.timeutil import utcnow

_BATCH = 5_000
# Values that crm.audit._plain returns unchanged; skipping the call saves time per field.
_AS_IS = frozenset({str, int, bool})


def _audit_base() -> dict:
    user_id, actor = current_actor()
    return {"at": utcnow(), "user_id": user_id, "actor": actor[:200]}


def insert_audited(model, rows: Sequence[dict], label, scope: tuple[str, object], key: str):
    """Insert `rows` into `model`'s table, each with a "create" audit entry.

    `label(row)` gives the record label, as `audit_label()` would for the object.
    Columns left out of a row get their column default, as an ORM insert would. The new
    ids are read back by `key`, a column unique among the rows whose `scope` column
    (name, value) matches: INSERT … RETURNING in guaranteed order would make SQLite
    run one statement per row.
    """
    table = model.__table__
    defaults = {
        column.key: column.default.arg
        for column in table.columns
        if column.default is not None and column.default.is_scalar
    }
    # SQLAlchemy wraps callable defaults to take an execution context; ours ignore it.
    callable_defaults = {
        column.key: column.default.arg
        for column in table.columns
        if column.default is not None and column.default.is_callable
    }
    excluded = set(getattr(model, "__audit_exclude__", ())) | {"id"}
    connection = db.session.connection()
    full_rows = []
    for row in rows:
        full = {**defaults, **row}
        for name, make in callable_defaults.items():
            if name not in full:
                full[name] = make(None)
        full_rows.append(full)
    for start in range(0, len(full_rows), _BATCH):
        connection.execute(insert(table), full_rows[start : start + _BATCH])
    scope_column, scope_value = scope
    ids = {
        value: row_id
        for value, row_id in connection.execute(
            select(table.c[key], table.c.id).where(table.c[scope_column] == scope_value)
        )
    }
    base = _audit_base()
    base.update(action="create", record_type=table.name)
    logged = [name for name in table.columns.keys() if name not in excluded]
    for start in range(0, len(full_rows), _BATCH):
        entries = []
        for full in full_rows[start : start + _BATCH]:
            changes = {}
            for name in logged:
                value = full.get(name)
                if value is None or value == "":
                    continue
                changes[name] = [None, value if type(value) in _AS_IS else _plain(value)]
            entries.append(
                {
                    **base,
                    "record_id": ids[full[key]],
                    "record_label": label(full)[:300],
                    "changes": changes,
                }
            )
        connection.execute(insert(AuditEntry.__table__), entries)


def update_audited(model, changes: Sequence[tuple[int, str, dict, dict]]) -> None:
    """Apply (id, label, old values, new values) updates; one "update" audit entry each.

    Only fields whose value really changes are written and logged.
    """
    table = model.__table__
    base = _audit_base()
    connection = db.session.connection()
    by_fields: dict[tuple[str, ...], list[dict]] = {}
    entries = []
    for record_id, label, old, new in changes:
        changed = {key: value for key, value in new.items() if old.get(key) != value}
        if not changed:
            continue
        by_fields.setdefault(tuple(sorted(changed)), []).append({"_id": record_id, **changed})
        entries.append(
            {
                **base,
                "action": "update",
                "record_type": table.name,
                "record_id": record_id,
                "record_label": label[:300],
                "changes": {
                    key: [_plain(old.get(key)), _plain(value)] for key, value in changed.items()
                },
            }
        )
    for fields, rows in by_fields.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values({field: bindparam(field) for field in fields})
        )
        for start in range(0, len(rows), _BATCH):
            connection.execute(statement, rows[start : start + _BATCH])
    for start in range(0, len(entries), _BATCH):
        connection.execute(insert(AuditEntry.__table__), entries[start : start + _BATCH])
