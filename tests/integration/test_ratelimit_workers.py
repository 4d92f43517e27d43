"""The global rate limit over HTTP: several worker processes share one Redis token bucket,
and the stand-in, enforcing R requests per sliding window, never has to refuse one.

A run of its own: a scratch database, a queue of its own, its own scheduler and three
worker processes configured with the limit, so nothing of the session pipeline takes part.
The window is scaled down (R per 4 s instead of per minute) to keep the test short; the
bucket's period is scaled the same way.
"""

from __future__ import annotations

import secrets
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from chaos.cluster import scratch_database
from chaos.seed import running_job, workspace_with_calls
from scheduler.dev import processes
from scheduler.dev.llm_stub import StubServer, enable_rate_limit, make_server
from shared.db import Database
from shared.settings import Settings
from tests.integration.conftest import LOG_DIR, service_env, start_worker, wait_for_log

pytestmark = pytest.mark.integration

LIMIT = 12
WINDOW_S = 4.0
SESSIONS = 48
WORKERS = 3


@pytest.fixture(scope="module")
def limited_stub() -> Iterator[StubServer]:
    server = make_server("127.0.0.1", 0)
    enable_rate_limit(server, LIMIT, WINDOW_S)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def max_in_any_window(times: list[float], window_s: float) -> int:
    """The most requests in any half-open window [t, t + window) starting at a request."""
    ordered = sorted(times)
    return max((bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)),
               default=0)


def test_max_in_any_window() -> None:
    assert max_in_any_window([0.0, 0.5, 1.0, 4.0, 4.2], 4.0) == 4  # [0.5, 4.5)
    assert max_in_any_window([], 4.0) == 0


def test_workers_never_exceed_the_limit(database_url: str, broker_url: str,
                                        limited_stub: StubServer) -> None:
    stub_url = f"http://127.0.0.1:{limited_stub.server_address[1]}"
    with scratch_database(database_url, "backfill_ratelimit") as url:
        settings = Settings(database_url=url, broker_url=broker_url,
                            queue_name=f"backfill_rl_{secrets.token_hex(4)}")
        env = service_env(settings, stub_url) | {
            "BACKFILL_RL_REQUESTS_PER_MIN": str(LIMIT),
            "BACKFILL_RL_PERIOD_S": str(WINDOW_S),
            "BACKFILL_RL_MAX_WAIT_S": "30",
        }
        db = Database.from_settings(settings, pool_size=2)
        try:
            calls = {f"rl_{n:03d}": f"I need help with order {n}" for n in range(SESSIONS)}
            workspace_with_calls(db, "ws_rl", calls)
            started = [start_worker(env, f"worker-rl-{n}", concurrency=4)
                       for n in range(WORKERS)]
            scheduler_log = LOG_DIR / "scheduler-rl.log"
            scheduler_log.unlink(missing_ok=True)
            scheduler = processes.start(processes.backfill_command("scheduler"),
                                        scheduler_log, env)
            try:
                wait_for_log(scheduler_log, "scheduler running", scheduler)
                running_job(db, "bf_rl_job", "ws_rl", sorted(calls))
                _wait_until_done(db, "bf_rl_job", timeout_s=120)
            finally:
                processes.stop(scheduler)
                for worker in started:
                    processes.stop(worker)
            window = limited_stub.request_window
            assert window is not None
            assert window.rejected == []  # the limiter kept every worker below the limit
            assert len(window.admitted) == SESSIONS
            assert max_in_any_window(window.admitted, WINDOW_S) <= LIMIT
            with db.transaction() as tx:
                states = dict(tx.execute(text(
                    "SELECT state, count(*) FROM backfill_items WHERE job_id = 'bf_rl_job' "
                    "GROUP BY state")).all())
            assert states == {"succeeded": SESSIONS}
        finally:
            db.dispose()


def _wait_until_done(db: Database, job_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            open_items = tx.execute(text(
                "SELECT count(*) FROM backfill_items WHERE job_id = :job "
                "AND state NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')"),
                {"job": job_id}).scalar_one()
        if open_items == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not done within {timeout_s:.0f}s")
