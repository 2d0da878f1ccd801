"""Pooled connections: pinged before use only after sitting idle, and a connection
the server dropped meanwhile is replaced instead of failing the request."""

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from crm import database
from crm.extensions import db


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
