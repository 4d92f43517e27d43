"""Filter figures on 1,000,000 sessions: preview, job expansion and a bare insert, side by side.

    python -m bench.filters_bench        (or `make bench`)

Uses DATABASE_URL when it answers, else the embedded Postgres under .run/bench. Everything
happens in a scratch database that is dropped at the end. For each filter set it prints:

- preview ms: `planner.preview` (median of 3);
- expansion ms: `planner.create_job`, i.e. job row + INSERT … SELECT of the items + commit
  (median of 3; the job and its items are deleted, the table vacuumed and, when the role
  may, a CHECKPOINT taken between repeats);
- bare insert ms: `INSERT INTO backfill_items SELECT … FROM` a temp table that already holds
  the same ids, i.e. the cost of writing the items alone (same cleaning; the two alternate,
  so a busy moment on the machine weighs on both alike);
- ratio: expansion / bare insert, the price of filtering inside the insert (target ≤ 1.5).

Then the scans EXPLAIN shows for each set, and index experiments: an index of the schema
taken away, or a candidate built, then measured again (the schema is put back after each),
so the reason for every filter index stays reproducible. BENCH_SESSIONS=N changes the size
(for a quick try; the figures worth quoting are at the default million).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import Connection, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from scheduler.dev.embedded import start_embedded_postgres, stop_embedded
from scheduler.jobs import planner
from scheduler.jobs.options import parse_options
from scheduler.jobs.selection import selection
from shared.analysis import AgentVersionInfo, config_hash, resolve_config
from shared.db import Database, database_reachable, normalise_database_url
from shared.migrate import upgrade_to_head
from shared.settings import Settings

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "1000000"))
REPEATS = 3
RUN_DIR = Path(".run/bench")
WORKSPACES = ("ws_bench_a", "ws_bench_b")
WORKSPACE = WORKSPACES[0]
AGENTS = 8
VERSIONS = 4  # versions 0..2 published, 3 is the draft
TRANSFER_AGENTS = 4
DAY_MS = 86_400_000
NOW_MS = 1_767_225_600_000  # 2026-01-01: fixed, so every run generates the same data


@dataclass(frozen=True)
class Case:
    name: str
    filters: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)


AGENT_WINDOW: list[dict[str, Any]] = [
    {"field": "agent", "op": "in",
     "value": [{"agent_id": "agent_1", "versions": [2, 3]}, {"agent_id": "agent_2"}]},
    {"field": "start_timestamp", "op": "bt", "value": [NOW_MS - 30 * DAY_MS, NOW_MS - 7 * DAY_MS]},
]
FROM_415 = [{"field": "from_number", "op": "sw", "value": "+1415"}]
PRIORITY_GT_7 = [{"field": "metadata", "key": "priority", "op": "gt", "value": 7}]

CASES = (
    Case("agent + time window", AGENT_WINDOW),
    Case("call_status in", [{"field": "call_status", "op": "in", "value": ["ended", "error"]}]),
    Case("metadata.region eq (str)",
         [{"field": "metadata", "key": "region", "op": "eq", "value": "emea"}]),
    Case("metadata.priority gt (num)", PRIORITY_GT_7),
    Case("transfer_agent in",
         [{"field": "transfer_agent", "op": "in", "value": ["agent_transfer_1"]}]),
    Case("from_number sw", FROM_415),
    Case("agent+window sample 0.3", AGENT_WINDOW, {"sample_rate": 0.3}),
    Case("agent+window limit 10000", AGENT_WINDOW, {"limit": 10_000}),
    Case("agent+window skip_current", AGENT_WINDOW, {"skip_current": True}),
    Case("all calls skip_current", [], {"skip_current": True}),
)


@dataclass(frozen=True)
class Experiment:
    """An index question, measured on the filter set it is about: either an index of the
    schema taken away (`drop`: does it still pay?) or a candidate added (`create`)."""

    name: str
    case: Case
    drop: str | None = None
    create: str | None = None


SELECTIVE_FROM = Case("from_number sw (0.07%)",
                      [{"field": "from_number", "op": "sw", "value": "+1415555"}])
EXPERIMENTS = (
    Experiment("without ix_sessions_ws_kind_from_number", Case("from_number sw", FROM_415),
               drop="ix_sessions_ws_kind_from_number"),
    Experiment("without ix_sessions_ws_kind_from_number", SELECTIVE_FROM,
               drop="ix_sessions_ws_kind_from_number"),
    Experiment("with ix_sessions_ws_kind_from_number", SELECTIVE_FROM),
    Experiment("without ix_sessions_ws_kind_agent_start", Case("agent + time window",
                                                               AGENT_WINDOW),
               drop="ix_sessions_ws_kind_agent_start"),
    # Keys are the customer's own: an index per key cannot be part of the schema. Measured
    # to know what a customer-specific index would buy.
    Experiment("with an expression index on the typed metadata.priority",
               Case("metadata.priority gt (num)", PRIORITY_GT_7),
               create="CREATE INDEX bench_priority ON sessions ((CASE WHEN "
                      "jsonb_typeof(metadata['priority']) = 'number' THEN "
                      "CAST(metadata ->> 'priority' AS numeric) END))"),
)


@dataclass(frozen=True)
class Figures:
    name: str
    matched: int
    preview_ms: float
    expansion_ms: float
    bare_ms: float
    scans: str

    @property
    def ratio(self) -> float:
        return self.expansion_ms / self.bare_ms if self.bare_ms else float("nan")


# --------------------------------------------------------------------------- server


def server_url() -> tuple[str, bool]:
    """(URL of a server, whether we started it): DATABASE_URL when it answers, else embedded."""
    given = os.environ.get("DATABASE_URL")
    if given and database_reachable(given):
        return normalise_database_url(given), False
    already_running = (RUN_DIR / "pg" / "postmaster.pid").exists()
    return start_embedded_postgres(RUN_DIR), not already_running


@contextmanager
def scratch_database(server: str) -> Iterator[str]:
    name = f"bf_bench_{secrets.token_hex(4)}"
    admin = create_engine(make_url(server), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --------------------------------------------------------------------------- data


def agent_fields(agent: int, version: int) -> list[dict[str, Any]]:
    return [
        {"type": "system-presets", "name": "call_summary",
         "description": f"Summarise in {version + 1} sentences."},
        {"type": "enum", "name": "intent", "description": "Why they called.",
         "choices": ["booking", "billing", "other"]},
        {"type": "number", "name": f"amount_{agent}", "description": "An amount, if any."},
    ]


def agent_versions() -> list[AgentVersionInfo]:
    versions = [
        AgentVersionInfo(f"agent_{agent}", version, version < VERSIONS - 1, "voice",
                         "claude-4.5-haiku", agent_fields(agent, version))
        for agent in range(AGENTS) for version in range(VERSIONS)
    ]
    return versions + [
        AgentVersionInfo(f"agent_transfer_{n}", 0, False, "voice", "claude-sonnet-4-5",
                         [{"type": "boolean", "name": f"resolved_{n}", "description": "Done?"}])
        for n in range(TRANSFER_AGENTS)
    ]


def insert_agents(connection: Connection, versions: list[AgentVersionInfo]) -> None:
    connection.execute(text("INSERT INTO workspaces (id) VALUES (:id)"),
                       [{"id": ws} for ws in WORKSPACES])
    connection.execute(text("""
        INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                    analysis_model, analysis_data)
        VALUES (:ws, :agent, :version, :published, :kind, :model, CAST(:fields AS jsonb))
    """), [
        {"ws": ws, "agent": v.agent_id, "version": v.version, "published": v.is_published,
         "kind": v.kind, "model": v.model, "fields": json.dumps(v.fields)}
        for ws in WORKSPACES for v in versions
    ])


# Three levels: uniform draws per row, then the columns that depend on each other (kind →
# status, phone numbers), then the row. A subquery whose target list calls random() is not
# flattened, so each draw happens once per row. Rows go in by start time, as sessions arrive
# in production: a time window then reads a contiguous part of the table, not all of it.
GENERATE_SESSIONS = text("""
INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version, batch_call_id,
    from_number, to_number, status, call_type, direction, disconnection_reason,
    start_timestamp, end_timestamp, duration_ms, transcript, metadata, dynamic_variables,
    agent_transfers, transfer_agent_ids, summary, successful, user_sentiment, in_voicemail,
    analysis_run_id)
SELECT 'bs_' || d.g, d.kind, d.ws, 'agent_' || d.agent, d.version,
       CASE WHEN d.kind = 'call' AND d.u1 < 0.2 THEN 'batch_' || (d.g % 50) END,
       CASE WHEN d.phone THEN '+1' || d.area || lpad((d.g8 * 7919 % 10000000)::text, 7, '0')
       END,
       CASE WHEN d.phone THEN '+1' || d.area || lpad((d.g8 * 104729 % 10000000)::text, 7, '0')
       END,
       d.status,
       CASE WHEN d.kind = 'call' THEN CASE WHEN d.phone THEN 'phone_call' ELSE 'web_call' END
       END,
       CASE WHEN d.phone THEN CASE WHEN d.u3 < 0.6 THEN 'inbound' ELSE 'outbound' END END,
       (ARRAY['user_hangup', 'agent_hangup', 'call_transfer', 'inactivity',
              'dial_failed'])[1 + floor(d.u4 * 5)::int],
       d.start_ms,
       CASE WHEN d.finished THEN d.start_ms + d.duration END,
       CASE WHEN d.finished THEN d.duration END,
       '[{"role": "agent", "content": "Hello, how can I help?"}]'::jsonb,
       jsonb_build_object(
           'region', (ARRAY['emea', 'amer', 'apac', 'latam', 'anz'])[1 + floor(d.u5 * 5)::int],
           'priority', CASE WHEN d.u6 < 0.95 THEN to_jsonb(1 + floor(d.u7 * 10)::int)
                            ELSE to_jsonb('high'::text) END,
           'vip', d.u8 < 0.1,
           'score', round(d.u9::numeric, 3),
           'customer_id', 'cus_' || (d.g % 100000)),
       jsonb_build_object(
           'customer_name', 'Customer ' || (d.g % 1000),
           'plan', (ARRAY['free', 'pro', 'enterprise'])[1 + floor(d.u10 * 3)::int]),
       CASE WHEN d.transfer THEN jsonb_build_array(jsonb_build_object(
           'from_agent_id', 'agent_' || d.agent,
           'to_agent_id', 'agent_transfer_' || d.target,
           'post_call_analysis_setting',
           CASE WHEN d.g % 2 = 0 THEN 'both_agents' ELSE 'only_destination_agent' END,
           'at_ms', floor(d.u11 * 60000)::bigint)) ELSE '[]'::jsonb END,
       CASE WHEN d.transfer THEN ARRAY['agent_transfer_' || d.target] ELSE '{}'::text[] END,
       'old summary', d.u12 < 0.7,
       (ARRAY['Positive', 'Negative', 'Neutral', 'Unknown'])[1 + floor(d.u13 * 4)::int],
       CASE WHEN d.kind = 'call' THEN d.u14 < 0.05 END,
       -- 40% have a current analysis; its run gets id = g (see GENERATE_RUNS).
       CASE WHEN d.u15 < 0.4 THEN d.g END
  FROM (
    SELECT u.*, status IN ('ended', 'error', 'not_connected') AS finished
      FROM (
        SELECT r.*,
               CASE WHEN r.u0 < 0.85 THEN 'call' ELSE 'chat' END AS kind,
               CASE WHEN r.w < 0.8 THEN 'ws_bench_a' ELSE 'ws_bench_b' END AS ws,
               r.u0 < 0.85 * 0.7 AS phone,
               CASE WHEN r.u0 >= 0.85 THEN
                        CASE WHEN r.s < 0.85 THEN 'ended' WHEN r.s < 0.95 THEN 'ongoing'
                             ELSE 'error' END
                    WHEN r.s < 0.80 THEN 'ended' WHEN r.s < 0.88 THEN 'not_connected'
                    WHEN r.s < 0.92 THEN 'error' WHEN r.s < 0.95 THEN 'ongoing'
                    ELSE 'registered' END AS status,
               (ARRAY['415', '212', '310', '646', '202', '305', '512', '617', '206',
                      '312'])[1 + floor(r.u2 * 10)::int] AS area,
               floor(r.a * 8)::int AS agent, floor(r.v * 4)::int AS version,
               :now_ms - floor(r.t * 90 * 86400000)::bigint AS start_ms,
               floor(r.dur * 600000)::bigint AS duration,
               r.x < 0.05 AS transfer, floor(r.y * 4)::int AS target
          FROM (
            SELECT g, g::bigint AS g8, random() AS u0, random() AS w, random() AS s, random() AS a,
                   random() AS v, random() AS t, random() AS dur, random() AS x,
                   random() AS y, random() AS u1, random() AS u2, random() AS u3,
                   random() AS u4, random() AS u5, random() AS u6, random() AS u7,
                   random() AS u8, random() AS u9, random() AS u10, random() AS u11,
                   random() AS u12, random() AS u13, random() AS u14, random() AS u15
              FROM generate_series(1, :n) AS g
          ) AS r
      ) AS u
  ) AS d
 ORDER BY d.start_ms
""")

# One run per analysed session: 3 in 4 carry the hash of the agent's current configuration
# (as if an earlier backfill had reached them), the others an old one.
GENERATE_RUNS = text("""
INSERT INTO analysis_runs (id, session_id, workspace_id, agent_id, agent_version, used_draft,
                           model, config_hash, result, started_at)
SELECT s.analysis_run_id, s.session_id, s.workspace_id, s.agent_id, 3, true,
       'claude-haiku-4-5',
       CASE WHEN s.analysis_run_id % 4 <> 0 THEN h.config_hash ELSE repeat('0', 64) END,
       '{}'::jsonb, now()
  FROM sessions AS s
  JOIN unnest(CAST(:agents AS text[]), CAST(:hashes AS text[])) AS h(agent_id, config_hash)
    ON h.agent_id = s.agent_id
 WHERE s.analysis_run_id IS NOT NULL
""")


def current_hashes(versions: list[AgentVersionInfo], settings: Settings) -> dict[str, str]:
    """Each agent's call configuration hash without transfers: what the worker would use."""
    by_agent: dict[str, list[AgentVersionInfo]] = {}
    for version in versions:
        by_agent.setdefault(version.agent_id, []).append(version)
    return {
        agent: config_hash(resolve_config("call", agent, [], by_agent, settings.default_model))
        for agent in by_agent
    }


def generate(engine: sqlalchemy.Engine, settings: Settings) -> float:
    """Load the data set; returns the seconds it took."""
    started = time.perf_counter()
    versions = agent_versions()
    hashes = current_hashes(versions, settings)
    with engine.begin() as connection:
        insert_agents(connection, versions)
        connection.execute(text("SELECT setseed(0.42)"))
        connection.execute(GENERATE_SESSIONS, {"n": SESSIONS, "now_ms": NOW_MS})
        connection.execute(GENERATE_RUNS, {"agents": list(hashes), "hashes": list(hashes.values())})
        connection.execute(text(
            "SELECT setval(pg_get_serial_sequence('analysis_runs', 'id'), max(id)) "
            "FROM analysis_runs"))
    run_autocommit(engine, "VACUUM ANALYZE")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- measuring


def elapsed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def maintenance_engine(url: str) -> sqlalchemy.Engine:
    """For loading, VACUUM, CHECKPOINT and index builds: no statement timeout. The timed
    calls go through `Database`, with the production timeouts."""
    return create_engine(normalise_database_url(url), poolclass=NullPool)


def run_autocommit(engine: sqlalchemy.Engine, statement: str) -> None:
    """VACUUM, CHECKPOINT and CREATE INDEX: outside any transaction."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(statement))


def can_checkpoint(engine: sqlalchemy.Engine) -> bool:
    try:
        run_autocommit(engine, "CHECKPOINT")
    except sqlalchemy.exc.DBAPIError:  # needs superuser or pg_checkpoint on a shared server
        return False
    return True


@dataclass
class Bench:
    db: Database
    settings: Settings
    maintenance: sqlalchemy.Engine
    checkpoint: bool

    def settle(self) -> None:
        """Same starting point for every timed insert: no dead items, no pending checkpoint."""
        run_autocommit(self.maintenance, "VACUUM backfill_items")
        if self.checkpoint:
            run_autocommit(self.maintenance, "CHECKPOINT")

    def preview(self, case: Case) -> int:
        return planner.preview(self.db, self.settings, WORKSPACE, "call", case.filters,
                               options=case.options)

    def create(self, case: Case) -> str:
        return planner.create_job(self.db, self.settings, WORKSPACE, "call", case.filters,
                                  options=case.options).job_id

    def drop_job(self, job_id: str) -> None:
        with self.db.transaction() as tx:  # the items go with it (ON DELETE CASCADE)
            tx.execute(text("DELETE FROM backfill_jobs WHERE id = :id"), {"id": job_id})
        self.settle()

    def measure(self, case: Case) -> Figures:
        matched = self.preview(case)
        preview_ms = statistics.median(
            elapsed_ms(lambda: self.preview(case)) for _ in range(REPEATS)
        )
        expansion, bare = self.insert_figures(case)
        return Figures(case.name, matched, preview_ms, expansion, bare, self.scans(case))

    def insert_figures(self, case: Case) -> tuple[float, float]:
        """Medians of (create_job, bare insert of the same ids), run alternately so that a
        busy moment on the machine weighs on both alike."""
        expansion, bare = [], []
        with self.db.engine.connect() as connection:
            job_id = self.prepare_bare(connection, case)
            self.settle()
            for _ in range(REPEATS):
                started = time.perf_counter()
                created = self.create(case)
                expansion.append((time.perf_counter() - started) * 1000)
                self.drop_job(created)
                bare.append(elapsed_ms(lambda: self.bare_insert(connection, job_id)))
                with connection.begin():
                    connection.execute(text("DELETE FROM backfill_items WHERE job_id = :job"),
                                       {"job": job_id})
                self.settle()
            with connection.begin():
                connection.execute(text("DELETE FROM backfill_jobs WHERE id = :id"),
                                   {"id": job_id})
                connection.execute(text("DROP TABLE bench_ids"))
        return statistics.median(expansion), statistics.median(bare)

    def prepare_bare(self, connection: Connection, case: Case) -> str:
        """A temp table with the ids the planner selects, and a job row the items can use."""
        job_id = f"bf_bench_bare_{secrets.token_hex(4)}"
        with connection.begin():
            query = self.case_query(connection, case)
            connection.execute(text("CREATE TEMP TABLE bench_ids (session_id varchar(128))"))
            connection.execute(sqlalchemy.insert(sqlalchemy.table(
                "bench_ids", sqlalchemy.column("session_id"))).from_select(["session_id"], query))
            connection.execute(text("""
                INSERT INTO backfill_jobs (id, workspace_id, kind, filters, state)
                VALUES (:id, :ws, 'call', '[]', 'cancelled')
            """), {"id": job_id, "ws": WORKSPACE})
        return job_id

    @staticmethod
    def bare_insert(connection: Connection, job_id: str) -> None:
        with connection.begin():
            connection.execute(text("""
                INSERT INTO backfill_items (job_id, session_id)
                SELECT :job, session_id FROM bench_ids
            """), {"job": job_id})

    def case_query(self, connection: Connection, case: Case) -> Any:
        """The planner's own selection (what preview counts and create inserts)."""
        rows = planner.validate_request(self.settings, WORKSPACE, "call", case.filters)
        options = parse_options(case.options)
        return selection(connection, self.settings, WORKSPACE, "call",
                                 rows, options)

    def scans(self, case: Case) -> str:
        """The scan nodes of the preview query's plan, e.g. `BitmapIndex ix_sessions_metadata`."""
        with self.db.engine.connect() as connection:
            query = self.case_query(connection, case)
            count = select(func.count()).select_from(query.subquery())
            with explained(connection):
                plan: Any = connection.execute(count).scalar_one()
            connection.rollback()
        document = plan if isinstance(plan, list) else json.loads(plan)
        return ", ".join(dict.fromkeys(scan_nodes(document[0]["Plan"])))

    def experiment(self, trial: Experiment) -> tuple[float, Figures]:
        """(seconds to build the candidate index, figures); the schema is put back after."""
        restore = self.index_definition(trial.drop) if trial.drop else None
        if trial.drop:
            run_autocommit(self.maintenance, f"DROP INDEX {trial.drop}")
        build_s = 0.0
        if trial.create:
            build_s = elapsed_ms(lambda: run_autocommit(self.maintenance, str(trial.create)))
        run_autocommit(self.maintenance, "ANALYZE sessions")
        try:
            return build_s / 1000, self.measure(trial.case)
        finally:
            if trial.create:
                run_autocommit(self.maintenance, f"DROP INDEX {trial.create.split()[2]}")
            if restore:
                run_autocommit(self.maintenance, restore)
            run_autocommit(self.maintenance, "ANALYZE sessions")

    def index_definition(self, name: str) -> str:
        with self.maintenance.connect() as connection:
            return str(connection.execute(
                text("SELECT pg_get_indexdef(CAST(:name AS regclass))"), {"name": name}
            ).scalar_one())


@contextmanager
def explained(connection: Connection) -> Iterator[None]:
    """Every statement on `connection` runs as EXPLAIN (FORMAT JSON) of itself."""
    def prefix(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> tuple[str, Any]:
        return "EXPLAIN (FORMAT JSON) " + statement, parameters

    event.listen(connection, "before_cursor_execute", prefix, retval=True)
    try:
        yield
    finally:
        event.remove(connection, "before_cursor_execute", prefix)


def scan_nodes(node: dict[str, Any]) -> Iterator[str]:
    if "Index Name" in node or "Relation Name" in node:
        kind = node["Node Type"].replace(" Scan", "").replace(" ", "")
        yield f"{kind} {node.get('Index Name') or node['Relation Name']}"
    for child in node.get("Plans", []):
        yield from scan_nodes(child)


# --------------------------------------------------------------------------- report


def load_average() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def machine(db: Database, load_at_start: str) -> dict[str, str]:
    with db.transaction() as tx:
        server = {
            name: str(tx.execute(text(f"SHOW {name}")).scalar_one())
            for name in ("server_version", "shared_buffers", "work_mem",
                         "max_parallel_workers_per_gather")
        }
        server["collation"] = str(tx.execute(text(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        )).scalar_one())
    memory_kb = next(
        (int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal:")), 0,
    ) if Path("/proc/meminfo").exists() else 0
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "postgres": server.pop("server_version"),
        "postgres settings": ", ".join(f"{k}={v}" for k, v in server.items()),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "platform": platform.platform(),
        # Other work on the machine moves the figures: say how busy it was.
        "load average 1/5/15 min": f"{load_at_start} at start, {load_average()} at end",
    }


HEADER = ("filter set", "matched", "preview ms", "expansion ms", "bare insert ms",
          "expansion/bare")


def table_line(cells: tuple[str, ...]) -> str:
    widths = (28, 9, 11, 13, 15, 15)
    first, *rest = cells
    return f"{first:<{widths[0]}}" + "".join(
        f"{cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True)
    )


def figure_cells(figures: Figures) -> tuple[str, ...]:
    return (figures.name, f"{figures.matched:,}", f"{figures.preview_ms:,.0f}",
            f"{figures.expansion_ms:,.0f}", f"{figures.bare_ms:,.0f}", f"{figures.ratio:.2f}")


def print_figures(rows: list[Figures]) -> None:
    print(table_line(HEADER))
    for figures in rows:
        print(table_line(figure_cells(figures)))
    print("\nscans (EXPLAIN of the preview query):")
    for figures in rows:
        print(f"  {figures.name:<28} {figures.scans}")


def print_experiments(results: list[tuple[Experiment, float, Figures]]) -> None:
    print("\nindex experiments (the schema is put back after each):")
    for trial, build_s, figures in results:
        print(f"  {trial.name}" + (f" — built in {build_s:.1f} s" if trial.create else ""))
        print("    " + table_line(figure_cells(figures)))
        print(f"    scans: {figures.scans}")


def run(server: str) -> None:
    with scratch_database(server) as url:
        upgrade_to_head(url)
        settings = Settings(database_url=url)
        db = Database.from_settings(settings, pool_size=2)
        maintenance = maintenance_engine(url)
        load_at_start = load_average()
        try:
            print(f"generating {SESSIONS:,} sessions …", file=sys.stderr, flush=True)
            seconds = generate(maintenance, settings)
            print(f"\n{SESSIONS:,} sessions generated and analysed in {seconds:.1f} s; "
                  f"filter sets run on {WORKSPACE}, kind call\n")
            bench = Bench(db, settings, maintenance, can_checkpoint(maintenance))
            rows = []
            for case in CASES:
                print(f"  {case.name} …", file=sys.stderr, flush=True)
                rows.append(bench.measure(case))
            print_figures(rows)
            print_experiments([(trial, *bench.experiment(trial)) for trial in EXPERIMENTS])
            print("\nmachine:")
            for key, value in machine(db, load_at_start).items():
                print(f"  {key}: {value}")
        finally:
            db.dispose()
            maintenance.dispose()


def main() -> None:
    server, started = server_url()
    try:
        run(server)
    finally:
        if started:
            stop_embedded(RUN_DIR)


if __name__ == "__main__":
    main()
