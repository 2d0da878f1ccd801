"""Where a signup's time goes, in one process: SQL statements and Redis round trips of one
POST /subscribe, then CPU per signup over many, optionally under cProfile.

The bench's settings (rate limits and minimum fill time off, outbox mail), the Flask test
client, a new address and form token per signup, a fresh SQLite database (or
BENCH_DATABASE_URL). Then the worker's share, in the same process: the job that stores
the confirmation emails, and the emails' send jobs.

    .venv/bin/python bench/subscribe_profile.py                 # counts and ms per signup
    BENCH_PROFILE=1 .venv/bin/python bench/subscribe_profile.py # and the cProfile top 40
"""

import cProfile
import os
import pstats
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The gunicorn benchmark's settings (this script runs from bench/, beside it).
from subscribe import SECRET_KEY, signup_settings  # noqa: E402

SIGNUPS = int(os.environ.get("BENCH_SIGNUPS", 500))
WORK = Path(tempfile.mkdtemp(prefix="klynge-signup-profile-"))


def main() -> None:
    os.environ.update(signup_settings(f"sqlite:///{WORK / 'p.sqlite3'}", WORK))
    crm = Path(sys.executable).parent / "crm"
    subprocess.run([str(crm), "db", "upgrade"], check=True, capture_output=True)

    import redis.connection
    from itsdangerous import TimestampSigner
    from sqlalchemy import event

    from crm import create_app
    from crm.extensions import db
    from crm.subscriptions.tokens import FORM_SALT

    app = create_app()
    client = app.test_client()
    html = client.get("/subscribe").get_data(as_text=True)
    hidden = {
        k: v
        for k, v in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html)
        if k == "wording"
    }
    signer = TimestampSigner(SECRET_KEY, salt=FORM_SALT)

    def body(n: int) -> dict:
        started = signer.sign(f"subscribe.{secrets.token_urlsafe(9)}".encode()).decode()
        return {
            **hidden,
            "started": started,
            "name": "Bench Marker",
            "email": f"profile-{n}-{secrets.token_hex(3)}@example.no",
            "company": "Bench AS",
            "topics": "generelt",
            "consent": "y",
        }

    for n in range(20):  # warm up: compiled statements, templates, connections
        assert client.post("/subscribe", data=body(n)).status_code == 303

    statements, round_trips = [], [0]
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", lambda c, cu, s, *a: statements.append(s))
    connection_class = redis.connection.AbstractConnection
    send = connection_class.send_packed_command

    def counted(self, *args, **kwargs):
        round_trips[0] += 1
        return send(self, *args, **kwargs)

    connection_class.send_packed_command = counted
    client.post("/subscribe", data=body(20))
    connection_class.send_packed_command = send
    print(f"SQL statements in one signup: {len(statements)}")
    for statement in statements:
        print("   ", " ".join(statement.split())[:110])
    print(f"Redis round trips in one signup: {round_trips[0]}")

    bodies = [body(n) for n in range(SIGNUPS)]
    profiler = cProfile.Profile() if os.environ.get("BENCH_PROFILE") == "1" else None
    started, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for data in bodies:
        client.post("/subscribe", data=data)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{SIGNUPS} signups: {wall / SIGNUPS * 1000:.2f} ms each, "
        f"CPU {cpu / SIGNUPS * 1000:.2f} ms each{' (under cProfile)' if profiler else ''}"
    )
    if not profiler:
        bare = bare_cpu()
        print(
            f"the bare endpoint through the same test client, in the same minute: CPU "
            f"{bare * 1000:.2f} ms each; a signup costs {cpu / SIGNUPS / bare:.1f} of them"
        )
    if profiler:
        stats = pstats.Stats(profiler)
        print(f"{stats.total_calls / SIGNUPS:,.0f} Python calls per signup")
        stats.sort_stats("cumulative").print_stats(40)
    worker_share(app)


def bare_cpu() -> float:
    """CPU seconds per request of bench/bare_app.py through the Flask test client: a
    yardstick measured beside the signups, as the machine's speed drifts."""
    from bare_app import app as bare_app

    client = bare_app.test_client()
    for _ in range(50):
        client.post("/")
    cpu = time.process_time()
    for _ in range(SIGNUPS):
        client.post("/")
    return (time.process_time() - cpu) / SIGNUPS


def worker_share(app) -> None:
    """The worker's part of each signup, which the request no longer waits for: the job
    that stores the confirmation emails, then each email's send job (render, write to
    the outbox)."""
    from sqlalchemy import select

    from crm.extensions import db
    from crm.mail.models import EmailMessage
    from crm.mail.tasks import send_message
    from crm.subscriptions.tasks import send_confirmations

    with app.app_context():
        started, cpu = time.perf_counter(), time.process_time()
        stored = send_confirmations()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"worker: the confirmations job stored {stored} emails, "
            f"{wall / stored * 1000:.2f} ms each, CPU {cpu / stored * 1000:.2f} ms each"
        )
        uuids = db.session.scalars(select(EmailMessage.uuid).limit(200)).all()
    started, cpu = time.perf_counter(), time.process_time()
    for uuid in uuids:
        with app.app_context():
            send_message(uuid)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"worker: {len(uuids)} send jobs (render, outbox), {wall / len(uuids) * 1000:.2f} ms "
        f"each, CPU {cpu / len(uuids) * 1000:.2f} ms each (RQ's own work per job not counted)"
    )


if __name__ == "__main__":
    main()
