"""scripts/subscribe_smoke.py works: against the app served on a port with a real worker."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture
def worker_log(tmp_path):
    """A real RQ worker beside the served app, as `make run` starts one; yields its log."""
    log = tmp_path / "worker.log"
    with log.open("w") as fh:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=dict(os.environ),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    yield log
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_smoke_script_subscribes_confirms_and_unsubscribes(
    app,
    live_server,
    worker_log,
    monkeypatch,
):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)
    app.config["WTF_CSRF_ENABLED"] = True  # as under `make run`
    outbox = Path(app.config["OUTBOX_DIR"])
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "subscribe_smoke.py"),
            live_server.url,
            str(outbox),
            "--email",
            "smoke@example.no",
            "--min-fill",
            "0",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr + worker_log.read_text()[-2000:]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.stdout
    assert result.stdout.strip().endswith("OK")
