"""Database connection details that differ between SQLite and PostgreSQL."""

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import Table, event, text
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.pool import PoolProxiedConnection

log = logging.getLogger(__name__)

# A pooled connection is pinged before use only if it sat unused this long. A
# connection given back moments ago was alive then; pinging it anyway (pool_pre_ping)
# was a round trip per transaction: four per newsletter batch, one or two per page.
# A server restart within that second fails the statements under way, as it would
# with any ping, and SQLAlchemy then replaces every pooled connection.
PING_AFTER_IDLE_SECONDS = 1.0


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    # SQLite: enforce foreign keys, let the web app and the worker share the file.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def run_core(statement, params: dict | None = None):
    """Execute `statement` (built once, values in `params`) on the session's connection,
    in its transaction, as plain SQL: the ORM's execution adds ~0.2 ms a statement and
    ~2 µs a result row (a newsletter batch's 1,000 rows: 3.5 ms of CPU, 1.4 ms this
    way). Pending changes are flushed first, as the session would; mapped objects are
    not refreshed afterwards (as with synchronize_session=False): for statements whose
    results are plain columns."""
    from crm.extensions import db

    db.session.flush()  # returns at once when there is nothing to flush
    return db.session.connection().execute(statement, params or {})


# A bulk write refreshes the planner's statistics of a table (`analyze_after_commit`)
# when it wrote at least this many rows, and at least this share of the rows the
# planner last knew of: autovacuum's own rule (50 rows + autovacuum_analyze_scale_factor
# 0.1), with a higher floor, minus autovacuum's wait of up to a minute.
ANALYZE_MIN_ROWS = 500
ANALYZE_SHARE = 0.1
_ANALYZE_KEY = "analyze_after_commit"


def analyze_after_commit(session: Session, tables: Iterable[str], rows: int) -> None:
    """Have PostgreSQL ANALYZE `tables` once the session's transaction commits, when the
    `rows` written to each make that worthwhile (ANALYZE_MIN_ROWS, ANALYZE_SHARE).

    For bulk imports: a table filled moments ago still looks empty (or as small as it
    was) to the planner until autovacuum gets round to it, and joins over it are
    planned as nested loops (the newsletter audience's consent check: 0.2–0.6 s for a
    few thousand new contacts, ~30 ms once analyzed). Called any number of times in a
    transaction, it analyzes each table once, after the commit (in a transaction of its
    own, so the statistics count committed rows); a rollback forgets it. On SQLite it
    does nothing: without `sqlite_stat1` its planner goes by fixed guesses that do not
    depend on a table's size, so a freshly filled table is planned as any other, and
    statistics once made would go stale with every other write.
    """
    if rows < ANALYZE_MIN_ROWS or session.get_bind().dialect.name != "postgresql":
        return
    pending = session.info.setdefault(_ANALYZE_KEY, {})
    for table in tables:
        pending[table] = pending.get(table, 0) + rows


@event.listens_for(Session, "after_commit")
def _analyze_committed(session: Session) -> None:
    pending = session.info.pop(_ANALYZE_KEY, None)
    if not pending:
        return
    try:
        with session.get_bind().connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            known = dict(
                connection.execute(
                    text("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:tables)"),
                    {"tables": sorted(pending)},
                ).all()
            )
            for table in sorted(pending):
                if pending[table] >= ANALYZE_SHARE * max(known.get(table, 0), 0):
                    quoted = connection.dialect.identifier_preparer.quote(table)
                    connection.exec_driver_sql(f"ANALYZE {quoted}")
    except Exception:  # noqa: BLE001 - the import stands; autovacuum analyzes in time
        log.warning("could not analyze %s", ", ".join(sorted(pending)), exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_analyze(session: Session) -> None:
    session.info.pop(_ANALYZE_KEY, None)


def init_app(app) -> None:
    # Import every model module so metadata (and Alembic) sees all tables.
    from crm import models  # noqa: F401
    from crm.auth.sessions import load_user
    from crm.extensions import db, login_manager

    login_manager.user_loader(load_user)
    # Relationships, backrefs and attribute instruments of every model (~0.1-0.2 s of
    # CPU), worked out now rather than on the process's first query: a gunicorn
    # worker's first signup waited for it, and its ~20,000 objects, made after
    # `create_app` freezes the built app out of garbage collection, were walked by
    # every full collection for the life of the process.
    configure_mappers()
    with app.app_context():
        _ping_idle_connections(db.engine)
    # Flask-SQLAlchemy removes the session at the end of every app context itself.


def _ping_idle_connections(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that were idle (see above)."""

    @event.listens_for(engine, "checkin")
    def _note_idle(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, proxy) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or given back just now
        if not _answers(engine, dbapi_connection):
            # As pool_pre_ping does: the server went away, so every pooled connection
            # is stale; the pool opens a new one for this checkout.
            raise InvalidatePoolError("the pooled connection was closed")


def _answers(engine: Engine, dbapi_connection) -> bool:
    """Whether the server still answers on `dbapi_connection` (a ping); False when it went
    away, any other error raised."""
    try:
        return engine.dialect.do_ping(dbapi_connection)
    except engine.dialect.loaded_dbapi.Error as exc:
        if engine.dialect.is_disconnect(exc, dbapi_connection, None):
            return False
        raise


def insert_committed(engine: Engine, table: Table, values: dict) -> None:
    """INSERT one row of `table` in a transaction of its own, committed (as durably as
    any commit) when this returns.

    Straight through a connection's driver, for the public signup's one write:
    SQLAlchemy's Connection around it (execution context, events, result, the switch to
    autocommit and back) cost twice what the INSERT itself does. On PostgreSQL the
    statement commits itself (autocommit: one round trip, no BEGIN or COMMIT) on one of
    the connections kept for these INSERTs (`_AutocommitConnections`); SQLite has no
    round trips to save and takes one from the pool. The values pass through the
    columns' own bind processors, so they are stored exactly as the ORM stores them.
    Errors come as SQLAlchemy's (IntegrityError, …); a connection found dead is closed
    and the next INSERT takes another.
    """
    dialect = engine.dialect
    sql, processors = _insert_statement(table, dialect, tuple(values))
    parameters = {
        key: process(values[key]) if process else values[key] for key, process in processors
    }
    kept = dialect.name == "postgresql"
    if kept:
        connection, cursor = _autocommit.take(engine)
    else:
        connection, cursor = engine.raw_connection(), None
    try:
        if kept:
            cursor.execute(sql, parameters)
        else:
            cursor = connection.cursor()
            cursor.execute(sql, parameters)
            connection.commit()
    except dialect.loaded_dbapi.Error as exc:
        dead = dialect.is_disconnect(exc, connection.driver_connection, cursor)
        if dead:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            parameters,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=dead,
            dialect=dialect,
        ) from exc
    finally:
        if not kept:
            connection.close()  # back to the pool, which rolls back whatever is left
        elif connection.is_valid:
            _autocommit.put_back(engine, connection, cursor)


class _AutocommitConnections:
    """Pooled connections kept checked out, in autocommit and each with its cursor, for
    `insert_committed` on PostgreSQL: the process's, shared by its threads.

    Taking a connection from the pool and giving it back (events, the reset's rollback),
    switching it to autocommit and back, and making a cursor (psycopg builds its
    adapters anew for each) cost more CPU than the INSERT itself: under gunicorn a
    signup spent 5 % of its CPU in the pool alone. A signup's INSERT needs nothing of a
    transaction, so these connections stay in autocommit until given back to the pool
    (`release`), transactional again. One sitting idle PING_AFTER_IDLE_SECONDS or more
    is pinged before use, as the pool pings its own (`_ping_idle_connections`). There
    are as many as signups ever ran at once in the process (one per gunicorn thread at
    most), the one used last taken first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[Engine, PoolProxiedConnection, object, float]] = []

    def take(self, engine: Engine) -> tuple[PoolProxiedConnection, object]:
        while True:
            with self._lock:
                if not self._idle:
                    break
                owner, connection, cursor, since = self._idle.pop()
            if owner is not engine:  # another app's (tests)
                self._give_back(connection)
            elif time.monotonic() - since < PING_AFTER_IDLE_SECONDS or _answers(
                engine, connection.driver_connection
            ):
                return connection, cursor
            else:
                connection.invalidate()
        connection = engine.raw_connection()
        try:
            connection.driver_connection.autocommit = True
            return connection, connection.cursor()
        except BaseException:
            connection.close()
            raise

    def put_back(self, engine: Engine, connection: PoolProxiedConnection, cursor) -> None:
        with self._lock:
            self._idle.append((engine, connection, cursor, time.monotonic()))

    def release(self) -> None:
        """Give every idle one back to its pool, transactional again."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, connection, _, _ in idle:
            self._give_back(connection)

    def forget(self) -> None:
        # In a forked child: the parent's connections are not the child's to use or close.
        self._idle = []
        self._lock = threading.Lock()

    @staticmethod
    def _give_back(connection: PoolProxiedConnection) -> None:
        try:
            connection.driver_connection.autocommit = False
        except Exception:  # noqa: BLE001 - closed or broken: the pool must not get it back
            connection.invalidate()
        else:
            connection.close()


_autocommit = _AutocommitConnections()
os.register_at_fork(after_in_child=_autocommit.forget)
release_autocommit_connections = _autocommit.release


_Processors = tuple[tuple[str, Callable | None], ...]
_insert_statements: dict[tuple[str, str, tuple[str, ...]], tuple[str, _Processors]] = {}


def _insert_statement(table: Table, dialect: Dialect, keys: tuple[str, ...]):
    """The INSERT's SQL (named parameters, as both drivers take them) and each value's
    bind processor, worked out once per table, database and set of columns."""
    cache_key = (table.name, dialect.name, keys)
    statement = _insert_statements.get(cache_key)
    if statement is None:
        columns = [table.c[key] for key in keys]  # KeyError for anything but a column
        processors = tuple(
            (c.key, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in columns
        )
        # The table's own names, quoted; every value is bound.
        into = dialect.identifier_preparer.format_table(table)
        names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
        marks = ", ".join(f":{k}" if dialect.name == "sqlite" else f"%({k})s" for k in keys)
        sql = f"INSERT INTO {into} ({names}) VALUES ({marks})"  # noqa: S608
        statement = _insert_statements[cache_key] = (sql, processors)
    return statement
