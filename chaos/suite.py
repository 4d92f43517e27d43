"""Run every scenario, each in its own database cloned from one prepared template."""

from __future__ import annotations

import re
import secrets
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chaos import dataset
from chaos.cluster import Cluster
from chaos.dataset import Dataset
from chaos.fleet import Fleet, Tuning
from chaos.scenarios import Run, Scenario, scenarios
from chaos.verify import RunResult, reconciled_from_log, verify
from scheduler.jobs import planner
from shared.db import Database
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
FULL_SESSIONS = 3000
SHORT_SESSIONS = 500


@dataclass(frozen=True)
class SuiteOptions:
    sessions: int = FULL_SESSIONS
    short: bool = False
    only: str | None = None  # run only scenarios whose name contains this
    run_dir: Path | None = None
    keep_files: bool = False  # keep logs and data even when every run is clean
    tuning: Tuning = Tuning()


Progress = Callable[[str], None]


def run_suite(options: SuiteOptions, say: Progress | None = None) -> list[RunResult]:
    """Start the suite's own servers, prepare the data once, run each scenario, clean up.

    Files (logs, data) stay under the run directory when a run fails, for the post-mortem.
    """
    say = say or _stderr
    run_dir = options.run_dir or REPO / ".run" / "chaos" / f"{time.strftime('%H%M%S')}-" \
        f"{secrets.token_hex(2)}"
    cluster = Cluster.start(run_dir)
    results: list[RunResult] = []
    try:
        say(f"chaos: preparing {options.sessions} calls under {run_dir}")
        data = dataset.build(cluster.create_database("chaos_template"), "chaos_template",
                             options.sessions)
        for index, scenario in enumerate(_selected(options), start=1):
            say(f"chaos: run {index}: {scenario.name}")
            started = time.monotonic()
            results.append(run_scenario(cluster, data, scenario, options.tuning,
                                        run_dir / "logs" / _slug(scenario.name)))
            verdict = "ok" if results[-1].ok else "FAILED"
            say(f"chaos: run {index}: {verdict} in {time.monotonic() - started:.1f}s "
                f"(job {results[-1].wall_s:.1f}s)")
    finally:
        keep = options.keep_files or not results or not all(r.ok for r in results)
        cluster.stop(keep_files=keep)
        if keep:
            say(f"chaos: logs kept under {run_dir}/logs")
    return results


def _selected(options: SuiteOptions) -> list[Scenario]:
    chosen = scenarios(options.short)
    if options.only:
        chosen = [s for s in chosen if options.only.lower() in s.name.lower()]
    return chosen


def run_scenario(cluster: Cluster, data: Dataset, scenario: Scenario, tuning: Tuning,
                 log_dir: Path) -> RunResult:
    name = _slug(scenario.name)
    url = cluster.create_database(f"chaos_{name}", template=data.database)
    env = tuning.env() | {"DATABASE_URL": url, "BROKER_URL": cluster.broker_url,
                          "BACKFILL_QUEUE": f"chaos_{name}"}
    fleet = Fleet(env, log_dir, tuning)
    db = Database.from_settings(Settings(database_url=url), pool_size=2)
    result = RunResult(scenario.name)
    try:
        _run(cluster, fleet, db, data, scenario, result)
    finally:
        fleet.stop()
        db.dispose()
    result.reconciled = reconciled_from_log(log_dir / "scheduler.log")
    return result


def _run(cluster: Cluster, fleet: Fleet, db: Database, data: Dataset, scenario: Scenario,
         result: RunResult) -> None:
    run: Run | None = None
    started = time.monotonic()
    try:
        fleet.start_all(data.stub_rules)
        job = _create_job(db)
        started = time.monotonic()
        run = Run(cluster, fleet, db, data, job)
        scenario.apply(run)
        run.wait_for_state({"completed", "cancelled"}, timeout_s=_job_timeout_s(data))
    except Exception as exc:  # whatever went wrong is reported in the run's row
        result.problems.append(f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
    result.wall_s = time.monotonic() - started
    if run is not None:
        result.problems += run.problems
        verify(db, run.job_id, data, result)


def _create_job(db: Database) -> str:
    """The planner's create, as the CLI and the API call it (the CLI's interpreter start-up
    would only add seconds to every run)."""
    settings = Settings(database_url=db.engine.url.render_as_string(hide_password=False))
    return planner.create_job(db, settings, dataset.WORKSPACE, dataset.KIND, [],
                              created_by="chaos").job_id


def _job_timeout_s(data: Dataset) -> float:
    # Generous: a 2-core machine shared with other work; a stuck job must still end the run.
    return 120.0 + data.matched / 10


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
