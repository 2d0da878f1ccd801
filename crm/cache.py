"""A per-process copy of the few rows every public page and email reads and staff rarely
change: the organisation's settings, the newsletter topics (and the networks they
follow), the consent wordings.

Each web or worker process keeps its own copy. A stamp in the database says when it is
stale: every change to a watched table made through the session (a flush, or an ORM
INSERT/UPDATE/DELETE statement) writes a new random stamp in the same transaction,
before its own rows, and a rolled-back change changes nothing. A request reads the stamp
once, whatever it takes from the cache. A transaction that changed a watched table reads
past the cache until it ends.

How soon a process sees another's change: a logged-in user's request reads the stamp
from the database every time (staff make the changes and look at them on the next page,
whichever process serves it); other requests (the public pages, where a signup would
otherwise spend a tenth of its time on the stamp) and jobs take the process's last
reading while it is under STAMP_WINDOW_SECONDS old. The process that made a change sees
it at once.

Cached values are copies outside any session (`detached_copy`), shared by every request
of the process: read them, never change them or add them to a session. Rows written
beside the session (raw SQL in psql) are seen after a restart, or after any other change.

Figures counted from many rows (the results page, dashboards) are kept in Redis instead,
by a version per table (`crm.table_versions`): those tables change all day, too often
for one stamp row every writer would queue on.
"""

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, has_request_context
from flask_login import current_user
from sqlalchemy import String, event, inspect, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from crm.extensions import db

STAMP_NAME = "reference"
_REQUEST_STAMP = "crm_cache_stamp"
# How old the process's reading of the stamp may be for requests of anonymous visitors and
# for jobs: another process's change shows there within this time.
STAMP_WINDOW_SECONDS = 1.0
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


class _Reading:
    """The process's last reading of the stamp, shared by its threads. A reading begun
    before this process changed the stamp is not kept (`generation`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.value: tuple[float, str | None] | None = None  # (monotonic time, stamp)

    def fresh(self) -> tuple[bool, str | None]:
        value = self.value
        if value is None or _clock() - value[0] >= STAMP_WINDOW_SECONDS:
            return False, None
        return True, value[1]

    def keep(self, generation: int, read_at: float, stamp: str | None) -> None:
        with self.lock:
            if generation == self.generation:
                self.value = (read_at, stamp)

    def forget(self) -> None:
        with self.lock:
            self.generation += 1
            self.value = None


_clock = time.monotonic  # tests move it on
_reading = _Reading()


def watch(*models: type) -> None:
    """Models whose rows the cache copies: any change to them makes a new stamp."""
    global _watched, _watched_tables
    _watched = tuple({*_watched, *models})
    _watched_tables = frozenset(m.__table__.name for m in _watched)


def cached(name: str, load: Callable[[], T]) -> T:
    """`load()`'s value, taken from this process's copy while the stamp is unchanged."""
    # Only a session that exists can have changed anything: asking a scope without one
    # would make one (and a signup needs none).
    if db.session.registry.has() and db.session.info.get(_CHANGED):
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
    _reading.forget()


def detached_copy(row: T) -> T:
    """A copy of a mapped row's columns that belongs to no session."""
    mapper = inspect(type(row))
    return type(row)(**{a.key: getattr(row, a.key) for a in mapper.column_attrs})


def _current_stamp() -> str | None:
    in_request = has_request_context()
    if in_request and _REQUEST_STAMP in g:
        return g.get(_REQUEST_STAMP)
    fresh, stamp = _reading.fresh()
    if not fresh or (in_request and current_user.is_authenticated):
        generation, read_at = _reading.generation, _clock()
        stamp = _read_stamp()
        _reading.keep(generation, read_at, stamp)
    if in_request:
        setattr(g, _REQUEST_STAMP, stamp)
    return stamp


def _read_stamp() -> str | None:
    # On the session's connection, in its transaction, as plain SQL: the ORM's execute
    # path and the statement cache's key cost several times the query itself.
    return db.session.connection().exec_driver_sql(_STAMP_SQL).scalar()


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
        _reading.forget()  # this process reads the new stamp next time
        if has_request_context():
            g.pop(_REQUEST_STAMP, None)
