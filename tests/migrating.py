"""Tests of data migrations: an empty database to migrate step by step, and rows written
in an old revision's schema."""

import os
import uuid
from contextlib import contextmanager
from datetime import UTC, date, datetime

import sqlalchemy as sa


def scratch_database(tmp_path):
    """(url, engine options) of an empty database: a SQLite file, or a schema of our own
    on PostgreSQL, dropped when the generator is closed. For a pytest fixture."""
    if os.environ.get("CRM_TEST_DB") != "postgres":
        yield f"sqlite:///{tmp_path / 'migration.sqlite3'}", {}
        return
    url = os.environ["TEST_DATABASE_URL"]
    schema = f"migration_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield url, {"connect_args": {"options": f"-csearch_path={schema}"}}
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def migration_app(url: str, engine_options: dict):
    """An app on the scratch database (upgrade it with flask_migrate.upgrade)."""
    from crm import create_app

    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
        }
    )


@contextmanager
def migrated_to(scratch: tuple[str, dict], revision: str):
    """In an app context on the scratch database upgraded to `revision`: that
    revision's tables, reflected (for `insert_row`). Upgrade further inside."""
    from flask_migrate import upgrade

    from crm.extensions import db

    with migration_app(*scratch).app_context():
        upgrade(revision=revision)
        metadata = sa.MetaData()
        metadata.reflect(db.engine)
        yield metadata


def _dummy(column):
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.Integer):
        return 1
    if isinstance(kind, sa.DateTime):
        return datetime(2026, 1, 1, tzinfo=UTC)
    if isinstance(kind, sa.Date):
        return date(2026, 1, 1)
    if isinstance(kind, sa.JSON):
        return {}
    return "x"


def insert_row(conn, metadata: sa.MetaData, table: str, **values):
    """A row in the old schema: the given values, and something for every other NOT
    NULL column. Its primary key."""
    tbl = metadata.tables[table]
    row = {
        c.name: _dummy(c)
        for c in tbl.columns
        if not c.nullable and not c.primary_key and c.name not in values
    }
    row.update(values)
    return conn.execute(tbl.insert().values(**row)).inserted_primary_key[0]
