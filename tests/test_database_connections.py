"""Pooled connections: pinged before use only after sitting idle, and a connection
the server dropped meanwhile is replaced instead of failing the request. A row inserted
beside the session (`insert_committed`, the public signup's write) is stored as the ORM
stores it and committed at once."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from crm import database
from crm.extensions import db
from crm.subscriptions import topics
from crm.subscriptions.models import PendingSignup


@pytest.fixture
def pings(app_ctx, monkeypatch):
    """How many times the pool pinged a connection (each ping runs a statement on it)."""
    counted = []
    real = db.engine.dialect.do_ping

    def counting(dbapi_connection):
        counted.append(dbapi_connection)
        return real(dbapi_connection)

    monkeypatch.setattr(db.engine.dialect, "do_ping", counting)
    return counted


def _transaction() -> int:
    value = db.session.scalar(text("SELECT 1"))
    db.session.commit()
    return value


def test_a_connection_given_back_just_now_is_used_without_a_ping(pings):
    for _ in range(5):
        assert _transaction() == 1
    assert pings == []


def test_a_connection_idle_longer_than_the_limit_is_pinged_first(pings, monkeypatch):
    _transaction()
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    _transaction()
    assert len(pings) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(app_ctx, monkeypatch):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the server closing a connection: PostgreSQL")
    db.session.remove()
    db.engine.dispose()  # one pooled connection: the one closed below
    victim = db.session.scalar(text("SELECT pg_backend_pid()"))
    db.session.commit()  # back in the pool
    outside = create_engine(db.engine.url, poolclass=NullPool)  # not from our pool
    with outside.connect() as other:
        assert other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
    outside.dispose()
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    opened = []

    def count_connect(*args):
        opened.append(args)

    event.listen(db.engine, "connect", count_connect)
    try:
        assert db.session.scalar(text("SELECT pg_backend_pid()")) != victim
        db.session.commit()
    finally:
        event.remove(db.engine, "connect", count_connect)
    assert opened, "a new connection was opened for the dropped one"


SIGNED_UP_AT = datetime(2026, 12, 7, 6, 30, 15, 250, tzinfo=UTC)


def _pending(**changes) -> dict:
    wording = topics.current_wording()
    db.session.commit()
    values = dict(
        nonce="nonce",
        email="kari@example.no",
        first_name="Kari",
        last_name="Nordmann",
        company_name="",
        topic_ids=[2, 1],
        wording_id=wording.id,
        ip=None,
        locale="nb",
        created_at=SIGNED_UP_AT,
        form_token="token-1",
    )
    return values | changes


def _pending_count(*conditions) -> int:
    count = db.session.scalar(select(func.count(PendingSignup.id)).where(*conditions))
    db.session.commit()
    return count


def test_a_row_inserted_beside_the_session_reads_back_as_the_orm_stores_it(app_ctx):
    database.insert_committed(db.engine, PendingSignup.__table__, _pending())
    row = db.session.scalar(select(PendingSignup))
    assert (row.email, row.topic_ids, row.ip) == ("kari@example.no", [2, 1], None)
    assert row.created_at == SIGNED_UP_AT  # aware UTC, to the microsecond
    # Compared in SQL as rows the ORM wrote are (SQLite compares the stored text).
    second = timedelta(seconds=1)
    assert _pending_count(PendingSignup.created_at > SIGNED_UP_AT - second) == 1
    assert _pending_count(PendingSignup.created_at > SIGNED_UP_AT + second) == 0


def test_a_row_inserted_beside_the_session_is_committed_and_the_pool_stays_transactional(
    app_ctx,
):
    db.session.remove()
    database.release_autocommit_connections()
    db.engine.dispose()  # one pooled connection from here on: the insert's
    database.insert_committed(db.engine, PendingSignup.__table__, _pending())
    outside = create_engine(db.engine.url, poolclass=NullPool)
    with outside.connect() as other:  # another connection sees it: committed
        assert other.scalar(text("SELECT count(*) FROM pending_signup")) == 1
    outside.dispose()
    # The same connection, given back to the pool, is in a transaction again: a rollback
    # undoes its write.
    database.release_autocommit_connections()
    db.session.add(PendingSignup(**_pending(email="ola@example.no", form_token="token-2")))
    db.session.flush()
    db.session.rollback()
    assert _pending_count() == 1


def test_a_duplicate_row_fails_with_sqlalchemys_integrity_error_and_stores_nothing(app_ctx):
    database.insert_committed(db.engine, PendingSignup.__table__, _pending())
    with pytest.raises(IntegrityError) as raised:
        duplicate = _pending(email="ola@example.no")  # the same form token
        database.insert_committed(db.engine, PendingSignup.__table__, duplicate)
    assert "form_token" in str(raised.value.orig)
    other = _pending(email="ola@example.no", form_token="token-2")
    database.insert_committed(db.engine, PendingSignup.__table__, other)
    assert _pending_count() == 2


def _close_the_inserts_connection_from_the_server() -> None:
    """Terminate the backend whose last statement was an insert_committed INSERT."""
    outside = create_engine(db.engine.url, poolclass=NullPool)
    with outside.connect() as other:
        closed = other.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query LIKE 'INSERT INTO pending_signup%'"
            )
        )
    outside.dispose()
    assert closed >= 1


def test_an_insert_on_a_connection_the_server_closed_fails_once_then_works(app_ctx):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the server closing a connection: PostgreSQL")
    database.insert_committed(db.engine, PendingSignup.__table__, _pending())
    _close_the_inserts_connection_from_the_server()  # used just now: not pinged
    values = _pending(email="ola@example.no", form_token="token-2")
    with pytest.raises(DBAPIError) as raised:
        database.insert_committed(db.engine, PendingSignup.__table__, values)
    assert raised.value.connection_invalidated
    database.insert_committed(db.engine, PendingSignup.__table__, values)
    assert _pending_count() == 2


def test_an_inserts_connection_the_server_closed_while_idle_is_replaced(app_ctx, monkeypatch):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the server closing a connection: PostgreSQL")
    database.insert_committed(db.engine, PendingSignup.__table__, _pending())
    _close_the_inserts_connection_from_the_server()
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    values = _pending(email="ola@example.no", form_token="token-2")
    database.insert_committed(db.engine, PendingSignup.__table__, values)  # no error
    assert _pending_count() == 2


def test_the_built_app_has_its_models_mappers_configured():
    # A worker's first query must not configure them (its first visitor waited), and
    # they must exist before create_app freezes the built app out of collections. In a
    # process of its own: this one's mappers were configured by earlier tests.
    probe = (
        "from crm import create_app; from crm.extensions import db; create_app(); "
        "print(db.Model.registry._new_mappers)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
