"""A killed worker's reservations are released when its leases expire.

A capped job whose cap holds its sessions' reservations once, with little to spare: a worker
takes every session, and is killed (SIGKILL) while the stand-in still thinks. When the leases
expire, the reconciler takes the items back and the scheduler releases what they held, so they
can be reserved and sent again; a second worker then finishes the job. Had the dead worker's
reservations stayed, nothing more would fit under the cap and the job would never finish.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from scheduler.jobs import estimates, operations
from tests.integration.conftest import LOG_DIR
from tests.support import spend
from tests.support.spend import SpendRun

pytestmark = pytest.mark.integration

SESSIONS = 6
LEASE_S = 2.0


@pytest.fixture(scope="module")
def run(database_url: str, broker_url: str) -> Iterator[SpendRun]:
    env = {"BACKFILL_LEASE_S": str(LEASE_S), "BACKFILL_RECONCILE_INTERVAL_S": "0.5",
           "BACKFILL_LOST_MESSAGE_GRACE_S": "2"}
    with spend.spend_run(database_url, broker_url, LOG_DIR, latency_ms=5000,
                         env=env) as spend_run:
        spend_run.start_scheduler()
        yield spend_run


def item_rows(run: SpendRun, job_id: str) -> list[tuple[str, int, float | None]]:
    with run.db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT state, attempts, reserved_usd FROM backfill_items WHERE job_id = :job
        """), {"job": job_id}).all()
    return [(row.state, row.attempts, None if row.reserved_usd is None
             else float(row.reserved_usd)) for row in rows]


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:.0f}s: {what}")


def test_a_killed_workers_reservations_are_released(run: SpendRun) -> None:
    workspace_id = f"ws_lease_{secrets.token_hex(3)}"
    haiku = spend.agents(secrets.token_hex(4))[0]
    spend.seed_workspace(run.db, workspace_id, [haiku], {haiku.agent_id: {"all": SESSIONS}})
    rows = spend.filters(haiku.agent_id)
    estimate = estimates.preview_estimate(run.db, run.settings, workspace_id, "call", rows)
    # Room for every session's reservation (estimate + 10%) once, and not twice.
    cap = round(estimate["estimate"]["usd"] * 1.15, 6)
    job_id = operations.create_job(run.db, run.settings, workspace_id, "call", rows,
                                   actor="os:test", options={"max_cost_usd": cap}).job_id

    doomed = run.start_worker("worker-lease-doomed", concurrency=8)
    wait_until(lambda: [state for state, *_ in item_rows(run, job_id)] == ["running"] * SESSIONS,
               30, "every session running in the doomed worker")
    held = run.job(job_id)["spend"]["reserved_usd"]
    assert cap / 2 < held <= cap  # every session holds its estimate
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    run.workers.remove(doomed)

    # The leases lapse; the items go back and are reserved and queued again within the cap.
    wait_until(lambda: all(state == "queued" and attempts == 1 and reserved
                           for state, attempts, reserved in item_rows(run, job_id)),
               LEASE_S + 20, "the items taken back, reserved again and queued")
    requeued = run.job(job_id)["spend"]
    assert requeued["reserved_usd"] == pytest.approx(held, rel=1e-6)
    assert requeued["spent_usd"] == 0  # the dead worker's answers were never recorded

    run.start_worker("worker-lease-rescuer", concurrency=8)
    job = run.wait_for(job_id, ["completed", "paused"], timeout_s=60)
    assert job["state"] == "completed"
    assert job["counts"]["succeeded"] == SESSIONS
    assert [attempts for _, attempts, _ in item_rows(run, job_id)] == [2] * SESSIONS
    settled = run.wait_for(job_id, ["completed"], timeout_s=5)
    assert settled["spend"]["reserved_usd"] == 0
    assert 0 < settled["spend"]["spent_usd"] <= cap
