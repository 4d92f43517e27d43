"""`make console`: the demo's world with the operator console open, until Enter is pressed.

It starts what the demo starts (embedded Postgres and Redis when no URL is set, the stand-in
LLM, a worker, the scheduler), plus `backfill api`, makes a deployment secret under the run
directory and a fresh admin key, and creates a backfill that runs slowly enough to watch (a
few of its sessions fail, so requeue has something to do). Then it prints the console's
URL and the key.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from scheduler.cli.runtime import open_database, resolve_settings
from scheduler.dev import processes
from scheduler.dev.demo import DEMO_WORKSPACE, demo_filters
from scheduler.dev.demo_data import generate_demo_dataset, write_jsonl
from scheduler.jobs import audit, keys, operations
from scheduler.jobs.importer import import_batch, parse_import_file
from scheduler.webhooks.secretbox import new_secret_key
from shared.db import Database
from shared.migrate import upgrade_to_head
from shared.settings import get_settings

console = Console(stderr=True)
SESSIONS = 2400
CONCURRENCY = 8
# Slow enough that the job runs for a minute or two: long enough to watch it live.
LLM_LATENCY_MS = 600
# A refusal fails its session at once; requeued, it draws again and most likely succeeds.
REFUSED_SHARE = 0.01


def run_console() -> None:
    settings = resolve_settings(need_broker=True)
    run_dir = Path(settings.backfill_run_dir)
    if not settings.secret_key:
        os.environ["BACKFILL_SECRET_KEY"] = deployment_secret(run_dir / "secret-key")
        get_settings.cache_clear()
        settings = get_settings()
    upgrade_to_head(settings.require_database_url())
    db = open_database(settings)
    _import_dataset(db, run_dir)
    started: list[subprocess.Popen[bytes]] = []
    try:
        stubbed = _start_llm(run_dir, started)
        logs = run_dir / "logs"
        started.append(processes.start(processes.backfill_command(
            "worker", "--concurrency", str(CONCURRENCY)), logs / "worker.log"))
        started.append(processes.start(processes.backfill_command("scheduler"),
                                       logs / "scheduler.log"))
        port = processes.free_port()
        started.append(processes.start(processes.backfill_command("api", "--port", str(port)),
                                       logs / "api.log"))
        processes.wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=60)
        admin = keys.create_admin_key(db, audit.os_actor())
        job = operations.create_job(db, settings, DEMO_WORKSPACE, "call", demo_filters(db),
                                    actor=audit.os_actor(), reason="operator console tour")
        console.print(f"backfill {job.job_id} is running")
        if stubbed:
            console.print(f"the stand-in refuses {REFUSED_SHARE:.0%} of requests: those sessions "
                          "end failed, for the job page's requeue button")
        console.print(f"\nconsole:   http://127.0.0.1:{port}/console/")
        console.print("admin key (shown once):")
        print(admin.key, flush=True)
        console.print(f"\nlogs in {logs}/; press Enter to stop everything")
        _wait_for_enter()
    finally:
        for process in reversed(started):
            processes.stop(process)
        db.dispose()
        console.print(f"stopped {len(started)} processes")


def deployment_secret(path: Path) -> str:
    """The run directory's deployment secret, made once and readable by its owner only."""
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = new_secret_key()
    path.write_text(secret + "\n", encoding="ascii")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return secret


def _import_dataset(db: Database, run_dir: Path) -> None:
    path = run_dir / "console-sessions.jsonl"
    write_jsonl(generate_demo_dataset(sessions=SESSIONS), path)
    import_batch(db, parse_import_file(path))


def _start_llm(run_dir: Path, started: list[subprocess.Popen[bytes]]) -> bool:
    """The stand-in, unless Claude is configured; whether the stand-in answers."""
    if get_settings().llm_mode == "anthropic":
        console.print("ANTHROPIC_API_KEY is set: analysing with Claude")
        return False
    port = processes.free_port()
    started.append(processes.start(processes.backfill_command(
        "llm-stub", "--port", str(port), "--latency-ms", str(LLM_LATENCY_MS),
        "--fault", f"refusal={REFUSED_SHARE}"),
        run_dir / "logs" / "llm-stub.log"))
    processes.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    os.environ["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    os.environ["BACKFILL_LLM"] = "stub"
    get_settings.cache_clear()
    console.print(f"no ANTHROPIC_API_KEY: the local stand-in answers on port {port}")
    return True


def _wait_for_enter() -> None:
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops everything just as well
        sys.stdin.readline()


if __name__ == "__main__":
    run_console()
