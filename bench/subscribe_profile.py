"""Where a signup's time goes, in one process: SQL statements and Redis round trips of one
POST /subscribe, then CPU per signup over many, optionally under cProfile.

The bench's settings (rate limits and minimum fill time off, outbox mail), the Flask test
client, a new address and form token per signup, a fresh SQLite database (or
BENCH_DATABASE_URL). No worker runs: the confirmation emails stay queued.

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
    if profiler:
        stats = pstats.Stats(profiler)
        print(f"{stats.total_calls / SIGNUPS:,.0f} Python calls per signup")
        stats.sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
