"""RQ jobs of the subscriptions area, and how signups wake them."""

import logging
from datetime import timedelta

from flask import Flask, current_app
from redis.exceptions import RedisError

from crm.extensions import db
from crm.mail.services import MAIL_QUEUE
from crm.queue import get_queue, get_redis
from crm.subscriptions import signup

log = logging.getLogger(__name__)

# Set by the signup that queued `send_confirmations`; deleted by that job before it looks
# for signups, so a signup committed after the job looked finds it gone and queues
# another run. A signup that finds it set is covered by the run that is queued.
CONFIRMATIONS_DUE = "klynge:subscriptions:confirmations-due"
# Bounds how long a lost wake-up (a job deleted from Redis) can hold the key.
CONFIRMATIONS_DUE_SECONDS = 300
CONFIRMATION_BATCH = 200
# The worker hook's fallback: signups this old without their email get a run anyway.
STRAY_SIGNUP_AGE = timedelta(seconds=60)


def send_confirmations() -> int:
    """Store (and so queue for sending) the confirmation email of every signup that has
    none yet, then purge expired signups if there are any. Returns the emails stored."""
    get_redis().delete(CONFIRMATIONS_DUE)
    stored = 0
    while True:
        seen, count = signup.queue_confirmations(CONFIRMATION_BATCH)
        db.session.commit()
        stored += count
        if seen < CONFIRMATION_BATCH:
            break
    if signup.expired_signups_exist():
        signup.purge_expired_signups()
        db.session.commit()
    return stored


def wake_confirmations() -> None:
    """After a signup committed: make sure a `send_confirmations` run will see it.

    One Redis command when a run is already queued (the usual case under load), two
    when not. If Redis is away the signup stands: the workers' hook finds it.
    """
    redis = get_redis()
    try:
        if redis.set(CONFIRMATIONS_DUE, "1", nx=True, ex=CONFIRMATIONS_DUE_SECONDS):
            try:
                _enqueue_run()
            except RedisError:
                redis.delete(CONFIRMATIONS_DUE)  # or nobody would queue one for a while
                raise
    except RedisError:
        current_app.logger.warning("could not wake the confirmation emails' job")


def _enqueue_run() -> None:
    get_queue(MAIL_QUEUE).enqueue(
        send_confirmations, job_timeout=300, description="signup confirmation emails"
    )


def confirmations_tick(app: Flask) -> None:
    """Worker hook (when a worker starts, then every WORKER_HOOK_SECONDS): a signup whose
    wake-up was lost (Redis down or restarted at the time) still gets its email."""
    with app.app_context():
        try:
            if signup.unmailed_signups_exist(older_than=STRAY_SIGNUP_AGE):
                wake_confirmations()
        finally:
            db.session.remove()


def purge_expired_signups() -> int:
    """Delete pending signups whose confirmation link has expired (jobs queued before
    `send_confirmations` did the purge)."""
    purged = signup.purge_expired_signups()
    db.session.commit()
    return purged
