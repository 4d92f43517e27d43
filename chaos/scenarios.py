"""The faults, each applied mid-job to a running system (one per run)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from chaos.cluster import Cluster
from chaos.dataset import Dataset
from chaos.fleet import Fleet
from scheduler.dev import processes
from shared.db import Database

POLL_S = 0.2
# The stand-in's mixed transient faults: 20% of requests in all.
TRANSIENT_RATES = {"429": 0.05, "529": 0.05, "500": 0.04, "reset": 0.04, "hang": 0.02}

_PROGRESS = text("""
    SELECT count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'skipped', 'cancelled')),
           count(*) FILTER (WHERE state IN ('queued', 'running'))
      FROM backfill_items WHERE job_id = :job_id
""")


@dataclass
class Run:
    """One run's running system, as a fault sees it."""

    cluster: Cluster
    fleet: Fleet
    db: Database
    dataset: Dataset
    job_id: str
    problems: list[str] = field(default_factory=list)

    def progress(self) -> tuple[int, int]:
        """(terminal items, items in flight); (-1, -1) while Postgres is away."""
        try:
            with self.db.transaction() as tx:
                terminal, in_flight = tx.execute(_PROGRESS, {"job_id": self.job_id}).one()
        except OperationalError:
            return -1, -1
        return int(terminal), int(in_flight)

    def job_state(self) -> str | None:
        try:
            with self.db.transaction() as tx:
                return str(tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                                      {"id": self.job_id}).scalar_one())
        except OperationalError:
            return None

    def wait_for_share(self, share: float, timeout_s: float = 300.0) -> None:
        """Until `share` of the items are terminal: the fault then lands mid-job."""
        self._wait(lambda: self.progress()[0] >= share * self.dataset.matched,
                   f"{share:.0%} of the job done", timeout_s)

    def wait_for_state(self, states: set[str], timeout_s: float) -> None:
        self._wait(lambda: self.job_state() in states, f"job {'/'.join(states)}", timeout_s)

    def wait_until_idle(self, timeout_s: float) -> None:
        """Until nothing of the job is queued or running."""
        self._wait(lambda: self.progress()[1] == 0, "job idle", timeout_s)

    def set_faults(self, rates: dict[str, float] | None = None) -> None:
        """Replace the stand-in's faults (the planted per-session rules always stay)."""
        document = {"fail_session_ids": dict(self.dataset.stub_rules), "rates": rates or {},
                    "hang_s": self.fleet.tuning.hang_s}
        request = urllib.request.Request(
            self.fleet.env["ANTHROPIC_BASE_URL"] + "/_faults", method="POST",
            data=json.dumps(document).encode(), headers={"content-type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            response.read()

    def backfill(self, *args: str) -> str:
        """A `backfill` verb against this run's database: the operators' interface."""
        result = subprocess.run(
            processes.backfill_command(*args), capture_output=True, text=True,
            env={**os.environ, **self.fleet.env}, timeout=120, check=True)
        return result.stdout

    def backfill_json(self, *args: str) -> Any:
        return json.loads(self.backfill(*args, "--json"))

    def _wait(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")
            time.sleep(POLL_S)


@dataclass(frozen=True)
class Scenario:
    name: str
    apply: Callable[[Run], None]


def kill_workers(run: Run, times: int) -> None:
    """SIGKILL a worker mid-job (its claims' leases lapse) and start a fresh one, `times`
    times at increasing progress."""
    for index in range(times):
        run.wait_for_share(0.15 + 0.6 * index / times)
        run.fleet.kill_worker()
        run.fleet.start_workers(1)


def flush_broker(run: Run) -> None:
    """FLUSHALL: every waiting message and kombu's unacked bookkeeping are gone."""
    run.wait_for_share(0.3)
    run.cluster.flush_broker()


def restart_postgres(run: Run) -> None:
    """Every connection cut, two seconds without a database, then the same server again."""
    run.wait_for_share(0.3)
    run.cluster.restart_postgres(outage_s=2.0)


def transient_faults(run: Run) -> None:
    """From a tenth of the job on, 20% of LLM requests fail transiently (429 with retry-after,
    529, 500, connection reset, a hang past the client timeout)."""
    run.wait_for_share(0.1)
    run.set_faults(TRANSIENT_RATES)


def auth_burst(run: Run) -> None:
    """Every request answered 401: the job must pause with the reason, not fail its sessions.
    After the fault is lifted, an operator resumes it and it completes."""
    run.wait_for_share(0.3)
    run.set_faults({"401": 1.0})
    run.wait_for_state({"paused"}, timeout_s=60)
    reason = str(run.backfill_json("show", run.job_id).get("state_reason") or "")
    if not reason.startswith("llm_auth"):
        run.problems.append(f"paused with state_reason {reason!r}, not an llm_auth reason")
    run.wait_until_idle(timeout_s=60)
    run.set_faults({})
    run.backfill("resume", run.job_id, "--reason", "LLM key fixed")


def scenarios(short: bool) -> list[Scenario]:
    kills = 1 if short else 3
    times = "once" if kills == 1 else f"{kills} times"
    return [
        Scenario(f"SIGKILL a worker {times}", partial(kill_workers, times=kills)),
        Scenario("FLUSHALL the broker", flush_broker),
        Scenario("restart Postgres", restart_postgres),
        Scenario("LLM 20% transient faults", transient_faults),
        Scenario("LLM 401 burst, then resume", auth_burst),
    ]
