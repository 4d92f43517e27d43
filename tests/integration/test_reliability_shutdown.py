"""Real worker and scheduler processes: a deploy (SIGTERM every worker while tasks are in flight,
then start new ones) loses nothing and runs nothing twice; two overlapping backfills of the same
sessions leave each session with the analysis of the run that started last."""

from __future__ import annotations

import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from chaos.cluster import scratch_database
from chaos.seed import workspace_with_calls
from scheduler.dev import processes
from scheduler.dev.llm_stub import StubServer, make_server
from scheduler.dev.processes import wait_for_log
from scheduler.jobs import planner
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

LOG_DIR = Path(__file__).resolve().parents[2] / ".run" / "test" / "logs"
SLOW_LLM_MS = 2000


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = make_server("127.0.0.1", 0, latency_ms=50)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class System:
    env: dict[str, str]
    settings: Settings
    db: Database
    started: int = 0

    def start_workers(self, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
        """Started side by side (each takes seconds to import), then awaited."""
        started = []
        for _ in range(count):
            self.started += 1
            name = f"reliability-worker-{self.started}"
            log_path = LOG_DIR / f"{name}.log"
            log_path.unlink(missing_ok=True)
            started.append((log_path, processes.start(processes.backfill_command(
                "worker", "--concurrency", str(concurrency), "--", "--hostname",
                f"{name}@%h"), log_path, self.env)))
        for log_path, process in started:
            wait_for_log(log_path, "ready.", process)
        return [process for _, process in started]


@pytest.fixture(scope="module")
def system(database_url: str, broker_url: str, stub: StubServer) -> Iterator[System]:
    with scratch_database(database_url, "backfill_deploy") as url:
        env = {
            "DATABASE_URL": url, "BROKER_URL": broker_url,
            "BACKFILL_QUEUE": f"backfill_deploy_{secrets.token_hex(4)}",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{stub.server_address[1]}",
            "BACKFILL_LLM": "stub", "ANTHROPIC_API_KEY": "",
            "BACKFILL_DISPATCH_INTERVAL_S": "0.2", "BACKFILL_LEASE_S": "5",
            "BACKFILL_LOST_MESSAGE_GRACE_S": "3", "BACKFILL_RECONCILE_INTERVAL_S": "1",
            "BACKFILL_LEADER_RETRY_S": "0.5",
        }
        settings = Settings(database_url=url)
        db = Database.from_settings(settings, pool_size=3)
        log_path = LOG_DIR / "reliability-scheduler.log"
        log_path.unlink(missing_ok=True)
        scheduler = processes.start(processes.backfill_command("scheduler"), log_path, env)
        try:
            wait_for_log(log_path, "scheduler running", scheduler)
            yield System(env, settings, db)
        finally:
            processes.stop(scheduler)
            db.dispose()


def states(db: Database, job: str) -> dict[str, int]:
    with db.transaction() as tx:
        return dict(tx.execute(text("SELECT state, count(*) FROM backfill_items "
                                    "WHERE job_id = :j GROUP BY state"), {"j": job}).all())


def wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def new_job(system: System, calls: int) -> tuple[str, list[str]]:
    suffix = secrets.token_hex(4)
    sids = [f"call_{suffix}_{n:02d}" for n in range(calls)]
    workspace_with_calls(system.db, f"ws_{suffix}", {sid: f"call {n}" for n, sid in
                                                      enumerate(sids)})
    job = planner.create_job(system.db, system.settings, f"ws_{suffix}", "call", []).job_id
    return job, sids


def test_a_deploy_loses_nothing_and_runs_nothing_twice(system: System,
                                                       stub: StubServer) -> None:
    stub.latency_ms = SLOW_LLM_MS  # tasks are in flight for seconds when SIGTERM lands
    workers = system.start_workers(2, concurrency=3)
    job, sids = new_job(system, 12)
    try:
        wait_for(lambda: states(system.db, job).get("running", 0) == 6, 60, "6 running")
        for worker in workers:  # the deploy: every old worker is told to stop at once
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(30) for worker in workers] == [0, 0]
        after_stop = states(system.db, job)
        assert after_stop.get("running", 0) == 0  # in-flight tasks finished, none abandoned
        assert after_stop.get("succeeded", 0) >= 6
        workers += system.start_workers(2, concurrency=3)
        wait_for(lambda: states(system.db, job) == {"succeeded": 12}, 90, "job done")
    finally:
        stub.latency_ms = 50
        for worker in workers:
            processes.stop(worker)
    with system.db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT i.attempts, i.error_kind, count(r.id) AS runs
              FROM backfill_items AS i
              LEFT JOIN analysis_runs AS r ON r.job_id = i.job_id AND r.session_id = i.session_id
             WHERE i.job_id = :j GROUP BY i.session_id, i.attempts, i.error_kind
        """), {"j": job}).all()
    # Every item ran exactly once: finished by the old workers or first run by the new ones.
    assert [(r.attempts, r.error_kind, r.runs) for r in rows] == [(1, None, 1)] * len(sids)


def test_overlapping_backfills_keep_the_latest_run(system: System) -> None:
    [worker] = system.start_workers(1, concurrency=8)
    try:
        first, sids = new_job(system, 30)
        ws = sids[0].rsplit("_", 1)[0].replace("call_", "ws_")
        second = planner.create_job(system.db, system.settings, ws, "call", []).job_id
        wait_for(lambda: states(system.db, first) == {"succeeded": 30}
                 and states(system.db, second) == {"succeeded": 30}, 90, "both jobs done")
    finally:
        processes.stop(worker)
    with system.db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT s.session_id, s.analysis_run_id,
                   (SELECT r.id FROM analysis_runs AS r WHERE r.session_id = s.session_id
                     ORDER BY r.started_at DESC, r.id DESC LIMIT 1) AS latest,
                   (SELECT count(*) FROM analysis_runs AS r
                     WHERE r.session_id = s.session_id) AS runs
              FROM sessions AS s WHERE s.session_id = ANY(:sids)
        """), {"sids": sids}).all()
    assert all(row.runs == 2 for row in rows)
    assert [row.session_id for row in rows if row.analysis_run_id != row.latest] == []
