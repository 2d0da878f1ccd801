"""1,000 event registrations posted by 8 concurrent clients to a 60-seat event under
gunicorn, beside 1,000 POST /subscribe by the same clients in the same run.

Reports the total time, the median and p95 time per request of each, their ratio, and
checks the event afterwards: exactly 60 confirmed, 940 waitlisted with the positions
1..940 (no overbooking, no duplicate place). Each request is a new person, so every
one does the real work: validate, lock the event, count seats, find or create the
contact, store the registration, queue the email (to Redis; no worker runs). Rate
limits and the minimum fill time are switched off, as in bench/subscribe.py.

    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/klynge_bench \\
        .venv/bin/python bench/events.py

Without BENCH_DATABASE_URL it runs on SQLite. The database is emptied first.
"""

import http.client
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from bench.subscribe import SignupBodies, signup_form, start_gunicorn  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 1000))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", 8))
SEATS = int(os.environ.get("BENCH_SEATS", 60))
PORT = 5311
WORK = Path(tempfile.gettempdir()) / "klynge-bench-events"


def _post(path: str, body: str) -> tuple[float, int]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    connection.request(
        "POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    return time.perf_counter() - started, response.status


def client(path: str, body_for, worker: int, count: int, results) -> None:
    timings, errors = [], 0
    for n in range(count):
        seconds, status = _post(path, body_for(worker, n))
        timings.append(seconds)
        errors += status not in (200, 303)
    results.put((timings, errors))


def run(path: str, body_for) -> tuple[float, list[float], int]:
    """(wall seconds, every request's seconds, errors) for REQUESTS over CLIENTS."""
    results = multiprocessing.Queue()
    share = [REQUESTS // CLIENTS + (i < REQUESTS % CLIENTS) for i in range(CLIENTS)]
    processes = [
        multiprocessing.Process(target=client, args=(path, body_for, i, share[i], results))
        for i in range(CLIENTS)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    collected = [results.get() for _ in processes]
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    timings = [t for ts, _ in collected for t in ts]
    return elapsed, timings, sum(e for _, e in collected)


class SignupBody:
    """Picklable body maker: bench/subscribe.py's signup bodies, made as they are needed."""

    def __init__(self, hidden: dict):
        self.bodies = SignupBodies(hidden)

    def __call__(self, worker: int, n: int) -> str:
        if n == 0:
            self.bodies.prepare(worker, 0)
        return self.bodies.make()


class RegistrationBody:
    """Picklable body maker: a new person for every request."""

    def __init__(self, started: str):
        self.started = started

    def __call__(self, worker: int, n: int) -> str:
        return urllib.parse.urlencode(
            {
                "name": f"Bench Deltaker {worker}-{n}",
                "email": f"event-{os.getpid()}-{worker}-{n}@example.no",
                "phone": "91234567",
                "company": "Bench AS",
                "participant_type": "other",
                "note": "",
                "terms": "y",
                "started": self.started,
                "website": "",
            }
        )


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def _reset_database(env: dict) -> None:
    url = env["DATABASE_URL"]
    if url.startswith("postgresql"):
        script = (
            "from sqlalchemy import create_engine, text\n"
            f"e = create_engine({url!r})\n"
            "with e.begin() as c:\n"
            "    c.execute(text('DROP SCHEMA public CASCADE; CREATE SCHEMA public'))\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True)
    subprocess.run([str(BIN / "crm"), "db", "upgrade"], env=env, check=True, capture_output=True)


SETUP = """
from datetime import timedelta
from crm import create_app
from crm.events.models import Event, EventSession
from crm.extensions import db
from crm.timeutil import utcnow
app = create_app()
with app.app_context():
    start = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    event = Event(title="Bench seminar", capacity={seats}, published=True, audience="open",
                  sessions=[EventSession(starts_at=start, ends_at=start + timedelta(hours=2))])
    db.session.add(event)
    db.session.commit()
    print(event.id)
"""

CHECK = """
import json
from crm import create_app
from crm.events import services
from crm.events.models import Registration
from crm.extensions import db
app = create_app()
with app.app_context():
    rows = db.session.scalars(db.select(Registration).where(Registration.event_id == {event_id})
                              .order_by(Registration.created_at, Registration.id)).all()
    counts = services.seat_counts({event_id})
    positions = [r.waitlist_position for r in rows if r.status == "waitlisted"]
    in_order = positions == list(range(1, len(positions) + 1))
    print(json.dumps({{"counts": counts, "positions_ok": in_order, "total": len(rows)}}))
"""


def main() -> None:
    WORK.mkdir(exist_ok=True)
    database = WORK / "bench.sqlite3"
    database.unlink(missing_ok=True)
    env = dict(
        os.environ,
        DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{database}"),
        CRM_INSTANCE_PATH=str(WORK / "instance"),
        RATELIMIT_ENABLED="0",
        SUBSCRIBE_MIN_FILL_SECONDS="0",
        MAIL_BACKEND="outbox",
        SECRET_KEY="bench",
    )
    if not env.get("REDIS_URL"):
        from crm.redis_server import ensure_embedded_redis

        env["REDIS_URL"] = ensure_embedded_redis(WORK / "redis")
    _reset_database(env)
    setup = subprocess.run(
        [sys.executable, "-c", SETUP.format(seats=SEATS)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    event_id = int(setup.stdout.strip().splitlines()[-1])

    server = start_gunicorn("crm:create_app()", PORT, env, ["-w", "2"])
    try:
        connection = http.client.HTTPConnection("127.0.0.1", PORT)
        connection.request("GET", f"/arrangementer/{event_id}")
        page = connection.getresponse().read().decode()
        started = re.search(r'name="started"[^>]*value="([^"]+)"', page) or re.search(
            r'value="([^"]+)"[^>]*name="started"', page
        )
        register = run(f"/arrangementer/{event_id}", RegistrationBody(started.group(1)))
        hidden = signup_form(PORT)
        subscribe = run("/subscribe", SignupBody(hidden))
    finally:
        server.terminate()
        server.wait()
    check = subprocess.run(
        [sys.executable, "-c", CHECK.format(event_id=event_id)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    database_kind = "PostgreSQL" if env["DATABASE_URL"].startswith("postgresql") else "SQLite"
    print(
        f"{database_kind}, gunicorn 2 workers, {CLIENTS} clients, {REQUESTS} requests per endpoint"
    )
    for label, (elapsed, timings, errors) in (
        (f"POST /arrangementer/{event_id}", register),
        ("POST /subscribe", subscribe),
    ):
        print(
            f"{label:<24} {elapsed:6.1f} s  {len(timings) / elapsed:7.1f}/s  "
            f"median {statistics.median(timings) * 1000:6.1f} ms  "
            f"p95 {_p95(timings) * 1000:6.1f} ms  errors {errors}"
        )
    print(
        f"ratio registration/subscribe: time {register[0] / subscribe[0]:.2f}, "
        f"p95 {_p95(register[1]) / _p95(subscribe[1]):.2f}"
    )
    print("event afterwards:", check.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
