"""The reconciler: makes the database's view of what is left to send come true.

An RQ job, enqueued every NEWSLETTER_RECONCILE_SECONDS by the workers' upkeep thread
(queueing.reconcile_due: it needs nothing stored in Redis). Each run:

- starts scheduled newsletters whose time has come (their start job may be lost);
- enqueues again every pending batch that nobody is working on: no live lease and
  no queued or scheduled job (the worker was SIGKILLed, Redis restarted and lost its
  queues, the machine rebooted). The claim protocol makes a spare job harmless;
- writes the ledger rows of batches still planned whose fill job was lost;
- settles batches of unknown outcome (a 5xx, a timeout, a dead sender) from the
  webhook's events as soon as they show the provider accepted them;
- marks newsletters finished once no row is pending.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from rq.job import Job
from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm.attributes import set_committed_value

from crm.extensions import db
from crm.newsletters import ledger
from crm.newsletters.models import Newsletter, NewsletterBatch
from crm.newsletters.queueing import after_commit, batch_job_id
from crm.newsletters.settings import batch_size, setting
from crm.timeutil import utcnow

log = logging.getLogger(__name__)

# A scheduled job this late means RQ's scheduler is not running (e.g. its lock is
# still held by a killed worker): the reconciler enqueues the batch itself.
SCHEDULER_SLACK = timedelta(seconds=15)


def start_due_newsletters() -> int:
    from crm.newsletters import services

    due = db.session.scalars(
        select(Newsletter).where(
            Newsletter.state == "scheduled", Newsletter.scheduled_at <= utcnow()
        )
    ).all()
    started = 0
    for newsletter in due:
        newsletter_id = newsletter.id
        try:
            services.start_sending(newsletter)
        except services.NoRecipients as exc:
            db.session.rollback()
            services.back_to_draft_if_scheduled(newsletter_id, str(exc))
            db.session.commit()
            continue
        except services.NewsletterError:
            db.session.rollback()  # its own start job (or another reconciler) was first
            continue
        db.session.commit()
        started += 1
    return started


def write_planned_ledger(newsletter_id: int) -> int:
    """Write all of a newsletter's planned batches, ledger.FILL_ROWS rows per
    transaction; the number of batches written. Commits."""
    per_chunk = max(1, ledger.FILL_ROWS // batch_size())
    written = 0
    while True:
        chunk = ledger.write_planned(newsletter_id, per_chunk)
        db.session.commit()
        if not chunk:
            return written
        written += chunk


def resume_ledgers() -> int:
    """Write the planned batches whose fill job was lost (Redis lost it, its worker was
    killed): the batches written. Should the job still be at work, the two share the
    batches out (`ledger.write_planned`)."""
    B = NewsletterBatch
    newsletters = db.session.scalars(
        select(Newsletter.id)
        .where(
            Newsletter.state.in_(("sending", "paused", "cancelled")),
            exists().where(B.newsletter_id == Newsletter.id, B.state == "planned"),
        )
        .order_by(Newsletter.id)
    ).all()
    db.session.commit()
    return sum(write_planned_ledger(newsletter_id) for newsletter_id in newsletters)


def _unleased_pending_batches(
    newsletter_states: tuple[str, ...], now, *conditions
) -> list[NewsletterBatch]:
    """Pending batches of newsletters in these states that no sender holds a lease on
    (and that match `conditions`)."""
    B = NewsletterBatch
    return db.session.scalars(
        select(B)
        .join(Newsletter, Newsletter.id == B.newsletter_id)
        .where(
            Newsletter.state.in_(newsletter_states),
            B.state == "pending",
            or_(B.lease_expires_at.is_(None), B.lease_expires_at < now),
            *conditions,
        )
        .order_by(B.newsletter_id, B.number)
    ).all()


def orphaned_batches(connection) -> list[NewsletterBatch]:
    """Pending batches of sending newsletters with no live lease and no waiting job."""
    now = utcnow()
    candidates = _unleased_pending_batches(("sending",), now)
    if not candidates:
        return []
    jobs = Job.fetch_many([b.job_id or "-" for b in candidates], connection=connection)
    orphans = []
    overdue = now - SCHEDULER_SLACK
    for batch, job in zip(candidates, jobs, strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        if status in ("queued", "deferred"):
            continue  # waiting for a free worker
        if status == "scheduled" and (batch.next_attempt_at or now) > overdue:
            continue  # RQ's scheduler will enqueue it (unless it is long overdue)
        orphans.append(batch)
    return orphans


def settle_cancelled_batches() -> int:
    """Pending batches of cancelled newsletters, left so because their last request's
    outcome was unknown when staff cancelled (a 5xx or timeout, or the sender died in
    the request). The webhook's events decide: any event, and the rows are `sent`;
    none within the grace period, and they are skipped as cancelled. A live lease
    means a sender is still at it: it records the outcome itself."""
    from crm.newsletters import sending

    now = utcnow()
    batches = _unleased_pending_batches(("cancelled",), now)
    grace = timedelta(seconds=setting("NEWSLETTER_AMBIGUOUS_GRACE_SECONDS"))
    settled = 0
    for batch in batches:
        if sending.accepted_by_provider(batch):
            sending.confirm_sent_from_events(batch)
        else:
            asked_at = batch.ambiguous_since or batch.in_flight_since
            if asked_at is not None and asked_at + grace > now:
                continue  # its events may still come
            ledger.skip_batch(batch, "cancelled")
        settled += 1
    return settled


def settle_accepted_batches() -> int:
    """Batches of sending or paused newsletters whose last request's outcome is unknown
    (a 5xx or timeout, or the sender died in the request), settled as soon as the
    webhook's events show the provider accepted it. Their sender looks again only when
    the grace period is over (NEWSLETTER_AMBIGUOUS_GRACE_SECONDS, 300 s by default),
    so a newsletter would stay unfinished that long after a provider hiccup whose
    events came in seconds. Without events the batch is left to its sender, which
    sends it again after the grace period. A live lease means a sender is at it."""
    from crm.newsletters import sending

    B = NewsletterBatch
    under_way = or_(B.ambiguous_since.is_not(None), B.in_flight_since.is_not(None))
    settled = 0
    for batch in _unleased_pending_batches(("sending", "paused"), utcnow(), under_way):
        if sending.accepted_by_provider(batch):
            sending.confirm_sent_from_events(batch)
            settled += 1
    return settled


def release_dead_senders(connection=None) -> int:
    """Take back the batches whose sender's RQ worker is dead; how many.

    A sender's lease names its worker (`sending.new_owner`). Every worker renews its
    entry in RQ's worker registry each WORKER_HEARTBEAT_SECONDS, also in the middle
    of a job (crm.worker); one that has not for WORKER_DEAD_AFTER_SECONDS was killed
    or lost its machine. Its leases are released at once (conditionally: still the
    same owner) and the batches enqueued again, instead of waiting up to
    NEWSLETTER_LEASE_SECONDS. Exactly once still holds, as after a lease expiry: a
    batch whose request was in flight is *ambiguous* for its next sender, which
    settles it from the webhook's events (or sends it again after the grace period).
    Should the holder be alive after all (cut off from Redis only), it cannot send:
    marking the batch in flight needs the lease; and a 202 it already had is
    recorded as usual.
    """
    from crm.newsletters.sending import lease_worker
    from crm.queue import get_redis
    from crm.worker import worker_heartbeats

    B = NewsletterBatch
    now = utcnow()
    held = db.session.execute(
        select(B.id, B.lease_owner, B.updated_at)
        .join(Newsletter, Newsletter.id == B.newsletter_id)
        .where(
            B.state == "pending",
            B.lease_owner.is_not(None),
            B.lease_expires_at > now,
            Newsletter.state.in_(("sending", "paused", "cancelled")),
        )
    ).all()
    holders = {row.id: lease_worker(row.lease_owner) for row in held}
    names = {name for name in holders.values() if name}
    if not names:
        return 0
    beats = worker_heartbeats(connection or get_redis(), names)
    dead_after = timedelta(seconds=setting("WORKER_DEAD_AFTER_SECONDS"))
    released = 0
    for row in held:
        name = holders[row.id]
        if name is None:
            continue
        # No entry at all: registered once (it holds a lease), so dead for long enough
        # that RQ's entry expired; unless the lease is younger than the threshold
        # (Redis restarted and the live worker has not written its entry back yet).
        last = beats[name] or row.updated_at
        if last is None or last + dead_after > now:
            continue
        result = db.session.execute(
            update(B)
            .where(B.id == row.id, B.lease_owner == row.lease_owner)
            .values(lease_owner=None, lease_expires_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            continue
        log.warning(
            "batch %s: its sender's worker %s is dead (last heartbeat %s); sending it again",
            row.id,
            name,
            beats[name],
        )
        batch = db.session.get(B, row.id, populate_existing=True)
        if batch.newsletter.state == "sending":
            requeue(batch)
        released += 1
    db.session.commit()
    return released


def requeue(batch: NewsletterBatch, at: datetime | None = None) -> None:
    """A fresh job for the batch (at `at`, else its next attempt time), after commit."""
    round_ = batch.enqueued_count + 1
    job_id = batch_job_id(batch.newsletter_id, batch.id, round_)
    db.session.execute(
        update(NewsletterBatch)
        .where(NewsletterBatch.id == batch.id)
        .values(enqueued_count=round_, job_id=job_id)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(batch, "enqueued_count", round_)
    at = at or batch.next_attempt_at
    after_commit("batch", batch.id, job_id, at if at and at > utcnow() else None)


def reconcile(connection=None) -> dict[str, int]:
    """One pass; commits. Returns what it did (for logs and tests)."""
    from crm.queue import get_redis

    connection = connection or get_redis()
    started = start_due_newsletters()
    resumed = resume_ledgers()
    # Settled first: a batch settled here needs no job.
    settled = settle_cancelled_batches() + settle_accepted_batches()
    orphans = orphaned_batches(connection)
    for batch in orphans:
        requeue(batch)
    db.session.commit()
    finished = 0
    for newsletter_id in db.session.scalars(
        select(Newsletter.id).where(Newsletter.state == "sending")
    ).all():
        finished += ledger.finish_if_done(newsletter_id)
    db.session.commit()
    if orphans or started or finished or settled or resumed:
        log.info(
            "reconciler: %s started, %s planned batches written, %s batches enqueued "
            "again, %s finished, %s batches of unknown outcome settled",
            started,
            resumed,
            len(orphans),
            finished,
            settled,
        )
    return {
        "started": started,
        "resumed": resumed,
        "requeued": len(orphans),
        "finished": finished,
        "settled": settled,
    }
