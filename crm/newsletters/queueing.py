"""RQ jobs of the sending pipeline: their ids, and enqueueing them after commit.

Jobs are only hints: the database says what is left to send (pending batches), and
the reconciler enqueues again whatever lost its job (Redis restarted, worker killed).
A job that finds nothing to do does nothing. Jobs are enqueued after the transaction
that made them necessary commits, so a rolled-back request enqueues nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from rq import Queue
from rq.job import Job
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from crm.extensions import db
from crm.newsletters.settings import setting

log = logging.getLogger(__name__)

QUEUE = "newsletters"
RECONCILE_QUEUE = "default"
JOB_TIMEOUT = 600
RECONCILE_GATE_KEY = "klynge:newsletters:reconcile-gate"
_PENDING = "crm_newsletter_pending_jobs"


def batch_job_id(newsletter_id: int, batch_id: int, round_: int) -> str:
    # RQ job ids: letters, digits, '_' and '-' only.
    return f"nl-{newsletter_id}-batch-{batch_id}-{round_}"


def after_commit(kind: str, *args) -> None:
    """Enqueue a job once the current transaction commits (forgotten on rollback)."""
    db.session().info.setdefault(_PENDING, []).append((kind, args))


@sa_event.listens_for(Session, "after_commit")
def _enqueue_pending(session: Session) -> None:
    for kind, args in session.info.pop(_PENDING, ()):
        try:
            _ENQUEUERS[kind](*args)
        except Exception:  # noqa: BLE001 - the commit stands; the reconciler recovers
            log.exception("could not enqueue newsletter job %s %s; the reconciler will", kind, args)


@sa_event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _queue():
    from crm.queue import get_queue

    return get_queue(QUEUE)


def enqueue_batch(batch_id: int, job_id: str, at: datetime | None = None) -> None:
    from crm.newsletters.tasks import send_batch

    queue = _queue()
    options = {
        "job_id": job_id,
        "description": f"newsletter batch {batch_id}",
        "result_ttl": 3600,
        "failure_ttl": 7 * 24 * 3600,
    }
    if at is None:
        queue.enqueue(send_batch, batch_id, job_timeout=JOB_TIMEOUT, **options)
    else:
        queue.enqueue_at(at, send_batch, batch_id, job_timeout=JOB_TIMEOUT, **options)


def drop_queued_job(job_id: str) -> bool:
    """Take a batch's job off the queue if it is still waiting there (another job sends
    the batch); whether it was. A job a worker took already is left alone."""
    queue = _queue()
    if not queue.connection.lrem(queue.key, 1, job_id):
        return False
    queue.connection.delete(Job.key_for(job_id))
    return True


def more_urgent_jobs_waiting() -> bool:
    """Jobs wait on a queue the workers take before this one (transactional mail, the
    reconciler): a sender going on from batch to batch gives way to them."""
    from crm.queue import QUEUE_NAMES

    queue = _queue()
    earlier = QUEUE_NAMES[: QUEUE_NAMES.index(QUEUE)]
    with queue.connection.pipeline(transaction=False) as pipeline:
        for name in earlier:
            pipeline.llen(Queue(name, connection=queue.connection).key)
        return any(pipeline.execute())


def enqueue_start(newsletter_id: int, at: datetime) -> None:
    """Start sending a scheduled newsletter at `at` (the reconciler is the backstop)."""
    from crm.newsletters.tasks import start_scheduled

    _queue().enqueue_at(
        at,
        start_scheduled,
        newsletter_id,
        job_id=f"nl-{newsletter_id}-start-{int(at.timestamp())}",
        job_timeout=JOB_TIMEOUT,
        result_ttl=3600,
    )


def enqueue_ledger(newsletter_id: int) -> None:
    """Write the rest of a newsletter's ledger (its planned batches), in chunks."""
    from crm.newsletters.tasks import fill_ledger

    _queue().enqueue(
        fill_ledger,
        newsletter_id,
        job_id=f"nl-{newsletter_id}-ledger",
        job_timeout=JOB_TIMEOUT,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
    )


_ENQUEUERS = {"batch": enqueue_batch, "start": enqueue_start, "ledger": enqueue_ledger}


# -- the periodic reconciler ---------------------------------------------------------------


def reconcile_due(connection=None) -> str | None:
    """Enqueue a reconciler run unless one was enqueued in the last interval.

    Called every WORKER_HOOK_SECONDS by each worker's upkeep thread; a Redis key that
    expires after NEWSLETTER_RECONCILE_SECONDS lets one of them through per interval.
    Unlike a chain of RQ-scheduled jobs this survives Redis losing its data and does
    not wait for RQ's scheduler lock, which outlives a SIGKILLed worker by a minute.
    Returns the job id, or None if it was not due.
    """
    from crm.newsletters.tasks import reconcile_job
    from crm.queue import get_redis

    connection = connection or get_redis()
    interval = max(0.5, setting("NEWSLETTER_RECONCILE_SECONDS"))
    if not connection.set(RECONCILE_GATE_KEY, "1", nx=True, px=int(interval * 1000)):
        return None
    # On the first queue workers listen to: it must not wait behind a newsletter's batches.
    job = Queue(RECONCILE_QUEUE, connection=connection).enqueue(
        reconcile_job,
        job_id=f"nl-reconcile-{int(time.time() * 1000)}",
        job_timeout=JOB_TIMEOUT,
        result_ttl=60,
        failure_ttl=24 * 3600,
    )
    return job.id
