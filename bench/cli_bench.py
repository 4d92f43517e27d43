"""CLI start-up: the CPU one read verb costs, against the floor of its two libraries.

    python -m bench.cli_bench        (part of `make bench`; `BENCH=cli` for it alone)

Figure: CPU time (user + system, of the child process) of `backfill show JOB --json` ÷ CPU
time of `python -c "import sqlalchemy, typer"`, both run alternately in the same run, median
of ROUNDS each. Target ≤ 2: a script that reads hundreds of jobs or sessions should pay for
the database round trip, not for the LLM SDK or the web stack.

Runs on Postgres from DATABASE_URL when it answers (else embedded under .run/bench-cli), in a
scratch database with one job, dropped at the end.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from chaos.cluster import scratch_database
from scheduler.dev.embedded import start_embedded_postgres
from shared.db import Database, database_reachable, normalise_database_url
from shared.settings import Settings
from shared.state import jobs

ROUNDS = int(os.environ.get("BENCH_CLI_ROUNDS", "15"))
TARGET = 2.0
RUN_DIR = Path(".run/bench-cli")


def postgres_url() -> str:
    given = os.environ.get("DATABASE_URL")
    if given and database_reachable(given):
        return normalise_database_url(given)
    return start_embedded_postgres(RUN_DIR)


def child_cpu_s(argv: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) that one child process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_job(database_url: str) -> str:
    db = Database.from_settings(Settings(database_url=database_url), pool_size=1)
    try:
        with db.transaction() as tx:
            tx.execute(text("INSERT INTO workspaces (id) VALUES ('ws_bench_cli')"))
            job_id = jobs.insert(tx, jobs.NewJob("ws_bench_cli", "call", [], {}, None, "bench"))
        assert job_id is not None
        return job_id
    finally:
        db.dispose()


def main() -> None:
    with scratch_database(postgres_url(), prefix="backfill_bench_cli") as url:
        job_id = make_job(url)
        env = {**os.environ, "DATABASE_URL": url}
        show = [sys.executable, "-m", "scheduler.cli", "show", job_id, "--json"]
        floor = [sys.executable, "-c", "import sqlalchemy, typer"]
        child_cpu_s(show, env)  # warm the bytecode cache and the server's connection path
        shows, floors = [], []
        for _ in range(ROUNDS):
            shows.append(child_cpu_s(show, env))
            floors.append(child_cpu_s(floor, env))
    ratio = statistics.median(shows) / statistics.median(floors)
    verdict = "pass" if ratio <= TARGET else "FAIL"
    print(f"\n{'figure':<44}{'measured':>10}  {'target':<10}{'result':<6}")
    print(f"{'CLI: show --json ÷ import sqlalchemy, typer':<44}{ratio:>10.2f}  "
          f"{'≤ ' + format(TARGET, 'g'):<10}{verdict:<6}")
    print(f"  show --json: median {statistics.median(shows) * 1000:.0f} ms CPU; "
          f"import sqlalchemy, typer: median {statistics.median(floors) * 1000:.0f} ms CPU "
          f"({ROUNDS} rounds each, alternating)")


if __name__ == "__main__":
    main()
