"""For query-count tests: count a request's SQL statements, and forget the figures kept
in Redis (crm.table_versions) so the next page view counts in the database, the path
that could grow with data."""

from contextlib import contextmanager

from sqlalchemy import event

from crm.extensions import db
from crm.queue import get_redis
from crm.table_versions import ENTRY_PREFIX


def forget_cached_figures(app) -> None:
    redis = get_redis(app)
    keys = list(redis.scan_iter(f"{ENTRY_PREFIX}*"))
    if keys:
        redis.delete(*keys)


@contextmanager
def counting_queries():
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
