"""Requests/s and latency of POST /subscribe under gunicorn, against a bare Flask endpoint.

Both servers run under the same gunicorn configuration on 127.0.0.1, side by side, and
the same client (CLIENTS processes, a new connection per request) loads them in turn, in
alternating slices of SLICE seconds (bare first), SECONDS in all for each: both endpoints
see the same minutes of the machine, whose speed drifts by a third from one minute to
the next (until 2026-12-07 each had one block of SECONDS, the bare endpoint's first; its
rate swung 1,100-3,800 requests/s between runs minutes apart). The server not being
loaded sits idle. Two configurations, each printed: `sync` (2 sync workers, the figure
of earlier runs) and `gthread` (2 workers x 4 threads, what `crm serve`
runs: crm/cli.py `_gunicorn`). Each on SQLite and on PostgreSQL (BENCH_PG_URL, a database
for the bench only: its schema is dropped and made anew; skipped when PostgreSQL does not
answer); BENCH_DATABASE_URL measures that one database only.

Each signup uses a new address and form token, so every request does the real work:
validate, store the pending signup, wake the job that writes the confirmation email (to
Redis; no worker runs, so the emails stay unwritten: the worker's share is measured by
bench/subscribe_profile.py). Rate limits and the minimum fill time are off here, or the
figure would measure the bot and abuse paths instead. Latency is each request's time as
its client saw it (connect, send, read the whole answer); p50 / p95 over all requests of
the run. "server CPU" is the gunicorn processes' CPU time per request (user + system),
"client CPU" the load processes'; "database CPU" (PostgreSQL only) that of the server
processes serving the bench's database (its backends, found by their process title;
PostgreSQL's shared background processes and Redis are not counted anywhere).

The signup bodies are built before the clock starts (since 2026-12-07): each load
process makes its share (a new address and a form token of its own in each, every
token signed by itsdangerous as the form does), then all of them start together. Until
then each body was signed and urlencoded inside the timed loop, 0.1-0.15 ms of the
load processes' CPU per signup taken from the same two cores as the server measured;
a visitor's browser does that work, not our server. Each token still starts one signup
only. A request counts for the slice it started in; the one under way when a slice ends
finishes first (a few ms of a slice of a second, either way).

    .venv/bin/python bench/subscribe.py
    BENCH_SECONDS=8 BENCH_CONFIGS=gthread .venv/bin/python bench/subscribe.py
    BENCH_ROUNDS=3 .venv/bin/python bench/subscribe.py    # and the median of three
    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_NAME \
        .venv/bin/python bench/subscribe.py
"""

import http.client
import multiprocessing
import os
import re
import secrets
import statistics
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
# Length of each slice of load on one endpoint; the endpoints alternate (see above).
SLICE = float(os.environ.get("BENCH_SLICE", 1.0))
# Each round measures every database and configuration once more, in the same order;
# with more than one the medians are printed too (the machine drifts between minutes).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 1))
# Signup bodies built ahead per load process and second of the run (SignupBodies).
BODY_RATE = int(os.environ.get("BENCH_BODY_RATE", 1000))
WORK = Path(tempfile.gettempdir()) / "klynge-bench-subscribe"
SECRET_KEY = "bench"


PG_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_subscribe"
)
# name -> gunicorn options; "gthread" is crm serve's configuration (crm/cli.py _gunicorn).
CONFIGS = {
    "sync": ["-w", "2"],
    "gthread": ["-w", "2", "--threads", "4", "--worker-class", "gthread"],
}


def start_gunicorn(app_spec: str, port: int, env: dict, options: list[str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            *options,
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


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Endpoint:
    port: int
    path: str
    make_bodies: object  # picklable: worker number -> an object with next()


@dataclass
class Tally:
    """One load process's count of one endpoint."""

    done: int = 0
    errors: int = 0
    cpu: float = 0.0
    latencies: list | None = None


def load(endpoints: list[Endpoint], seconds: float, worker: int, ready, go, start, results):
    # Everything a request sends is made before the clock starts (see the docstring).
    bodies = [e.make_bodies(worker) for e in endpoints]
    tallies = [Tally(latencies=[]) for _ in endpoints]
    ready.put(worker)
    go.wait()
    slices = max(1, round(seconds / SLICE))
    for number in range(slices * len(endpoints)):
        which = number % len(endpoints)
        endpoint, tally, made = endpoints[which], tallies[which], bodies[which]
        # All load processes share the start (time.monotonic is the system's clock).
        deadline = start.value + (number + 1) * seconds / slices
        cpu = time.process_time()
        while time.monotonic() < deadline:
            body = made.next()
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
            connection.request("POST", endpoint.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            tally.latencies.append(time.perf_counter() - started)
            # The signup answers 303 to its "check your inbox" page (post/redirect/get).
            if response.status in (200, 303):
                tally.done += 1
            else:
                tally.errors += 1
        tally.cpu += time.process_time() - cpu
    results.put(tallies)


@dataclass
class Figures:
    rate: float  # requests/s
    errors: int
    p50_ms: float
    p95_ms: float
    server_cpu_ms: float  # gunicorn's CPU per request
    client_cpu_ms: float  # the load processes' CPU per request
    database_cpu_ms: float | None  # the bench database's PostgreSQL backends' CPU

    def line(self, label: str) -> str:
        database = (
            "" if self.database_cpu_ms is None else f", database {self.database_cpu_ms:.2f} ms"
        )
        return (
            f"{label:<22}: {self.rate:8.1f} requests/s, p50 {self.p50_ms:6.1f} ms, "
            f"p95 {self.p95_ms:6.1f} ms ({self.errors} errors); CPU per request: "
            f"server {self.server_cpu_ms:.2f} ms, client {self.client_cpu_ms:.2f} ms"
            f"{database}"
        )


def measure(servers: list[subprocess.Popen], endpoints: list[Endpoint], url: str) -> list[Figures]:
    """Load `endpoints` in alternating slices, SECONDS each in all; one Figures each
    (servers[i] serves endpoints[i])."""
    ready, go, results = multiprocessing.Queue(), multiprocessing.Event(), multiprocessing.Queue()
    start = multiprocessing.Value("d", 0.0)
    workers = [
        multiprocessing.Process(
            target=load, args=(endpoints, SECONDS, i, ready, go, start, results)
        )
        for i in range(CLIENTS)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get()
    server_cpu = [process_tree_cpu(s.pid) for s in servers]
    database_cpu = database_backends_cpu(url)
    start.value = time.monotonic()
    go.set()
    totals = [results.get() for _ in workers]
    for w in workers:
        w.join()
    figures = []
    for index, server in enumerate(servers):
        tallies = [t[index] for t in totals]
        requests = max(1, sum(t.done + t.errors for t in tallies))
        latencies = [x * 1000 for t in tallies for x in t.latencies]
        database_ms = None
        if database_cpu is not None and endpoints[index].path != "/":
            # Only the signup uses the database.
            database_ms = (database_backends_cpu(url) - database_cpu) / requests * 1000
        figures.append(
            Figures(
                rate=sum(t.done for t in tallies) / SECONDS,
                errors=sum(t.errors for t in tallies),
                p50_ms=percentile(latencies, 50),
                p95_ms=percentile(latencies, 95),
                server_cpu_ms=(process_tree_cpu(server.pid) - server_cpu[index]) / requests * 1000,
                client_cpu_ms=sum(t.cpu for t in tallies) / requests * 1000,
                database_cpu_ms=database_ms,
            )
        )
    return figures


def database_backends_cpu(url: str) -> float | None:
    """CPU seconds of the PostgreSQL backends serving `url`'s database (each one's title
    names it: "postgres: 15/main: USER DATABASE HOST(PORT) STATE"); None for SQLite. A
    backend that ends within the run is missed: the workers' pooled connections live
    through it."""
    if not url.startswith("postgresql"):
        return None
    name = url.rsplit("/", 1)[1]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().decode(errors="replace").split()
            if len(title) < 4 or title[0] != "postgres:" or title[3] != name:
                continue
            fields = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def signup_form(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/subscribe")
    html = connection.getresponse().read().decode()
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    return {k: v for k, v in fields.items() if k in ("started", "wording")}


class SignupBodies:
    """Picklable maker of one load process's signup bodies, all built before the clock
    starts: a new address, and a form token of its own (each token starts one signup, as
    each visitor loads the form), in every body. Enough for BODY_RATE requests/s per
    load process for the whole run; should a run outpace that, the rest are made as
    they are needed (and counted as the client's CPU)."""

    def __init__(self, hidden: dict):
        self.hidden = hidden

    def __call__(self, worker: int) -> "SignupBodies":
        return self.prepare(worker, int(BODY_RATE * SECONDS))

    def prepare(self, worker: int, count: int) -> "SignupBodies":
        from itsdangerous import TimestampSigner

        from crm.subscriptions.tokens import FORM_SALT

        self.worker, self.made = worker, 0
        self.signer = TimestampSigner(SECRET_KEY, salt=FORM_SALT)
        self.ready = [self.make() for _ in range(count)]
        self.ready.reverse()  # taken from the end
        return self

    def make(self) -> str:
        started = self.signer.sign(f"subscribe.{secrets.token_urlsafe(9)}".encode())
        self.made += 1
        return urllib.parse.urlencode(
            {
                **self.hidden,
                "started": started.decode(),
                "name": "Bench Marker",
                "email": f"bench-{os.getpid()}-{self.worker}-{self.made}@example.no",
                "company": "Bench AS",
                "topics": "generelt",
                "consent": "y",
            }
        )

    def next(self) -> str:
        return self.ready.pop() if self.ready else self.make()


class NoBodies:
    """The bare endpoint's: an empty body for every request."""

    def __call__(self, worker: int) -> "NoBodies":
        return self

    def next(self) -> str:
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


def databases() -> list[str]:
    if os.environ.get("BENCH_DATABASE_URL"):
        return [os.environ["BENCH_DATABASE_URL"]]
    urls = [f"sqlite:///{WORK / 'bench.sqlite3'}"]
    try:
        ensure_pg_database(PG_URL)
        urls.append(PG_URL)
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL here: measure SQLite only
        print(f"PostgreSQL skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    return urls


def fresh_database(url: str, env: dict) -> None:
    if url.startswith("sqlite"):
        (WORK / "bench.sqlite3").unlink(missing_ok=True)
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    subprocess.run([str(BIN / "crm"), "db", "upgrade"], env=env, check=True, capture_output=True)


def run(config: str, url: str, base_env: dict) -> tuple[Figures, Figures]:
    env = dict(base_env, DATABASE_URL=url)
    fresh_database(url, env)
    options = CONFIGS[config]
    servers = []
    try:
        servers.append(start_gunicorn("bench.bare_app:app", 5301, env, options))
        servers.append(start_gunicorn("crm:create_app()", 5302, env, options))
        hidden = signup_form(5302)
        bare, signup = measure(
            servers,
            [Endpoint(5301, "/", NoBodies()), Endpoint(5302, "/subscribe", SignupBodies(hidden))],
            url,
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    return bare, signup


def main() -> None:
    WORK.mkdir(exist_ok=True)
    env = dict(os.environ, **signup_settings("", WORK))
    if not env.get("REDIS_URL"):
        sys.path.insert(0, str(ROOT))
        from crm.redis_server import ensure_embedded_redis

        env["REDIS_URL"] = ensure_embedded_redis(WORK / "redis")
    configs = os.environ.get("BENCH_CONFIGS", "sync,gthread").split(",")
    print(
        f"load average at the start: {os.getloadavg()[0]:.2f}; "
        f"{CLIENTS} clients, {SECONDS:g} s each in slices of {SLICE:g} s"
    )
    rows = []
    urls = databases()
    for round_number in range(1, ROUNDS + 1):
        for url in urls:
            for config in configs:
                rows.append(measure_pair(round_number, config, url, env))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print()
    print(
        "| round | database | gunicorn | bare req/s (p50 / p95 ms) "
        "| signup req/s (p50 / p95 ms) | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for round_number, name, config, bare, signup in rows:
        print(
            f"| {round_number} | {name} | {config} "
            f"| {bare.rate:,.1f} ({bare.p50_ms:.1f} / {bare.p95_ms:.1f}) "
            f"| {signup.rate:,.1f} ({signup.p50_ms:.1f} / {signup.p95_ms:.1f}) "
            f"| {signup.rate / bare.rate:.3f} |"
        )
    if ROUNDS > 1:
        print()
        for key in dict.fromkeys((name, config) for _, name, config, _, _ in rows):
            ratios = [s.rate / b.rate for _, n, c, b, s in rows if (n, c) == key]
            p95s = [s.p95_ms for _, n, c, _, s in rows if (n, c) == key]
            print(
                f"{key[0]:<10} {key[1]:<8}: median ratio {statistics.median(ratios):.3f} "
                f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}), "
                f"signup p95 median {statistics.median(p95s):.1f} ms"
            )


def measure_pair(round_number: int, config: str, url: str, env: dict):
    bare, signup = run(config, url, env)
    name = url.split(":")[0].split("+")[0]
    print(f"--- round {round_number}, {name}, gunicorn {config} ({' '.join(CONFIGS[config])})")
    print(bare.line("bare Flask endpoint"))
    print(signup.line("POST /subscribe"))
    print(f"{'ratio':<22}: {signup.rate / bare.rate:8.3f} of the bare endpoint's requests/s")
    print(f"{'load average':<22}: {os.getloadavg()[0]:.2f}")
    return round_number, name, config, bare, signup


if __name__ == "__main__":
    main()
