"""RQ jobs of the email pipeline (queue `mail`): load by id, call the service, commit."""

import logging

from crm.extensions import db
from crm.mail import services

log = logging.getLogger(__name__)


def send_message(message_uuid: str) -> str:
    """Send one stored message; a message already sent (or being sent) is left alone.

    The claim is committed before the backend is called, so a second job for the same
    message finds it `sending` and does nothing. Retries are enqueued after the outcome
    commits (by the session hook in services).
    """
    message = services.claim_message(message_uuid)
    db.session.commit()
    if message is None:
        return "skipped"
    outcome = services.deliver(message)
    db.session.commit()
    return outcome.state


def requeue_stalled_messages(app) -> None:
    """Worker hook: re-enqueue messages whose job was lost (Redis restarted, worker killed).

    Harmless when the job still exists: job ids are per message and attempt, so the
    enqueue is refused as a duplicate.
    """
    with app.app_context():
        count = services.requeue_stalled()
        db.session.commit()
        if count:
            log.warning("re-enqueued %d stalled email(s)", count)
