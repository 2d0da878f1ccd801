"""`make run`'s `crm serve`: gunicorn (not Werkzeug's development server) with one RQ
worker beside it, sharing one embedded Redis; Ctrl-C stops all of them."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CRM = Path(sys.executable).with_name("crm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found += [int(c) for c in children.read_text().split()]
    return found


@pytest.mark.slow
def test_serve_runs_gunicorn_with_a_worker_and_ctrl_c_stops_everything(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "FLASK_APP", "CRM_TEST_DB")
    }
    env.update(CRM_INSTANCE_PATH=str(tmp_path), PYTHONUNBUFFERED="1")
    subprocess.run([str(CRM), "db", "upgrade"], cwd=ROOT, env=env, check=True, timeout=300)
    port = _free_port()
    server = subprocess.Popen(
        [str(CRM), "serve", "--port", str(port), "--workers", "1", "--threads", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        response = None
        while time.monotonic() < deadline:
            try:
                response = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        assert response is not None and response.status == 200
        assert "gunicorn" in response.headers.get("Server", "")
        assert b'"redis":"ok"' in response.read().replace(b" ", b"")
        helpers = _children(server.pid)  # the RQ worker, gunicorn's workers, Redis
        assert len(helpers) >= 3

        server.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = server.communicate(timeout=90)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, output
    assert "Stopped." in output
    assert "WARNING: This is a development server" not in output
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in helpers if _alive(pid)]
    assert not (tmp_path / "redis.sock").exists() or not _socket_answers(tmp_path / "redis.sock")


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True
