"""Figures computed from many rows, kept in Redis until one of the tables they read changes.

Every commit that wrote to a watched table bumps that table's version in Redis, after
the commit. A cached figure's key holds the versions of the tables it reads, so a change
to any of them has it computed afresh on the next view, and nothing else does.

Why after the commit and why the reader takes the versions before it queries: a reader
that sees the old version either ran its queries after the commit (its figures are
already new) or before it (then the bump that follows the commit changes the key, and
its figures are never read again). This needs each query to see what was committed
before it began: PostgreSQL's read committed, and SQLite's reads outside a transaction
(pysqlite begins one only for writes). Figures counted inside a transaction that has
written to a watched table are not kept (they may be rolled back). A bump lost with
Redis or a dead process leaves a figure stale at most `TABLE_CACHE_SECONDS` (every entry
expires).

Writes are noticed at the cursor, so ORM flushes, Core statements and bulk INSERT …
SELECT are all seen; COPY goes around the cursor and says so itself (`note_written`).

Beside it, `crm.cache` keeps the few rarely changed rows every public page reads
(settings, topics, wordings) in each process's memory, stale by a stamp in the database:
a copy in memory must outlive a Redis restart, and those tables are written seldom
enough for one stamp row. Counted figures live in Redis and go with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

VERSIONS_KEY = "klynge:table-versions"
ENTRY_PREFIX = "klynge:figures:"
DEFAULT_SECONDS = 600
# Tables some cached figure reads; writes to others cost nothing here.
WATCHED: set[str] = set()

_WRITE = re.compile(
    r"^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM"
    r'|TRUNCATE(?:\s+TABLE)?)\s+"?(\w+)"?',
    re.IGNORECASE,
)
_committed = threading.local()


def watch(*tables: str) -> tuple[str, ...]:
    """Declare that cached figures read `tables` (so their writes bump a version)."""
    WATCHED.update(tables)
    return tables


def note_written(connection, table: str) -> None:
    """For writes that go around the cursor (COPY)."""
    if table in WATCHED:
        connection.info.setdefault("written_tables", set()).add(table)


@event.listens_for(Engine, "before_cursor_execute")
def _note_write(connection, cursor, statement, parameters, context, executemany) -> None:
    match = _WRITE.match(statement)
    if match and match.group(1).lower() in WATCHED:
        connection.info.setdefault("written_tables", set()).add(match.group(1).lower())


@event.listens_for(Engine, "commit")
def _committing(connection) -> None:
    # Before the database commits: keep the tables until the session says it has.
    tables = connection.info.pop("written_tables", None)
    if tables:
        pending = getattr(_committed, "tables", None) or set()
        _committed.tables = pending | tables


@event.listens_for(Engine, "rollback")
def _rolled_back(connection) -> None:
    connection.info.pop("written_tables", None)


@event.listens_for(Session, "after_commit")
def _bump_committed(session: Session) -> None:
    tables = getattr(_committed, "tables", None)
    if not tables:
        return
    _committed.tables = set()
    if not has_app_context():
        return
    try:
        from crm.queue import get_redis

        pipe = get_redis().pipeline(transaction=False)
        for table in sorted(tables):
            pipe.hincrby(VERSIONS_KEY, table, 1)
        pipe.execute()
    except Exception:  # noqa: BLE001 - the commit stands; entries expire on their own
        log.warning("could not bump the versions of %s", ", ".join(sorted(tables)), exc_info=True)


def cached_many(
    key: str, parts: dict[str, tuple[Iterable[str], Callable[[], object]]], threads: int = 1
) -> dict[str, object]:
    """Each part's value (JSON-able), computed or from Redis: `parts` maps a name to the
    tables it reads and the function that computes it; `key` names the arguments they
    share (a period, say). Two Redis round trips when every part is fresh.

    With `threads` > 1, parts to compute are computed that many at a time, each in an app
    context of its own (its own session and connection), so the database counts them side
    by side: only for functions that need no request (no current user, no locale)."""
    if _uncommitted_writes():
        # Figures that count this transaction's own writes may be rolled back with them.
        return {name: fn() for name, (_tabs, fn) in parts.items()}
    try:
        from crm.queue import get_redis

        redis = get_redis()
        tables = sorted({t for tabs, _fn in parts.values() for t in tabs})
        versions = dict(zip(tables, redis.hmget(VERSIONS_KEY, tables), strict=True))
        keys = {
            name: _entry_key(name, key, {t: versions[t] for t in sorted(tabs)})
            for name, (tabs, _fn) in parts.items()
        }
        stored = dict(zip(keys, redis.mget(list(keys.values())), strict=True))
    except Exception:  # noqa: BLE001 - without Redis the figures are computed each time
        log.warning("figure cache unavailable", exc_info=True)
        return {name: fn() for name, (_tabs, fn) in parts.items()}
    missing = {name: fn for name, (_tabs, fn) in parts.items() if stored[name] is None}
    # Through JSON both ways, so a computed value looks like a cached one.
    fresh = {keys[name]: body for name, body in _computed(missing, threads).items()}
    values = {name: json.loads(stored[name] or fresh[keys[name]]) for name in parts}
    if fresh:
        seconds = int(current_app.config.get("TABLE_CACHE_SECONDS", DEFAULT_SECONDS))
        try:
            pipe = redis.pipeline(transaction=False)
            for entry, body in fresh.items():
                pipe.set(entry, body, ex=seconds)
            pipe.execute()
        except Exception:  # noqa: BLE001 - computed again next time
            log.warning("could not keep computed figures", exc_info=True)
    return values


def _computed(functions: dict[str, Callable[[], object]], threads: int) -> dict[str, str]:
    """Each function's value as JSON, `threads` at a time, in the order given."""
    if threads <= 1 or len(functions) <= 1:
        return {name: json.dumps(fn(), default=str) for name, fn in functions.items()}
    app = current_app._get_current_object()

    def compute(fn: Callable[[], object]) -> str:
        with app.app_context():  # a session and connection of this thread's own
            return json.dumps(fn(), default=str)

    with ThreadPoolExecutor(max_workers=min(threads, len(functions))) as pool:
        futures = {name: pool.submit(compute, fn) for name, fn in functions.items()}
        return {name: future.result() for name, future in futures.items()}


def _uncommitted_writes() -> bool:
    """Whether the session's open transaction has written to a watched table."""
    from crm.extensions import db

    session = db.session()
    return session.in_transaction() and bool(session.connection().info.get("written_tables"))


def _entry_key(name: str, key: str, versions: dict[str, bytes | None]) -> str:
    stamp = ",".join(f"{t}={(v or b'0').decode()}" for t, v in versions.items())
    digest = hashlib.sha1(f"{key}|{stamp}".encode()).hexdigest()[:20]
    return f"{ENTRY_PREFIX}{name}:{digest}"
