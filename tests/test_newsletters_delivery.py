"""5,000 recipients through the SendGrid test server with real worker processes.

Each test starts its own `worker.py` processes (not in burst mode: they run the RQ
scheduler, the reconciler and the rate limiter as in production) and checks what the
server saw: every recipient exactly once, with their own address, greeting and
unsubscribe link, nobody skipped, the newsletter `finished` — also when a worker is
SIGKILLed while SendGrid holds its request (and accepts it after the worker died), when
Redis restarts and loses its queues, when the server answers 429 and 500, and when
SendGrid accepts a request but the client sees a 500 or a timeout anyway.

The fault tests also check that the hard path was really taken (the server used the
fault, the batch was re-enqueued, settled from webhook events without a resend), so
they cannot pass by luck of timing.

Timings are shortened through the environment (leases of seconds, a reconciler every
second, a client timeout shorter than the lease as in production), so each test takes
seconds.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from rq import Worker
from rq.job import Job

from crm.extensions import db
from crm.members.models import Contact
from crm.newsletters import services
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.newsletters.queueing import QUEUE
from crm.newsletters.sending import lease_worker
from crm.queue import get_queue, get_redis
from crm.redis_server import redis_server_binary
from crm.subscriptions.tokens import read_link_token
from tests.factories import bulk_subscribers, make_newsletter

pytest_plugins = ["tests.sendgrid_server"]
# Run first, one after another in one xdist process (--dist loadgroup): their leases and
# timeouts are seconds long, and two of them at once on a small machine are too slow.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("delivery")]

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 5000
FAST = {
    "NEWSLETTER_RATE_PER_MINUTE": "6000000",
    "NEWSLETTER_LEASE_SECONDS": "4",
    # Long enough for the test server's webhook feed to report an accepted request on a
    # busy machine (3 s let a held batch of the invitation test go out twice under load).
    "NEWSLETTER_AMBIGUOUS_GRACE_SECONDS": "10",
    "NEWSLETTER_RETRY_BASE_SECONDS": "0.2",
    "NEWSLETTER_RETRY_MAX_SECONDS": "1",
    "NEWSLETTER_RECONCILE_SECONDS": "1",
    "WORKER_HOOK_SECONDS": "1",
    # Shorter than the lease (as 10 s vs 120 s in production): a request never outlives
    # the lease of the sender that made it.
    "SENDGRID_TIMEOUT_SECONDS": "2",
}


class Workers:
    """Worker processes started and supervised by the test (like systemd would)."""

    def __init__(self, env: dict, log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.every_pid: list[int] = []  # process groups to end, killed workers' too
        self.started = 0

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            self.started += 1
            log = open(self.log_dir / f"worker-{self.started}.log", "wb")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "worker.py")],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its scheduler child goes with it at the end
                )
            )
            self.every_pid.append(self.processes[-1].pid)

    def kill(self, index: int = 0) -> int:
        """SIGKILL one worker process (its forked scheduler lives on, as it would)."""
        process = self.processes[index]
        process.send_signal(signal.SIGKILL)
        process.wait()
        return process.pid

    def running_batch(self, newsletter_id: int, batch_id: int) -> tuple[int, str]:
        """The worker process (index) sending this batch (named in its lease), and the
        id of the job it is running (the batch's own, or an earlier batch's that went
        on with this one: `sending.run_batches`). In an app context."""
        found: list[tuple[int, str]] = []

        def holder() -> bool:
            db.session.rollback()  # a fresh snapshot each time
            owner = db.session.scalar(
                db.select(NewsletterBatch.lease_owner).where(NewsletterBatch.id == batch_id)
            )
            name = lease_worker(owner)
            workers = {w.name: w for w in Worker.all(connection=get_redis())}
            if name not in workers:
                return False
            worker = workers[name]
            found[:] = [
                (i, worker.get_current_job_id())
                for i, p in enumerate(self.processes)
                if p.poll() is None and p.pid == worker.pid
            ]
            return len(found) == 1 and (found[0][1] or "").startswith(f"nl-{newsletter_id}-")

        wait_for(holder, timeout=10)
        return found[0]

    def replace_dead(self) -> int:
        dead = [p for p in self.processes if p.poll() is not None]
        for process in dead:
            self.processes.remove(process)
        self.start(len(dead))
        return len(dead)

    def stop(self) -> None:
        for pid in self.every_pid:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in self.every_pid:
            _signal_group(pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("worker-*.log"))
        )


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def workers(sendgrid_server, tmp_path):
    env = dict(os.environ, **sendgrid_server.worker_env(**FAST))
    pool = Workers(env, tmp_path)
    yield pool
    pool.stop()


class EventFeed:
    """SendGrid's event webhook, simulated: a `processed` event for each recipient of
    every request the server accepted, stored through the mail area (each in its own
    transaction, as the webhook does). The first event of each request goes first, as
    SendGrid's first events for a request come within seconds."""

    def __init__(self, app, server):
        self.app = app
        self.server = server
        self.seen = 0
        self.backlog: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _record(self, request, personalization) -> None:
        from crm.mail.services import record_event

        args = personalization.get("custom_args") or {}
        with self.app.app_context():
            record_event(
                {
                    "event": "processed",
                    "email": personalization["to"][0]["email"],
                    "timestamp": int(request.at),
                    "sg_event_id": f"processed-{args.get('klynge_recipient')}-{request.message_id}",
                    "sg_message_id": f"{request.message_id}.filter0001",
                    **args,
                }
            )
            db.session.commit()

    def _run(self):
        while not self._stop.is_set():
            new = self.server.requests[self.seen :]
            self.seen += len(new)
            for request in new:
                first, *rest = request.body["personalizations"]
                self._record(request, first)
                self.backlog.extend((request, p) for p in rest)
            for _ in range(min(50, len(self.backlog))):
                self._record(*self.backlog.pop(0))
            if not new and not self.backlog:
                self._stop.wait(0.02)


def start(app, newsletter_id: int) -> int:
    with app.test_request_context():
        total = services.start_sending(db.session.get(Newsletter, newsletter_id))
        db.session.commit()
        return total


def wait_until_finished(app, newsletter_id: int, workers: Workers, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        workers.replace_dead()
        with app.app_context():
            status = services.status(db.session.get(Newsletter, newsletter_id))
        if status["state"] == "finished" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def assert_each_recipient_exactly_once(
    app, server, newsletter_id: int, expected: int, logs: str = ""
):
    addresses = Counter(server.recipients)
    repeated = {a: n for a, n in addresses.items() if n > 1}
    if repeated:  # why: each resent batch's last error, and the answers given
        with app.app_context():
            resent = [
                (b.number, b.resends, b.attempts, b.last_error)
                for b in db.session.scalars(
                    db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter_id)
                )
                if b.resends
            ]
        took = [(e.status, round(e.at % 100, 2)) for e in getattr(server, "exchanges", [])][:50]
        raise AssertionError(
            f"sent more than once: {list(repeated.items())[:5]}; resent {resent}; answers {took}"
            + (f"\nworker logs:\n{logs}" if logs else "")
        )
    assert len(addresses) == expected
    with app.app_context():
        rows = db.session.execute(
            db.select(
                NewsletterRecipient.id,
                NewsletterRecipient.contact_id,
                NewsletterRecipient.state,
                Contact.email,
                Contact.first_name,
            )
            .join(Contact, Contact.id == NewsletterRecipient.contact_id)
            .where(NewsletterRecipient.newsletter_id == newsletter_id)
        ).all()
        assert Counter(row.state for row in rows) == {"sent": expected}
        # The reach counter, kept by workers racing each other and the webhook.
        assert db.session.get(Newsletter, newsletter_id).sent_count == expected
        row_of = {row.id: row for row in rows}
        batches = db.session.scalars(
            db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter_id)
        ).all()
        assert all(b.state == "sent" and b.lease_owner is None for b in batches)
        assert all(b.in_flight_since is None and b.ambiguous_since is None for b in batches)
    # Each personalization goes to its row's contact, greets them by their own first
    # name and carries their own unsubscribe link and headers.
    for request in server.requests:
        assert len(request.body["personalizations"]) <= 1000
        for p in request.body["personalizations"]:
            row = row_of[int(p["custom_args"]["klynge_recipient"])]
            assert [to["email"] for to in p["to"]] == [row.email]
            assert p["substitutions"]["%first_name%"] == row.first_name
            assert p["substitutions"]["%greeting%"] == f"Hei {row.first_name},"
            link = p["substitutions"]["%unsubscribe_url%"]
            assert p["headers"]["List-Unsubscribe"] == f"<{link}>"
            assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            with app.app_context():
                claim = read_link_token(urlsplit(link).path.rsplit("/", 1)[1])
            assert claim.contact_id == row.contact_id
            assert p["custom_args"]["klynge_newsletter"] == str(newsletter_id)
            assert p["custom_args"]["klynge_batch"]


def batch_of(body: dict) -> int:
    """The batch a mail/send request body belongs to (from its custom_args)."""
    batches = {int(p["custom_args"]["klynge_batch"]) for p in body["personalizations"]}
    assert len(batches) == 1, batches
    return batches.pop()


def batches_by_id(app, newsletter_id: int) -> dict[int, NewsletterBatch]:
    with app.app_context():
        batches = db.session.scalars(
            db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter_id)
        ).all()
        db.session.expunge_all()
    return {b.id: b for b in batches}


def assert_settled_from_events_without_resend(app, server, newsletter_id: int, request):
    """The batch of `request` (accepted by the server, but the sender never saw the 202)
    was marked sent from the webhook's events: one request, no resend, and the message
    id it carries can only have come from the events."""
    batch_id = batch_of(request.body)
    batch = batches_by_id(app, newsletter_id)[batch_id]
    assert batch.state == "sent"
    assert batch.resends == 0
    assert batch.attempts == 1
    assert batch.provider_message_id == request.message_id
    assert batch.last_error == ""
    assert [r for r in server.requests if batch_of(r.body) == batch_id] == [request]
    with app.app_context():
        ids = set(
            db.session.scalars(
                db.select(NewsletterRecipient.provider_message_id).where(
                    NewsletterRecipient.newsletter_id == newsletter_id,
                    NewsletterRecipient.batch_number == batch.number,
                )
            )
        )
    assert ids == {request.message_id}
    return batch


@pytest.fixture
def big_newsletter(app, app_ctx):
    bulk_subscribers(RECIPIENTS)
    return make_newsletter(body="Hei %first_name%, her er nytt fra klyngen.").id


def test_5000_recipients_two_workers_each_exactly_once(
    app, sendgrid_server, workers, big_newsletter
):
    """With SendGrid's events coming in as they do in production: on a loaded machine
    the validating test server has taken longer than the client's 2 s timeout for the
    first two requests (both workers' at once), and those batches were then sent again
    after the grace period for want of the events that would have settled them."""
    assert start(app, big_newsletter) == RECIPIENTS
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        status = wait_until_finished(app, big_newsletter, workers)
    assert status == {
        "state": "finished",
        "total": RECIPIENTS,
        "sent": RECIPIENTS,
        "failed": 0,
        "pending": 0,
        "skipped": 0,
    }, workers.logs()
    assert_each_recipient_exactly_once(
        app, sendgrid_server, big_newsletter, RECIPIENTS, logs=workers.logs()
    )
    assert len(sendgrid_server.requests) == RECIPIENTS // 1000
    first = sendgrid_server.requests[0].body["personalizations"][0]
    assert first["substitutions"]["%greeting%"].startswith("Hei Person")


def test_a_worker_sigkilled_while_sendgrid_holds_its_request_sends_nobody_twice(
    app, sendgrid_server, workers, big_newsletter, monkeypatch
):
    """SendGrid holds a request; its worker is SIGKILLed meanwhile; SendGrid then accepts
    it (the 202 reaches nobody). The batch stays in flight with no owner: once its lease
    expires the reconciler settles it from the webhook's events (or, should they come
    later, enqueues it again and the next sender does), without sending it again."""
    start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
    sendgrid_server.delay_next(1, seconds=2)
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        wait_for(lambda: sendgrid_server.holding)
        held_batch = batch_of(sendgrid_server.holding[0].body)
        with app.app_context():
            wait_for(lambda: _in_flight(held_batch) is not None)
            victim, killed_job = workers.running_batch(big_newsletter, held_batch)
        killed_at = time.time()
        workers.kill(victim)  # wait_until_finished starts a new one, as a supervisor would
        status = wait_until_finished(app, big_newsletter, workers)
    assert status["state"] == "finished", workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    assert workers.started == 3  # the killed worker was replaced
    assert sendgrid_server.faults_used == {"delay": 1}
    (held,) = [r for r in sendgrid_server.requests if r.fault == "delay"]
    assert batch_of(held.body) == held_batch
    assert held.at > killed_at  # accepted after its sender was dead
    assert_settled_from_events_without_resend(app, sendgrid_server, big_newsletter, held)
    with app.app_context():  # the killed job never finished
        assert Job.fetch(killed_job, connection=get_redis()).return_value() is None
    assert len(sendgrid_server.requests) == RECIPIENTS // 500  # one request per batch


def test_a_sigkilled_worker_is_found_dead_by_its_heartbeat_and_its_batch_settled_within_30_s(
    app, sendgrid_server, tmp_path, big_newsletter, monkeypatch
):
    """Production's lease (120 s), heartbeat (5 s) and dead-after (15 s) settings: the
    worker holding a batch in flight is SIGKILLed; SendGrid accepts the request after
    it died. The other workers see from RQ's worker registry that its heartbeat
    stopped, take the batch back long before its lease would run out, and settle it
    from the webhook's events without sending it again: finished within 30 s of the
    kill, every recipient exactly once."""
    env = dict(
        os.environ,
        **sendgrid_server.worker_env(
            **{
                **FAST,
                "NEWSLETTER_LEASE_SECONDS": "120",
                "SENDGRID_TIMEOUT_SECONDS": "10",
                "WORKER_HEARTBEAT_SECONDS": "5",
                "WORKER_DEAD_AFTER_SECONDS": "15",
            }
        ),
    )
    pool = Workers(env, tmp_path)
    try:
        start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
        sendgrid_server.delay_next(1, seconds=2)
        with EventFeed(app, sendgrid_server):
            pool.start(2)
            wait_for(lambda: sendgrid_server.holding)
            held_batch = batch_of(sendgrid_server.holding[0].body)
            with app.app_context():
                wait_for(lambda: _in_flight(held_batch) is not None)
                victim, killed_job = pool.running_batch(big_newsletter, held_batch)
            killed_at = time.monotonic()
            pool.kill(victim)
            status = wait_until_finished(app, big_newsletter, pool, timeout=100)
            recovery = time.monotonic() - killed_at
    finally:
        pool.stop()
    assert status["state"] == "finished", pool.logs()
    print(f"finished {recovery:.1f} s after the kill")
    assert recovery <= 30, (recovery, pool.logs())
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    (held,) = [r for r in sendgrid_server.requests if r.fault == "delay"]
    batch = assert_settled_from_events_without_resend(app, sendgrid_server, big_newsletter, held)
    assert batch.enqueued_count > 1  # taken back and enqueued again, not by lease expiry
    logs = "".join(log.read_text(errors="replace") for log in tmp_path.glob("worker-*.log"))
    assert f"batch {held_batch}: its sender's worker" in logs


def test_redis_restarted_mid_send_loses_the_queues_and_still_everyone_gets_it_once(
    app, sendgrid_server, workers, big_newsletter, monkeypatch, tmp_path
):
    redis = PrivateRedis(tmp_path / "redis.sock").start()
    try:
        monkeypatch.setitem(app.config, "REDIS_URL", redis.url)
        monkeypatch.delitem(app.extensions, "crm_redis", raising=False)
        workers.env["REDIS_URL"] = redis.url
        # Both workers busy with a held request: the other batches' jobs wait in Redis.
        sendgrid_server.delay_next(2, seconds=2)
        with EventFeed(app, sendgrid_server):
            workers.start(2)
            with app.app_context():  # both listening before the jobs come
                wait_for(lambda: len(Worker.all(connection=get_redis())) >= 2)
            start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
            wait_for(lambda: len(sendgrid_server.holding) == 2)
            held = {batch_of(h.body) for h in sendgrid_server.holding}
            with app.app_context():
                queued = set(
                    db.session.scalars(
                        db.select(NewsletterBatch.id).where(
                            NewsletterBatch.newsletter_id == big_newsletter,
                            NewsletterBatch.state == "pending",
                            NewsletterBatch.id.not_in(held),
                        )
                    )
                )
                assert len(queued) == RECIPIENTS // 500 - 2
                # Their jobs wait in Redis, about to be lost (compared by batch: a full suite
                # run once saw one more job waiting beside them).
                waiting = {int(j.split("-")[3]) for j in get_queue(QUEUE).job_ids if "-batch-" in j}
                assert queued <= waiting, (sorted(queued), get_queue(QUEUE).job_ids)
            redis.restart()  # SIGKILL, then a fresh, empty server on the same socket
            status = wait_until_finished(app, big_newsletter, workers)
        assert status["state"] == "finished", workers.logs()
        assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
        # Their jobs were lost with Redis: each got sent only through a new job.
        batches = batches_by_id(app, big_newsletter)
        assert {b for b in queued if batches[b].enqueued_count > 1} == queued
        assert all(b.resends == 0 for b in batches.values())
        assert len(sendgrid_server.requests) == RECIPIENTS // 500
    finally:
        app.extensions.pop("crm_redis", None)
        workers.stop()
        redis.stop()


def test_429_and_500_for_a_while_delay_but_never_duplicate_or_drop(
    app, sendgrid_server, workers, big_newsletter
):
    """500s before SendGrid accepted anything: with the event feed on, those batches get
    no events, so each is sent again once the grace period is over."""
    sendgrid_server.rate_limit_next(2, reset_in=1)
    sendgrid_server.fail_next(3, status=500)
    sendgrid_server.rate_limit_next(1, reset_in=1)
    assert start(app, big_newsletter) == RECIPIENTS
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        status = wait_until_finished(app, big_newsletter, workers)
    assert status["state"] == "finished", workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    refused = Counter(status for status, _body in sendgrid_server.refused)
    assert refused == {429: 3, 500: 3}
    assert sendgrid_server.faults_used == {"status": 6}
    failed = {batch_of(e.body) for e in sendgrid_server.exchanges if e.status == 500}
    assert failed
    batches = batches_by_id(app, big_newsletter)
    for batch_id, batch in batches.items():
        if batch_id in failed:
            assert batch.resends >= 1  # ambiguous, no events: resent after the grace
        else:
            assert batch.resends == 0
    assert len(sendgrid_server.requests) == len(batches)  # each accepted exactly once


def test_accepted_then_500_is_settled_from_the_events_without_a_resend(
    app, sendgrid_server, workers, big_newsletter, monkeypatch
):
    """SendGrid took the request, but the client got a 500: the batch is ambiguous; the
    webhook's events show it went out, so it is marked sent and not sent again."""
    start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
    sendgrid_server.accept_then_fail_next(2, status=500)
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        status = wait_until_finished(app, big_newsletter, workers)
    assert status["state"] == "finished", workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    assert sendgrid_server.faults_used == {"accept_then_status": 2}
    assert sendgrid_server.refused == []
    failed = [r for r in sendgrid_server.requests if r.answer == 500]
    assert len(failed) == 2
    for request in failed:
        assert_settled_from_events_without_resend(app, sendgrid_server, big_newsletter, request)
    assert all(b.resends == 0 for b in batches_by_id(app, big_newsletter).values())
    assert len(sendgrid_server.requests) == RECIPIENTS // 500


def test_accepted_then_timed_out_is_settled_from_the_events_without_a_resend(
    app, sendgrid_server, workers, big_newsletter, monkeypatch
):
    """SendGrid took the request, then the connection hung until the client timed out:
    the same, through a timeout instead of a 5xx."""
    start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
    timeout = float(FAST["SENDGRID_TIMEOUT_SECONDS"])
    sendgrid_server.accept_then_stall_next(1, seconds=timeout + 1.5)
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        wait_for(lambda: sendgrid_server.holding)
        with app.app_context():
            held_batch = batch_of(sendgrid_server.holding[0].body)
            enqueued = db.session.scalar(
                db.select(NewsletterBatch.enqueued_count).where(NewsletterBatch.id == held_batch)
            )
        status = wait_until_finished(app, big_newsletter, workers)
    assert status["state"] == "finished", workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    assert sendgrid_server.faults_used == {"accept_then_stall": 1}
    assert sendgrid_server.stalled == 1 and sendgrid_server.refused == []
    (stalled,) = [r for r in sendgrid_server.requests if r.answer is None]
    batch = assert_settled_from_events_without_resend(app, sendgrid_server, big_newsletter, stalled)
    assert batch.id == held_batch
    # Not enqueued again after the request went out: its own sender, which saw the
    # timeout, settled it (the client timeout is shorter than the lease).
    assert batch.enqueued_count == enqueued
    assert all(b.resends == 0 for b in batches_by_id(app, big_newsletter).values())
    assert len(sendgrid_server.requests) == RECIPIENTS // 500


def test_send_wait_shows_a_live_progress_bar_until_the_last_email(
    app, runner, sendgrid_server, workers, big_newsletter, monkeypatch
):
    """`crm newsletters send ID --wait`, as SPEC.md fixes it: starts the send, shows a
    progress bar that moves while the workers send, and returns once all is sent."""
    # About five seconds of sending, so the bar has something to show on the way.
    workers.env["NEWSLETTER_RATE_PER_MINUTE"] = "60000"
    monkeypatch.setitem(app.config, "NEWSLETTER_BATCH_SIZE", 250)
    workers.start(2)
    with app.app_context():
        wait_for(lambda: len(Worker.all(connection=get_redis())) >= 2)
    result = runner.invoke(args=["newsletters", "send", str(big_newsletter), "--wait"])
    assert result.exit_code == 0, result.output + workers.logs()
    assert f"Sending newsletter {big_newsletter} to {RECIPIENTS} recipients." in result.output
    assert "No worker is running" not in result.output
    counts = [int(n) for n in re.findall(rf"(\d+)/{RECIPIENTS} ", result.output)]
    assert counts[-1] == RECIPIENTS
    assert f"{RECIPIENTS}/{RECIPIENTS} " in result.output.split("\r")[-1]
    assert f"sent={RECIPIENTS}]" in result.output.split("\r")[-1]
    assert any(0 < n < RECIPIENTS for n in counts), result.output  # it moved on the way
    assert counts == sorted(counts)
    with app.app_context():
        status = services.status(db.session.get(Newsletter, big_newsletter))
    assert status["state"] == "finished"
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)


# -- helpers -----------------------------------------------------------------------------


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def _in_flight(batch_id: int):
    """The batch's in_flight_since as committed now (call in an app context)."""
    db.session.rollback()  # a fresh snapshot each time
    return db.session.scalar(
        db.select(NewsletterBatch.in_flight_since).where(NewsletterBatch.id == batch_id)
    )


def start_newsletter_with_small_batches(app, newsletter_id: int, monkeypatch) -> None:
    """More batches than workers, so a fault lands in the middle of the send."""
    monkeypatch.setitem(app.config, "NEWSLETTER_BATCH_SIZE", 500)
    assert start(app, newsletter_id) == RECIPIENTS


class PrivateRedis:
    """A redis-server of our own on a unix socket, nothing on disk: a restart loses all."""

    def __init__(self, socket_path: Path):
        self.socket_path = socket_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> "PrivateRedis":
        import redis

        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        wait_for(lambda: self._ping(client), timeout=10)
        return self

    @staticmethod
    def _ping(client) -> bool:
        try:
            return client.ping()
        except Exception:  # noqa: BLE001
            return False

    def restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.socket_path.unlink(missing_ok=True)
        time.sleep(0.5)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
