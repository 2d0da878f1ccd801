"""The RQ worker: one app, each job in its own app context (and database session)."""

import gc
import logging
import threading
from collections.abc import Callable

from flask import Flask
from rq import SimpleWorker

from crm.queue import QUEUE_NAMES, get_redis

log = logging.getLogger(__name__)

# Upkeep that must not depend on anything stored in Redis (e.g. restarting a periodic
# job's chain after Redis lost its data): each hook is called with the app when a worker
# starts, then every WORKER_HOOK_SECONDS from a thread. Areas append in their init_app.
WORKER_HOOKS: list[Callable[[Flask], None]] = []


class AppWorker(SimpleWorker):
    """Runs jobs in this process (no fork per job: ~3x faster) inside an app context."""

    app: Flask

    def perform_job(self, job, queue):
        with self.app.app_context():
            return super().perform_job(job, queue)


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
    _start_upkeep(app, worker, burst)
    # What is loaded by now (the app, its modules and mappers) lives as long as the
    # worker: the cyclic collector need not walk it again and again. A full collection
    # took ~90 ms every few newsletter batches (each allocates some 50,000 objects);
    # now only what jobs allocate is walked. (Also keeps the forked scheduler's pages
    # shared.)
    gc.freeze()
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
