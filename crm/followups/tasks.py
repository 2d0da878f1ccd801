"""RQ jobs of the follow-ups area: the morning digest."""

import logging
from datetime import datetime

from crm.extensions import db
from crm.timeutil import OSLO

log = logging.getLogger(__name__)

# The digest goes out from this hour (Europe/Oslo) on.
DIGEST_HOUR = 7
# One Redis key per morning lets one worker through (like the newsletter reconciler's
# gate): it needs nothing that survives in Redis, so a restart the same morning only
# enqueues a job that finds every digest already queued.
GATE_KEY = "klynge:followup-digest:{day}"


def send_digests() -> int:
    """Queue today's digest for every user with follow-ups due (at most once each)."""
    from flask_babel import force_locale

    from crm.audit import acting_as
    from crm.followups.services import queue_digests

    with acting_as("follow-up digest"), force_locale("nb"):
        queued = queue_digests()
        db.session.commit()
    if queued:
        log.info("queued %d follow-up digest(s)", queued)
    return queued


def digest_due(now: datetime | None = None, connection=None) -> str | None:
    """Enqueue the digest job once per morning, from DIGEST_HOUR on. Returns its job id,
    or None when it is not (or no longer) due."""
    from crm.queue import get_queue, get_redis

    now = (now or datetime.now(OSLO)).astimezone(OSLO)
    if now.hour < DIGEST_HOUR:
        return None
    connection = connection or get_redis()
    day = now.date().isoformat()
    if not connection.set(GATE_KEY.format(day=day), "1", nx=True, ex=36 * 3600):
        return None
    job = get_queue("default").enqueue(
        send_digests, job_id=f"followup-digest-{day}", result_ttl=24 * 3600
    )
    return job.id


def digest_tick(app) -> None:
    """Worker hook (every WORKER_HOOK_SECONDS): enqueue the morning digest when due."""
    with app.app_context():
        digest_due()
