"""Load test: 200 concurrent clients against gunicorn on 127.0.0.1, PostgreSQL behind it.

    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/klynge_bench \\
        .venv/bin/python bench/load_test.py [--clients 200] [--seconds 30] [--companies 2000]

Seeds the scratch database (its tables are dropped and made anew) with `crm demo`'s bulk
generator, starts the app under gunicorn (`--workers`, gthread like `make run`), logs 200
clients in as staff, and for `--seconds` has them load what staff and the public load:
company and contact lists, searches, company pages, the signup form and signups; one
client meanwhile posts SendGrid webhook bursts: each one signed POST of `--burst` events
(10,000: delivered and opens, one in a hundred a bounce), up to `--bursts` of them while
the time lasts. Bounded in time and count, only 127.0.0.1. Prints p50/p95 per kind of
request and every error; exits non-zero when any request failed.
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-password-1"
SEARCH_WORDS = ("mek", "trelast", "kongsv", "solor", "hansen", "bygg", "plast", "olsen")


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def add(self, kind: str, seconds: float, error: str = "") -> None:
        with self.lock:
            self.times[kind].append(seconds)
            if error:
                self.errors.append(f"{kind}: {error}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = _free_port()


def request(
    method, path, body=None, headers=None, cookie="", timeout=30
) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    headers = dict(headers or {})
    if cookie:
        headers["Cookie"] = cookie
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), data


def login(email: str) -> str:
    status, headers, html = request("GET", "/login")
    cookie = headers.get("Set-Cookie", "").split(";", 1)[0]
    token = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        rb'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    body = urllib.parse.urlencode(
        {
            "email": email,
            "password": PASSWORD,
            "csrf_token": token.group(1).decode() if token else "",
        }
    )
    status, headers, _ = request(
        "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}, cookie
    )
    if status != 302:
        raise SystemExit(f"login as {email} failed: {status}")
    return headers.get("Set-Cookie", cookie).split(";", 1)[0]


def staff_client(cookie: str, company_ids: list[int], deadline: float, results: Results, seed: int):
    rng = random.Random(seed)
    while time.perf_counter() < deadline:
        choice = rng.random()
        if choice < 0.25:
            kind, path = "company list", f"/companies?page={rng.randint(1, 5)}"
        elif choice < 0.45:
            kind, path = "contact list", f"/contacts?page={rng.randint(1, 5)}"
        elif choice < 0.75:
            what = rng.choice(("companies", "contacts"))
            kind, path = "search", f"/{what}?q={rng.choice(SEARCH_WORDS)}"
        else:
            kind, path = "company page", f"/companies/{rng.choice(company_ids)}"
        _timed(results, kind, "GET", path, cookie=cookie)


def public_client(deadline: float, results: Results, seed: int):
    rng = random.Random(seed)
    n = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            status, headers, html = request("GET", "/subscribe")
            results.add("signup form", time.perf_counter() - started, _bad(status, 200))
            fields = dict(re.findall(rb'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
            n += 1
            body = urllib.parse.urlencode(
                {
                    "started": fields.get(b"started", b"").decode(),
                    "wording": fields.get(b"wording", b"").decode(),
                    "name": "Last Test",
                    "email": f"last-{seed}-{n}-{rng.randint(0, 10**9)}@example.no",
                    "topics": "generelt",
                    "consent": "y",
                }
            )
            _timed(
                results,
                "signup",
                "POST",
                "/subscribe",
                body,
                {"Content-Type": "application/x-www-form-urlencoded"},
                ok=(200, 303),
            )
        except OSError as exc:
            results.add("signup form", time.perf_counter() - started, repr(exc))


def webhook_client(signer, deadline: float, results: Results, burst: int, bursts: int):
    kind = f"webhook ({burst:,} events)"
    for number in range(bursts):
        if time.perf_counter() >= deadline:
            break
        events = []
        for i in range(burst):
            event = "bounce" if i % 100 == 99 else ("delivered", "open")[i % 2]
            events.append(
                {
                    "email": f"person{i}@example.no",
                    "timestamp": int(time.time()),
                    "event": event,
                    "sg_event_id": f"load-{number}-{i}-{time.time_ns()}",
                    "sg_message_id": f"load{i}.filter",
                    **(
                        {"reason": "550 5.1.1 unknown user", "type": "bounce"}
                        if event == "bounce"
                        else {}
                    ),
                }
            )
        body = json.dumps(events).encode()
        # A burst of 10,000 is a large request: it may take longer than a page.
        _timed(results, kind, "POST", "/webhooks/sendgrid", body, signer(body), timeout=120)


def _bad(status: int, *ok: int) -> str:
    return "" if status in ok else f"HTTP {status}"


def _timed(results, kind, method, path, body=None, headers=None, cookie="", ok=(200,), timeout=30):
    started = time.perf_counter()
    try:
        status, _, _ = request(method, path, body, headers, cookie, timeout)
        error = _bad(status, *ok)
    except OSError as exc:
        error = repr(exc)
    results.add(kind, time.perf_counter() - started, error)


def make_signer():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()

    def headers(body: bytes) -> dict:
        stamp = str(int(time.time()))
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        }

    return public, headers


def seed(env: dict, companies: int, staff: int) -> list[int]:
    code = f"""
import random
from sqlalchemy import text
from crm import create_app
from crm.extensions import db
app = create_app()
with app.app_context():
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    from flask_migrate import upgrade
    upgrade()
    from crm.members import demo
    from crm.members.models import Company
    from crm.auth.services import create_user
    from datetime import date
    rng = random.Random(7)
    demo.generate(db.session, companies={companies}, rng=rng, today=date.today(), bulk=True)
    for n in range({staff}):
        create_user(f"staff{{n}}@example.no", "staff", password={PASSWORD!r})
    db.session.commit()
    print(",".join(str(i) for i in db.session.scalars(db.select(Company.id).limit(500))))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return [int(i) for i in result.stdout.strip().splitlines()[-1].split(",")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--companies", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--burst", type=int, default=10_000, help="events per webhook POST")
    parser.add_argument("--bursts", type=int, default=3, help="webhook POSTs at most")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="klynge-load-"))
    public_key, signer = make_signer()
    env = dict(
        os.environ,
        DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{work / 'load.sqlite3'}"),
        CRM_INSTANCE_PATH=str(work / "instance"),
        SECRET_KEY="bench",
        RATELIMIT_ENABLED="0",  # 200 clients on one address: the limits would answer 429
        SUBSCRIBE_MIN_FILL_SECONDS="0",
        SENDGRID_WEBHOOK_PUBLIC_KEY=public_key,
        PYTHONPATH=str(ROOT),
    )
    if not env.get("REDIS_URL"):
        sys.path.insert(0, str(ROOT))
        from crm.redis_server import ensure_embedded_redis

        env["REDIS_URL"] = ensure_embedded_redis(work / "redis")
    staff = max(1, args.clients // 20)
    company_ids = seed(env, args.companies, staff)
    server = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--workers", str(args.workers),
            "--worker-class", "gthread",
            "--threads", str(args.threads),
            "--bind", f"127.0.0.1:{PORT}",
            "--log-level", "warning",
            "crm:create_app()",
        ],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                if request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        cookies = [login(f"staff{n}@example.no") for n in range(staff)]
        results = Results()
        deadline = time.perf_counter() + args.seconds
        webhook = (signer, deadline, results, args.burst, args.bursts)
        threads = [threading.Thread(target=webhook_client, args=webhook)]
        for n in range(args.clients - 1):
            if n % 5 == 4:
                target, targs = public_client, (deadline, results, n)
            else:
                cookie = cookies[n % len(cookies)]
                target, targs = staff_client, (cookie, company_ids, deadline, results, n)
            threads.append(threading.Thread(target=target, args=targs, daemon=True))
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.seconds + 120)
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    database = "PostgreSQL" if env["DATABASE_URL"].startswith("postgresql") else "SQLite"
    total = sum(len(t) for t in results.times.values())
    print(
        f"{args.clients} clients, {elapsed:.0f} s, {database}, gunicorn {args.workers} workers "
        f"x {args.threads} threads, {args.companies} companies: {total} requests, "
        f"{total / elapsed:.0f}/s, {len(results.errors)} errors"
    )
    print(f"{'request':26} {'count':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for kind, times in sorted(results.times.items()):
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        print(f"{kind:26} {len(times):7} {statistics.median(times) * 1000:8.0f} {p95 * 1000:8.0f}")
    for error in results.errors[:20]:
        print("error:", error)
    sys.exit(1 if results.errors else 0)


if __name__ == "__main__":
    main()
