"""Requests/s and latency of POST /subscribe under gunicorn (2 workers), against a bare
Flask endpoint.

Both servers run under gunicorn with 2 sync workers on 127.0.0.1, loaded in turn by the
same client (CLIENTS processes, a new connection per request, as sync workers close
them) for SECONDS each. Each signup uses a new address, so every request does the real
work: validate, look up the address, store a pending signup, queue the confirmation
email (to Redis; no worker runs). Rate limits and the minimum fill time are switched
off here, or the figure would measure the bot and abuse paths instead. Latency is each
request's time as its client saw it (connect, send, read the whole answer); p50 / p95 over
all requests of the run.

    .venv/bin/python bench/subscribe.py
    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_NAME \
        .venv/bin/python bench/subscribe.py
"""

import http.client
import multiprocessing
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from search import ensure_pg_database, percentile  # noqa: E402

BIN = Path(sys.executable).parent
SECONDS = float(os.environ.get("BENCH_SECONDS", 10))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", 4))
WORK = Path(tempfile.gettempdir()) / "klynge-bench-subscribe"
SECRET_KEY = "bench"


def start_gunicorn(app_spec: str, port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app_spec,
        ],
        cwd=ROOT,
        env=env,
    )
    for _ in range(200):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz" if "crm" in app_spec else "/")
            connection.getresponse().read()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"gunicorn for {app_spec} did not start")


def load(port: int, path: str, body_for, seconds: float, worker: int, results) -> None:
    done = errors = 0
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = body_for(worker, done)
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        latencies.append(time.perf_counter() - started)
        # The signup answers 303 to its "check your inbox" page (post/redirect/get).
        if response.status in (200, 303):
            done += 1
        else:
            errors += 1
    results.put((done, errors, latencies))


@dataclass
class Figures:
    rate: float  # requests/s
    errors: int
    p50_ms: float
    p95_ms: float

    def line(self, label: str) -> str:
        return (
            f"{label:<20}: {self.rate:8.1f} requests/s, p50 {self.p50_ms:6.1f} ms, "
            f"p95 {self.p95_ms:6.1f} ms ({self.errors} errors)"
        )


def measure(port: int, path: str, body_for) -> Figures:
    results = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=load, args=(port, path, body_for, SECONDS, i, results))
        for i in range(CLIENTS)
    ]
    started = time.perf_counter()
    for w in workers:
        w.start()
    totals = [results.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    latencies = [x * 1000 for _, _, run in totals for x in run]
    return Figures(
        rate=sum(d for d, _, _ in totals) / elapsed,
        errors=sum(e for _, e, _ in totals),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
    )


def signup_form(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/subscribe")
    html = connection.getresponse().read().decode()
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    return {k: v for k, v in fields.items() if k in ("started", "wording")}


class SignupBody:
    """Picklable body maker: a new address, and a form token of its own (each token
    starts one signup, as each visitor loads the form), for every request."""

    def __init__(self, hidden: dict):
        self.hidden = hidden

    def __call__(self, worker: int, n: int) -> str:
        from itsdangerous import TimestampSigner

        from crm.subscriptions.tokens import FORM_SALT

        started = TimestampSigner(SECRET_KEY, salt=FORM_SALT).sign(
            f"subscribe.{secrets.token_urlsafe(9)}".encode()
        )
        return urllib.parse.urlencode(
            {
                **self.hidden,
                "started": started.decode(),
                "name": "Bench Marker",
                "email": f"bench-{os.getpid()}-{worker}-{n}@example.no",
                "company": "Bench AS",
                "topics": "generelt",
                "consent": "y",
            }
        )


def no_body(worker: int, n: int) -> str:
    return ""


def signup_settings(sqlite_url: str, work: Path) -> dict[str, str]:
    """The app's settings for a signup benchmark: BENCH_DATABASE_URL or `sqlite_url`,
    rate limits and the minimum fill time off (or the figure would measure the bot and
    abuse paths), emails to the outbox, the form tokens' key."""
    return dict(
        DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", sqlite_url),
        CRM_INSTANCE_PATH=str(work / "instance"),
        RATELIMIT_ENABLED="0",
        SUBSCRIBE_MIN_FILL_SECONDS="0",
        MAIL_BACKEND="outbox",
        SECRET_KEY=SECRET_KEY,
    )


def main() -> None:
    WORK.mkdir(exist_ok=True)
    database = WORK / "bench.sqlite3"
    database.unlink(missing_ok=True)
    env = dict(os.environ, **signup_settings(f"sqlite:///{database}", WORK))
    if env["DATABASE_URL"].startswith("postgresql"):
        ensure_pg_database(env["DATABASE_URL"])
    if not env.get("REDIS_URL"):
        sys.path.insert(0, str(ROOT))
        from crm.redis_server import ensure_embedded_redis

        env["REDIS_URL"] = ensure_embedded_redis(WORK / "redis")
    subprocess.run([str(BIN / "crm"), "db", "upgrade"], env=env, check=True, capture_output=True)

    server = start_gunicorn("bench.bare_app:app", 5301, env)
    try:
        bare = measure(5301, "/", no_body)
    finally:
        server.terminate()
        server.wait()
    app = start_gunicorn("crm:create_app()", 5302, env)
    try:
        hidden = signup_form(5302)
        signup = measure(5302, "/subscribe", SignupBody(hidden))
    finally:
        app.terminate()
        app.wait()
    print(f"database            : {env['DATABASE_URL'].split(':')[0]}")
    print(bare.line("bare Flask endpoint"))
    print(signup.line("POST /subscribe"))
    print(f"{'ratio':<20}: {signup.rate / bare.rate:8.3f} of the bare endpoint's requests/s")


if __name__ == "__main__":
    main()
