"""RQ jobs of the subscriptions area, and how signups wake them."""

import atexit
import logging
import os
import threading
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
# How long the waker thread waits for more signups before it sends the wake-up: under
# load a web process sends at most ten a second (each is a thread switch and a Redis
# round trip: at 10 ms they cost 0.08 ms of CPU per signup under gunicorn, 6 %), and a
# signup's confirmation email is queued at most this much later. Cut short for whoever
# waits for it (`wait_for_wakes`: tests, a process stopping).
WAKE_LINGER_SECONDS = 0.1
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

    The Redis command goes from a thread of this process (`_Waker`), so the visitor
    does not wait for Redis's answer, and the signups of the same few milliseconds share
    one command. If Redis is away or the process dies first the signup stands:
    the workers' hook finds it (`confirmations_tick`).
    """
    _waker.poke(current_app._get_current_object())


def wait_for_wakes(timeout: float = 5.0) -> bool:
    """Wait until every wake-up asked for so far has reached Redis (tests, shutdown)."""
    return _waker.wait(timeout)


def _wake_now() -> None:
    """One Redis command when a run is already queued (the usual case under load), two
    when not."""
    redis = get_redis()
    try:
        if redis.set(CONFIRMATIONS_DUE, "1", nx=True, ex=CONFIRMATIONS_DUE_SECONDS):
            try:
                _enqueue_run()
            except RedisError:
                redis.delete(CONFIRMATIONS_DUE)  # or nobody would queue one for a while
                raise
    except RedisError:
        log.warning("could not wake the confirmation emails' job", exc_info=True)


class _Waker:
    """A thread that sends the wake-ups of this process's signups.

    `poke` counts a request; the thread serves every request counted before it starts a
    command, so a signup that committed before its poke is always covered by a command
    sent after that commit (which is what `send_confirmations` relies on).
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._requested = self._served = 0
        self._thread: threading.Thread | None = None
        self._app: Flask | None = None
        # Set by `wait`: the wake-ups owed are sent without lingering.
        self._hurry = threading.Event()

    def poke(self, app: Flask) -> None:
        with self._lock:
            self._requested += 1
            self._app = app
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="signup-waker", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._lock:
            target = self._requested
            if self._served >= target:
                return True
        self._hurry.set()
        with self._lock:
            return self._lock.wait_for(lambda: self._served >= target, timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._served < self._requested)
            # Signups arriving meanwhile share the command (their emails wait as long).
            # Pokes do not wake this wait: only `wait` does, or the time running out.
            self._hurry.wait(WAKE_LINGER_SECONDS)
            # Cleared before the count is read: a `wait` that set it later counted
            # after this command's count (and is served by the next, at once).
            self._hurry.clear()
            with self._lock:
                target, app = self._requested, self._app
            try:
                with app.app_context():
                    _wake_now()
            except Exception:  # noqa: BLE001 - the thread must live on; the hook recovers
                log.exception("waking the confirmation emails' job failed")
            with self._lock:
                self._served = target
                self._lock.notify_all()


_waker = _Waker()
# A forked process (gunicorn's workers) starts without the parent's thread and state.
os.register_at_fork(after_in_child=_waker.__init__)
# A process stopping in order (gunicorn's graceful stop) sends what it owes first.
atexit.register(wait_for_wakes, 1.0)


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
                _wake_now()
        finally:
            db.session.remove()


def purge_expired_signups() -> int:
    """Delete pending signups whose confirmation link has expired (jobs queued before
    `send_confirmations` did the purge)."""
    purged = signup.purge_expired_signups()
    db.session.commit()
    return purged
