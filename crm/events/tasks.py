"""RQ jobs of the events area: expiring unanswered waitlist offers."""

from flask import Flask
from redis.exceptions import RedisError

from crm.audit import acting_as
from crm.events import services
from crm.extensions import db
from crm.queue import get_queue, get_redis

# Offers expire at most this long after their time is up (the worker hook's pace).
EXPIRY_CHECK_SECONDS = 60


def expire_offers_job() -> int:
    """Expire every unanswered seat offer whose time is up and offer the seat to the next."""
    with acting_as("offer expiry"):
        expired = services.expire_offers()
        db.session.commit()
    return expired


def expire_offers_tick(app: Flask) -> None:
    """Worker hook (every WORKER_HOOK_SECONDS in every worker): enqueue the expiry job at
    most once a minute over all workers, and only when an offer is due. Needs nothing
    stored in Redis beforehand, so it keeps working after Redis lost its data."""
    with app.app_context():
        try:
            if not services.offers_due():
                return
            if get_redis().set(
                "klynge:events:expire-offers", "1", nx=True, ex=EXPIRY_CHECK_SECONDS
            ):
                get_queue("default").enqueue(expire_offers_job, job_timeout=300)
        except RedisError:
            app.logger.warning("could not queue the expiry of waitlist offers")
        finally:
            db.session.remove()
