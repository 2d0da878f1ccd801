"""A per-process copy of the few rows every public page and email reads and staff rarely
change: the organisation's settings, the newsletter topics (and the networks they
follow), the consent wordings.

Each web or worker process keeps its own copy. A stamp in the database says when it is
stale: every change to a watched table made through the session (a flush, or an ORM
INSERT/UPDATE/DELETE statement) writes a new random stamp in the same transaction,
before its own rows, so every process sees it at its next request and a rolled-back
change changes nothing. A request reads the stamp once, whatever it takes from the
cache. A transaction that changed a watched table reads past the cache until it ends.

Cached values are copies outside any session (`detached_copy`), shared by every request
of the process: read them, never change them or add them to a session. Rows written
beside the session (raw SQL in psql) are seen after a restart, or after any other change.

Figures counted from many rows (the results page, dashboards) are kept in Redis instead,
by a version per table (`crm.table_versions`): those tables change all day, too often
for one stamp row every writer would queue on.
"""

import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, has_request_context
from sqlalchemy import String, event, inspect, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from crm.extensions import db

STAMP_NAME = "reference"
_REQUEST_STAMP = "crm_cache_stamp"
_CHANGED = "crm_cache_changed"  # in session.info: this transaction bumped the stamp

T = TypeVar("T")


class CacheStamp(db.Model):
    """The stamp of the cached rows; a new random value at every change."""

    __tablename__ = "cache_stamp"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    stamp: Mapped[str] = mapped_column(String(32))


# The same text on SQLite and PostgreSQL (no parameters, so no paramstyle).
_STAMP_SQL = f"SELECT stamp FROM cache_stamp WHERE name = '{STAMP_NAME}'"  # noqa: S608

_watched: tuple[type, ...] = ()
_watched_tables: frozenset[str] = frozenset()
_entries: dict[str, tuple[str, Any]] = {}


def watch(*models: type) -> None:
    """Models whose rows the cache copies: any change to them makes a new stamp."""
    global _watched, _watched_tables
    _watched = tuple({*_watched, *models})
    _watched_tables = frozenset(m.__table__.name for m in _watched)


def cached(name: str, load: Callable[[], T]) -> T:
    """`load()`'s value, taken from this process's copy while the stamp is unchanged."""
    if db.session.info.get(_CHANGED):
        return load()
    stamp = _current_stamp()
    if stamp is None:  # no stamp row (a test emptied every table): nothing is cached
        return load()
    entry = _entries.get(name)
    if entry is not None and entry[0] == stamp:
        return entry[1]
    value = load()
    _entries[name] = (stamp, value)
    return value


def clear() -> None:
    """Forget every copy (tests that write rows beside the session)."""
    _entries.clear()


def detached_copy(row: T) -> T:
    """A copy of a mapped row's columns that belongs to no session."""
    mapper = inspect(type(row))
    return type(row)(**{a.key: getattr(row, a.key) for a in mapper.column_attrs})


def _current_stamp() -> str | None:
    if has_request_context() and _REQUEST_STAMP in g:
        return g.get(_REQUEST_STAMP)
    # On the session's connection, in its transaction, as plain SQL: every request asks,
    # and the ORM's execute path and the statement cache's key cost several times the
    # query itself.
    stamp = db.session.connection().exec_driver_sql(_STAMP_SQL).scalar()
    if has_request_context():
        setattr(g, _REQUEST_STAMP, stamp)
    return stamp


def _bump(session: Session) -> None:
    """A new stamp, written in the session's transaction (once per transaction)."""
    if session.info.get(_CHANGED):
        return
    session.info[_CHANGED] = True
    if has_request_context():
        g.pop(_REQUEST_STAMP, None)
    stamp = secrets.token_hex(16)
    connection = session.connection()
    table = CacheStamp.__table__
    updated = connection.execute(
        update(table).where(table.c.name == STAMP_NAME).values(stamp=stamp)
    )
    if updated.rowcount == 0:
        if connection.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        connection.execute(
            insert(table)
            .values(name=STAMP_NAME, stamp=stamp)
            .on_conflict_do_update(index_elements=["name"], set_={"stamp": stamp})
        )


@event.listens_for(Session, "before_flush")
def _bump_before_watched_rows_change(session: Session, flush_context, instances) -> None:
    if not _watched or session.info.get(_CHANGED):
        return
    if any(isinstance(o, _watched) for o in (*session.new, *session.deleted)) or any(
        isinstance(o, _watched) and session.is_modified(o, include_collections=False)
        for o in session.dirty
    ):
        _bump(session)


@event.listens_for(Session, "do_orm_execute")
def _bump_before_watched_statements(state) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _watched_tables:
        _bump(state.session)


@event.listens_for(Session, "after_transaction_end")
def _forget_change(session: Session, transaction) -> None:
    if transaction.parent is None and session.info.pop(_CHANGED, None):
        if has_request_context():
            g.pop(_REQUEST_STAMP, None)  # read the new stamp next time
