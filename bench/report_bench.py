"""Change report and revert on a 1,000,000-run job (DESIGN "Safe to apply").

    python -m bench.report_bench        (part of `make bench`; `BENCH=report` for it alone)

Figures:

- report ÷ count: `scheduler.jobs.report.change_report` of the job (median of REPEATS) ÷ a
  bare `SELECT count(*)` over the same runs (median of REPEATS, the two alternating, so a busy
  moment weighs on both alike). No target: the figure says what the report's few aggregate
  passes cost against reading the runs' index once. The Python heap's peak during a report is
  printed beside it: the report holds its result, never the runs.
- revert rows/s: `scheduler.jobs.changes.revert` of the whole job (every session still shows
  its run, so every one is restored and gets a history row), sessions per second of wall time,
  in pages of `changes.REVERT_PAGE`.

The data is made by SQL (`generate_series`): sessions whose current analysis is the job's run,
runs with a before (the imported analysis), a result, and the field types of a configuration
with a boolean, an enum, a number and a string field; one run in a hundred has no before (a run
older than the feature). Postgres from DATABASE_URL when it answers (else embedded under
.run/bench-report), in a scratch database dropped at the end. BENCH_RUNS=N changes the size
(for a quick try; the figures worth quoting are at the default million).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from chaos.cluster import scratch_database
from scheduler.dev.embedded import start_embedded_postgres, stop_embedded
from scheduler.jobs import changes
from scheduler.jobs.report import change_report
from shared.db import Database, database_reachable, normalise_database_url
from shared.settings import Settings

RUNS = int(os.environ.get("BENCH_RUNS", "1000000"))
REPEATS = 3
RUN_DIR = Path(".run/bench-report")
WORKSPACE = "ws_bench_report"
JOB = "bf_bench_report"

# The analyses as SQL over g, the series number: deterministic, varied, with repeats (an enum
# of five values, a boolean, a small number), so matrices are small and most fields change.
_BEFORE = """jsonb_build_object(
    'call_summary', 'Caller asked about appointment ' || (g % 97),
    'call_successful', g % 4 <> 0,
    'user_sentiment', (ARRAY['Positive', 'Negative', 'Neutral'])[1 + g % 3],
    'custom_analysis_data', jsonb_build_object(
        'intent', (ARRAY['booking', 'cancellation', 'other'])[1 + g % 3],
        'is_new_patient', g % 5 = 0))"""
_AFTER = {
    "summary": "'Booked ' || (g % 50)",
    "successful": "g % 3 <> 0",
    "sentiment": "(ARRAY['Positive', 'Negative', 'Neutral', 'Unknown'])[1 + g % 4]",
    "custom": """jsonb_build_object(
        'intent', (ARRAY['booking', 'cancellation', 'reschedule', 'billing', 'other'])[1 + g % 5],
        'is_new_patient', g % 2 = 0, 'party_size', 1 + g % 6,
        'preferred_time', 'Tuesday ' || (1 + g % 12) || 'am')""",
}
_FIELD_TYPES = ('{"intent": "enum", "is_new_patient": "boolean", "party_size": "number", '
                '"preferred_time": "string"}')

_SESSIONS = f"""
    INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version, status,
                          transcript, summary, successful, user_sentiment, custom_analysis_data,
                          analysis_run_id, analysis_started_at)
    SELECT 'call_' || lpad(g::text, 7, '0'), 'call', :ws, 'agent', 1, 'ended',
           '[{{"role": "user", "content": "hello"}}]', {_AFTER["summary"]},
           {_AFTER["successful"]}, {_AFTER["sentiment"]}, {_AFTER["custom"]}, g,
           timestamptz '2026-01-01' + g * interval '1 millisecond'
      FROM generate_series(1, :n) AS g
"""
_RUNS = f"""
    INSERT INTO analysis_runs (id, session_id, job_id, workspace_id, agent_id, agent_version,
                               used_draft, model, config_hash, result, before, field_types,
                               started_at)
    SELECT g, 'call_' || lpad(g::text, 7, '0'), :job, :ws, 'agent', 2, true,
           'claude-haiku-4-5', repeat('a', 64),
           jsonb_build_object('call_summary', {_AFTER["summary"]},
                              'call_successful', {_AFTER["successful"]},
                              'user_sentiment', {_AFTER["sentiment"]},
                              'custom_analysis_data', {_AFTER["custom"]}),
           CASE WHEN g % 100 = 0 THEN NULL ELSE {_BEFORE} END,
           CAST(:types AS jsonb), timestamptz '2026-01-01' + g * interval '1 millisecond'
      FROM generate_series(1, :n) AS g
"""


def postgres_url() -> str:
    given = os.environ.get("DATABASE_URL")
    if given and database_reachable(given):
        return normalise_database_url(given)
    return start_embedded_postgres(RUN_DIR)


def generate(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute(text("SELECT set_config('statement_timeout', '0', true)"))
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": WORKSPACE})
        tx.execute(text("""
            INSERT INTO backfill_jobs (id, workspace_id, kind, filters, state, matched)
            VALUES (:job, :ws, 'call', '[]', 'completed', :n)
        """), {"job": JOB, "ws": WORKSPACE, "n": RUNS})
        tx.execute(text(_SESSIONS), {"ws": WORKSPACE, "n": RUNS})
        tx.execute(text(_RUNS), {"job": JOB, "ws": WORKSPACE, "n": RUNS, "types": _FIELD_TYPES})
        tx.execute(text("SELECT setval(pg_get_serial_sequence('analysis_runs', 'id'), :n)"),
                   {"n": RUNS})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE sessions"))
        connection.execute(text("VACUUM ANALYZE analysis_runs"))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def count_runs(db: Database) -> int:
    with db.transaction() as tx:
        return int(tx.execute(text("SELECT count(*) FROM analysis_runs WHERE job_id = :job"),
                              {"job": JOB}).scalar_one())


def report(db: Database) -> dict[str, object]:
    with db.transaction() as tx:
        return change_report(tx, JOB)


def measure_report(db: Database) -> tuple[float, float, int]:
    """(median report s, median count s, peak Python heap bytes during one report)."""
    reports, counts = [], []
    for _ in range(REPEATS):
        counts.append(timed(lambda: count_runs(db)))
        reports.append(timed(lambda: report(db)))
    tracemalloc.start()
    report(db)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(reports), statistics.median(counts), peak


def measure_revert(db: Database) -> tuple[float, changes.Reverted]:
    started = time.perf_counter()
    done = changes.revert(db, JOB, actor="os:bench", reason="bench")
    return time.perf_counter() - started, done


def main() -> None:
    server = postgres_url()
    load_at_start = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    try:
        with scratch_database(server, "bf_bench_report") as url:
            settings = Settings(database_url=url, db_statement_timeout_ms=600_000)
            db = Database.from_settings(settings, pool_size=2)
            try:
                print(f"generating {RUNS:,} sessions and runs …", file=sys.stderr, flush=True)
                generate_s = timed(lambda: generate(db))
                print("measuring the report …", file=sys.stderr, flush=True)
                report_s, count_s, peak = measure_report(db)
                print("measuring the revert …", file=sys.stderr, flush=True)
                revert_s, done = measure_revert(db)
                with db.transaction() as tx:
                    postgres = str(tx.execute(text("SHOW server_version")).scalar_one())
            finally:
                db.dispose()
    finally:
        stop_embedded(RUN_DIR)
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nchange report of a {RUNS:,}-run job (data generated in {generate_s:.0f} s)")
    print(f"  report:  {report_s:8.2f} s (median of {REPEATS})")
    print(f"  count:   {count_s:8.3f} s (bare SELECT count(*) over the same runs, median)")
    print(f"  report ÷ count: {report_s / count_s:.1f}")
    print(f"  Python heap peak during a report: {peak / 1024 / 1024:.1f} MiB")
    print(f"revert of the whole job, pages of {changes.REVERT_PAGE:,} sessions")
    print(f"  {done.reverted:,} reverted, {done.left_newer:,} left newer in {revert_s:.1f} s: "
          f"{done.reverted / revert_s:,.0f} sessions/s")
    print("\nmachine:")
    print(f"  nproc: {os.cpu_count()}, {platform.platform()}, python {platform.python_version()}"
          f", postgres {postgres}")
    print(f"  load average 1/5/15 min: {load_at_start} at start, {load} at end")
    if RUNS != 1_000_000:
        print(f"\nBENCH_RUNS={RUNS}: not the figures to quote.")


if __name__ == "__main__":
    main()
