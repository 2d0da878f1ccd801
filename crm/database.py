"""Database connection details that differ between SQLite and PostgreSQL."""

from sqlalchemy import event
from sqlalchemy.engine import Engine


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

    @app.teardown_appcontext
    def _remove_session(exc):
        db.session.remove()
