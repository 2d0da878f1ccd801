"""Database connection details that differ between SQLite and PostgreSQL."""

import time

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidatePoolError

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


def init_app(app) -> None:
    # Import every model module so metadata (and Alembic) sees all tables.
    from crm import models  # noqa: F401
    from crm.auth.sessions import load_user
    from crm.extensions import db, login_manager

    login_manager.user_loader(load_user)
    with app.app_context():
        _ping_idle_connections(db.engine)

    @app.teardown_appcontext
    def _remove_session(exc):
        db.session.remove()


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
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            alive = not engine.dialect.is_disconnect(exc, dbapi_connection, None)
            if alive:
                raise
        if not alive:
            # As pool_pre_ping does: the server went away, so every pooled connection
            # is stale; the pool opens a new one for this checkout.
            raise InvalidatePoolError("the pooled connection was closed")
