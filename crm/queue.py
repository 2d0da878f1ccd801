"""Redis connection and RQ queues, one place for both."""

from pathlib import Path

import redis
from flask import current_app
from rq import Queue

from crm.redis_server import ensure_embedded_redis

QUEUE_NAMES = ("default", "mail", "newsletters")


def redis_url(app=None) -> str:
    """REDIS_URL, or the embedded server's URL (started on first use)."""
    app = app or current_app
    if not app.config["REDIS_URL"]:
        app.config["REDIS_URL"] = ensure_embedded_redis(Path(app.instance_path))
    return app.config["REDIS_URL"]


def get_redis(app=None) -> redis.Redis:
    app = app or current_app
    connection = app.extensions.get("crm_redis")
    if connection is None:
        connection = redis.Redis.from_url(redis_url(app), socket_timeout=10)
        app.extensions["crm_redis"] = connection
    return connection


def get_queue(name: str = "default", app=None) -> Queue:
    return Queue(name, connection=get_redis(app))
