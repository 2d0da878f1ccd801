"""The RQ worker: one app, each job in its own app context (and database session)."""

import gc
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from rq import SimpleWorker, Worker
from rq.utils import utcparse

from crm.queue import QUEUE_NAMES, get_redis

log = logging.getLogger(__name__)

# Upkeep that must not depend on anything stored in Redis (e.g. restarting a periodic
# job's chain after Redis lost its data): each hook is called with the app when a worker
# starts, then every WORKER_HOOK_SECONDS from a thread. Areas append in their init_app.
WORKER_HOOKS: list[Callable[[Flask], None]] = []
# Called with the app every WORKER_HEARTBEAT_SECONDS, after this worker's heartbeat:
# for finding what dead workers held (crm.newsletters.reconciler.release_dead_senders).
HEARTBEAT_HOOKS: list[Callable[[Flask], None]] = []

_current_worker_name: str | None = None


def current_worker_name() -> str | None:
    """The name (in RQ's worker registry) of the worker running this job, if any."""
    return _current_worker_name


class AppWorker(SimpleWorker):
    """Runs jobs in this process (no fork per job: ~3x faster) inside an app context."""

    app: Flask

    def perform_job(self, job, queue):
        global _current_worker_name  # noqa: PLW0603 - one job at a time per process
        _current_worker_name = self.name
        try:
            with self.app.app_context():
                return super().perform_job(job, queue)
        finally:
            _current_worker_name = None


def worker_heartbeats(connection, names) -> dict[str, datetime | None]:
    """When each named worker last beat (None: not registered, e.g. long dead)."""
    names = list(names)
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hget(Worker.redis_worker_namespace_prefix + name, "last_heartbeat")
        beats = pipeline.execute()
    result = {}
    for name, beat in zip(names, beats, strict=True):
        try:
            result[name] = utcparse(beat.decode()).replace(tzinfo=UTC) if beat else None
        except (ValueError, AttributeError):
            result[name] = None
    return result


def _run_hooks(app: Flask) -> None:
    for hook in list(WORKER_HOOKS):
        try:
            hook(app)
        except Exception:  # noqa: BLE001 - upkeep must never stop the worker
            log.exception("worker hook %s failed", getattr(hook, "__name__", hook))


def _revive_scheduler(worker: AppWorker) -> None:
    # RQ restarts a dead scheduler process (e.g. after Redis restarted) only in its
    # maintenance run, every 10 minutes and not while an idle worker waits in BLPOP:
    # scheduled jobs and retries would wait that long.
    scheduler = getattr(worker, "scheduler", None)
    if scheduler is not None and (not scheduler._process or not scheduler._process.is_alive()):
        scheduler.acquire_locks(auto_start=True)


def _start_heartbeat(app: Flask, worker: AppWorker) -> threading.Event:
    """Renew the worker's registry entry every WORKER_HEARTBEAT_SECONDS from a thread,
    until the returned event is set.

    RQ's SimpleWorker beats only between jobs, and a newsletter batch may wait inline
    for up to a minute: then a live worker and a SIGKILLed one would look the same.
    From this thread the heartbeat goes on while a job runs, and stops exactly when
    the process does.
    """
    interval = float(app.config["WORKER_HEARTBEAT_SECONDS"])
    # Long enough for a busy moment; the registry entry goes once nobody renews it.
    ttl = int(max(interval * 3, float(app.config["WORKER_DEAD_AFTER_SECONDS"])) + 60)
    stop = threading.Event()

    def beat(registered: bool) -> bool:
        if worker.connection.exists(worker.key):
            worker.heartbeat(ttl)
            return True
        if registered and not stop.is_set():
            # Registered before, gone now: Redis lost its data (restart). Without an
            # entry this live worker would look dead to the others.
            worker.register_birth()
            worker.heartbeat(ttl)
        return registered

    def loop():
        registered = False
        while not stop.wait(interval):
            try:
                registered = beat(registered)
            except Exception:  # noqa: BLE001 - Redis may be down; try again next time
                log.warning("could not renew the worker's heartbeat", exc_info=True)
                continue
            if not registered:
                continue  # not started yet
            for hook in list(HEARTBEAT_HOOKS):
                try:
                    hook(app)
                except Exception:  # noqa: BLE001 - must never stop the heartbeat
                    log.exception("heartbeat hook %s failed", getattr(hook, "__name__", hook))

    threading.Thread(target=loop, name="worker-heartbeat", daemon=True).start()
    return stop


def _start_upkeep(app: Flask, worker: AppWorker, burst: bool) -> None:
    """Run the hooks now, then (unless in burst mode) every WORKER_HOOK_SECONDS."""
    _run_hooks(app)
    if burst:
        return
    interval = float(app.config["WORKER_HOOK_SECONDS"])

    def loop():
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                _revive_scheduler(worker)
            except Exception:  # noqa: BLE001 - Redis may be down; try again next time
                log.warning("could not restart the RQ scheduler", exc_info=True)
            _run_hooks(app)

    threading.Thread(target=loop, name="worker-upkeep", daemon=True).start()


def run_worker(app: Flask, burst: bool = False, queues: tuple[str, ...] = QUEUE_NAMES) -> bool:
    """Work the queues with the scheduler on (needed by enqueue_at and retries)."""
    connection = get_redis(app)
    worker = AppWorker(list(queues), connection=connection)
    worker.app = app
    heartbeat = _start_heartbeat(app, worker)
    _start_upkeep(app, worker, burst)
    # What is loaded by now (the app, its modules and mappers) lives as long as the
    # worker: the cyclic collector need not walk it again and again. A full collection
    # took ~90 ms every few newsletter batches (each allocates some 50,000 objects);
    # now only what jobs allocate is walked. (Also keeps the forked scheduler's pages
    # shared.)
    gc.freeze()
    try:
        return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        heartbeat.set()
