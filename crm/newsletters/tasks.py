"""RQ jobs of the newsletters area (queue `newsletters`): load by id, call, commit."""

from datetime import timedelta

from crm.extensions import db
from crm.newsletters import queueing, reconciler, sending, services
from crm.newsletters.models import Newsletter
from crm.newsletters.queueing import reconcile_due
from crm.timeutil import utcnow


def send_batch(batch_id: int) -> str:
    """Send one batch (if nobody else is); see crm.newsletters.sending."""

    def reschedule(batch, seconds: float) -> None:
        reconciler.requeue(batch, at=utcnow() + timedelta(seconds=seconds))

    return sending.run_batches(
        batch_id,
        reschedule=reschedule,
        drop_job=queueing.drop_queued_job,
        give_way=queueing.more_urgent_jobs_waiting,
    )


def fill_ledger(newsletter_id: int) -> str:
    """Write the ledger rows of a newsletter's planned batches, a chunk per transaction,
    each chunk's batch jobs enqueued as it commits (see ledger.create_ledger)."""
    written = reconciler.write_planned_ledger(newsletter_id)
    return f"{written} batches written"


def start_scheduled(newsletter_id: int) -> str:
    """Start a scheduled newsletter whose time has come (a no-op if it was changed)."""
    newsletter = db.session.get(Newsletter, newsletter_id)
    if newsletter is None or newsletter.state != "scheduled":
        return "not-scheduled"
    if newsletter.scheduled_at and newsletter.scheduled_at > utcnow() + timedelta(seconds=5):
        return "not-yet"  # rescheduled later; that time's job (or the reconciler) starts it
    try:
        total = services.start_sending(newsletter)
    except services.NoRecipients as exc:
        db.session.rollback()
        services.back_to_draft_if_scheduled(newsletter_id, str(exc))
        db.session.commit()
        return "no-recipients"
    except services.NewsletterError:
        db.session.rollback()
        return "started-elsewhere"  # the reconciler (or a click on Send) was first
    db.session.commit()
    return f"started: {total} recipients"


def reconcile_job() -> dict:
    """The periodic reconciler (enqueued by `reconcile_tick`)."""
    from crm.home.services import record_reconciler_run

    result = reconciler.reconcile()
    record_reconciler_run()  # shown to admins on the home page
    return result


def reconcile_tick(app) -> None:
    """Worker hook, every WORKER_HOOK_SECONDS in every worker: enqueue the reconciler
    when it is due. Needs nothing stored in Redis, so it also runs after Redis lost
    its data, or after a reboot."""
    with app.app_context():
        reconcile_due()


def dead_sender_tick(app) -> None:
    """Heartbeat hook, every WORKER_HEARTBEAT_SECONDS in every worker: take back the
    batches of senders whose RQ worker died (crm.newsletters.reconciler)."""
    with app.app_context():
        reconciler.release_dead_senders()
