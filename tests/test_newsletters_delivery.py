"""5,000 recipients through the SendGrid test server with real worker processes.

Each test starts its own `worker.py` processes (not in burst mode: they run the RQ
scheduler, the reconciler and the rate limiter as in production) and checks what the
server saw: every recipient exactly once, with their own unsubscribe link, nobody
skipped, the newsletter `finished` — also when a worker is SIGKILLed mid-send, when
Redis restarts and loses its queues, and when the server answers 429 and 500.

Timings are shortened through the environment (leases of seconds, a reconciler every
second), so each test takes seconds.
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

from crm.extensions import db
from crm.newsletters import services
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.queue import get_redis
from crm.redis_server import redis_server_binary
from crm.subscriptions.tokens import read_link_token
from tests.factories import bulk_subscribers, make_newsletter

pytest_plugins = ["tests.sendgrid_server"]

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 5000
FAST = {
    "NEWSLETTER_RATE_PER_MINUTE": "6000000",
    "NEWSLETTER_LEASE_SECONDS": "4",
    "NEWSLETTER_AMBIGUOUS_GRACE_SECONDS": "3",
    "NEWSLETTER_RETRY_BASE_SECONDS": "0.2",
    "NEWSLETTER_RETRY_MAX_SECONDS": "1",
    "NEWSLETTER_RECONCILE_SECONDS": "1",
    "WORKER_HOOK_SECONDS": "1",
    "SENDGRID_TIMEOUT_SECONDS": "5",
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


def assert_each_recipient_exactly_once(app, server, newsletter_id: int, expected: int):
    addresses = Counter(server.recipients)
    repeated = {a: n for a, n in addresses.items() if n > 1}
    assert not repeated, f"sent more than once: {list(repeated.items())[:5]}"
    assert len(addresses) == expected
    with app.app_context():
        rows = db.session.execute(
            db.select(
                NewsletterRecipient.id, NewsletterRecipient.contact_id, NewsletterRecipient.state
            ).where(NewsletterRecipient.newsletter_id == newsletter_id)
        ).all()
        assert Counter(state for _, _, state in rows) == {"sent": expected}
        contact_of_row = {row_id: contact_id for row_id, contact_id, _ in rows}
        batches = db.session.scalars(
            db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter_id)
        ).all()
        assert all(b.state == "sent" and b.lease_owner is None for b in batches)
    # Each personalization carries the recipient's own unsubscribe link and headers.
    for request in server.requests:
        assert len(request.body["personalizations"]) <= 1000
        for p in request.body["personalizations"]:
            row_id = int(p["custom_args"]["klynge_recipient"])
            link = p["substitutions"]["%unsubscribe_url%"]
            assert p["headers"]["List-Unsubscribe"] == f"<{link}>"
            assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            with app.app_context():
                claim = read_link_token(urlsplit(link).path.rsplit("/", 1)[1])
            assert claim.contact_id == contact_of_row[row_id]
            assert p["custom_args"]["klynge_newsletter"] == str(newsletter_id)
            assert p["custom_args"]["klynge_batch"]


@pytest.fixture
def big_newsletter(app, app_ctx):
    bulk_subscribers(RECIPIENTS)
    return make_newsletter(body="Hei %first_name%, her er nytt fra klyngen.").id


def test_5000_recipients_two_workers_each_exactly_once(
    app, sendgrid_server, workers, big_newsletter
):
    assert start(app, big_newsletter) == RECIPIENTS
    workers.start(2)
    status = wait_until_finished(app, big_newsletter, workers)
    assert status == {
        "state": "finished",
        "total": RECIPIENTS,
        "sent": RECIPIENTS,
        "failed": 0,
        "pending": 0,
    }, workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    assert len(sendgrid_server.requests) == RECIPIENTS // 1000
    first = sendgrid_server.requests[0].body["personalizations"][0]
    assert first["substitutions"]["%greeting%"].startswith("Hei Person")


def test_a_worker_sigkilled_mid_send_and_restarted_sends_nobody_twice(
    app, sendgrid_server, workers, big_newsletter, monkeypatch
):
    workers.env["NEWSLETTER_BATCH_SIZE"] = "500"
    start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
    with EventFeed(app, sendgrid_server):
        workers.start(2)
        wait_for(lambda: len(sendgrid_server.requests) >= 2)
        workers.kill(0)  # wait_until_finished starts a new one, as a supervisor would
        status = wait_until_finished(app, big_newsletter, workers)
    assert status["state"] == "finished", workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)


def test_redis_restarted_mid_send_loses_the_queues_and_still_everyone_gets_it_once(
    app, sendgrid_server, workers, big_newsletter, monkeypatch, tmp_path
):
    redis = PrivateRedis(tmp_path / "redis.sock").start()
    try:
        monkeypatch.setitem(app.config, "REDIS_URL", redis.url)
        monkeypatch.delitem(app.extensions, "crm_redis", raising=False)
        workers.env["REDIS_URL"] = redis.url
        workers.env["NEWSLETTER_BATCH_SIZE"] = "500"
        start_newsletter_with_small_batches(app, big_newsletter, monkeypatch)
        with EventFeed(app, sendgrid_server):
            workers.start(2)
            wait_for(lambda: len(sendgrid_server.requests) >= 2)
            redis.restart()  # SIGKILL, then a fresh, empty server on the same socket
            status = wait_until_finished(app, big_newsletter, workers)
        assert status["state"] == "finished", workers.logs()
        assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    finally:
        app.extensions.pop("crm_redis", None)
        workers.stop()
        redis.stop()


def test_429_and_500_for_a_while_delay_but_never_duplicate_or_drop(
    app, sendgrid_server, workers, big_newsletter
):
    sendgrid_server.rate_limit_next(2, reset_in=1)
    sendgrid_server.fail_next(3, status=500)
    sendgrid_server.rate_limit_next(1, reset_in=1)
    assert start(app, big_newsletter) == RECIPIENTS
    workers.start(2)
    status = wait_until_finished(app, big_newsletter, workers)
    assert status["state"] == "finished", workers.logs()
    assert_each_recipient_exactly_once(app, sendgrid_server, big_newsletter, RECIPIENTS)
    refused = Counter(status for status, _body in sendgrid_server.refused)
    assert refused == {429: 3, 500: 3}
    with app.app_context():
        resends = db.session.scalar(db.select(db.func.sum(NewsletterBatch.resends)))
    assert resends >= 1  # 500s are ambiguous: resent only after the grace period


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
