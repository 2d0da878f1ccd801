"""Forget the figures kept in Redis (crm.table_versions), so the next page view counts
in the database: query-count tests measure that path, the one that could grow with data."""

from crm.queue import get_redis
from crm.table_versions import ENTRY_PREFIX


def forget_cached_figures(app) -> None:
    redis = get_redis(app)
    keys = list(redis.scan_iter(f"{ENTRY_PREFIX}*"))
    if keys:
        redis.delete(*keys)
