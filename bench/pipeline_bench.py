"""Pipeline figures, each measured side by side in one run on this machine.

    python -m bench.pipeline_bench        (or `make bench`)

Real processes: `backfill scheduler`, `backfill worker` (threads pool) and `backfill
llm-stub` subprocesses, on Postgres from DATABASE_URL when it answers (else embedded under
.run/bench-pipeline; either way a scratch database dropped at the end) and an embedded Redis
of the bench's own (so its memory figures hold nothing else).

(a) sessions/s of the pipeline with a zero-latency stand-in ÷ tasks/s of a no-op task on
    the same app, broker, pool and concurrency (each: rate between 10% and 90% done); the
    same for a task that makes only the session's SDK call (the pipeline's ceiling); and
    the worker process's CPU (utime + stime from /proc) per session, per SDK-call task and
    per no-op task, with the cores the worker, the stand-in and the whole machine kept busy;
(b) with a 500 ms stand-in and concurrency C: achieved ÷ ideal (C / 0.5 s);
(c) Redis peak used_memory while a 200,000-session job runs, next to a 20,000-session one
    (each sampled for the same time: the dispatch window, not the job, bounds the broker);
(d) under a stand-in limit of R requests per window, the most requests in any sliding
    window ÷ R (≤ 1.0), and the mean per window ÷ R, with two worker processes;
(e) billed input tokens per session with prompt caching ÷ without (cache writes × 1.25,
    reads × 0.1 of the settings), on a prefix above the cacheable minimum.

BENCH_QUICK=1 runs small sizes (a smoke test of the bench itself; not figures to quote);
BENCH_FIGURES=ab runs only the figures named.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import text

from bench.noop_names import AGENT_FIELDS, DONE_KEY, NOOP, SDK_CALL
from chaos.cluster import scratch_database
from scheduler.dev import processes
from scheduler.dev.embedded import start_embedded_postgres, start_embedded_redis, stop_embedded
from scheduler.dev.processes import free_port
from scheduler.jobs import planner
from shared.broker import make_celery, redis_client_url
from shared.db import Database, database_reachable, normalise_database_url
from shared.pricing import Tokens
from shared.settings import Settings

QUICK = os.environ.get("BENCH_QUICK") == "1"
# BENCH_FIGURES=ab measures only (a) and (b); the default is every figure.
CHOSEN = os.environ.get("BENCH_FIGURES") or "abcde"
RUN_DIR = Path(".run/bench-pipeline")
LOG_DIR = RUN_DIR / "logs"
CONCURRENCY = 32
THROUGHPUT_SESSIONS = 600 if QUICK else 4000
NOOP_TASKS = 1000 if QUICK else 8000
LATENCY_SESSIONS = 300 if QUICK else 1600
BIG_JOB = 20_000 if QUICK else 200_000
SMALL_JOB = 2_000 if QUICK else 20_000
MEMORY_SAMPLE_S = 15.0 if QUICK else 40.0
RL_LIMIT = 100
RL_WINDOW_S = 10.0
RL_RUN_S = 25.0 if QUICK else 45.0
CACHE_SESSIONS = 20 if QUICK else 40


@dataclass(frozen=True)
class Figure:
    name: str
    measured: float
    target: str
    passed: bool | None
    detail: str


# --------------------------------------------------------------------------- services


def postgres_url() -> str:
    given = os.environ.get("DATABASE_URL")
    if given and database_reachable(given):
        return normalise_database_url(given)
    return start_embedded_postgres(RUN_DIR)


@dataclass
class Stack:
    """The run's settings, database, broker client and the scheduler process."""

    settings: Settings
    db: Database
    redis: redis.Redis
    env: dict[str, str]


def base_env(settings: Settings) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.require_database_url(),
        "BROKER_URL": settings.require_broker_url(),
        "BACKFILL_QUEUE": settings.queue_name,
        "BACKFILL_LLM": "stub",
        # The scheduler makes an LLM client for batch-mode jobs; the bench runs none.
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "BACKFILL_DISPATCH_INTERVAL_S": "0.1",
        "BACKFILL_LOST_MESSAGE_GRACE_S": "120",
    }


@contextmanager
def started(args: list[str], name: str, env: dict[str, str],
            marker: str) -> Iterator[subprocess.Popen[bytes]]:
    log_path = LOG_DIR / f"{name}.log"
    log_path.unlink(missing_ok=True)
    process = processes.start(args, log_path, env)
    try:
        processes.wait_for_log(log_path, marker, process, timeout_s=90)
        yield process
    finally:
        processes.stop(process)


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds (Linux /proc; fields 14 and 15 of stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (the first line of /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over one measured run: the worker, the stand-in and the whole machine."""

    wall_s: float
    worker_s: float
    stub_s: float
    machine_s: float

    def cores(self) -> str:
        return (f"cores busy: worker {self.worker_s / self.wall_s:.2f}, stand-in "
                f"{self.stub_s / self.wall_s:.2f}, machine {self.machine_s / self.wall_s:.2f} "
                f"of {os.cpu_count()}")


def measured(worker_pid: int, stub_pid: int, run: Callable[[], float]) -> tuple[float, CpuUse]:
    """`run`'s rate, and the CPU the worker, the stand-in and the machine spent over it."""
    pids = (worker_pid, stub_pid)
    before = [process_cpu_s(pid) for pid in pids] + [machine_busy_s(), time.monotonic()]
    rate = run()
    after = [process_cpu_s(pid) for pid in pids] + [machine_busy_s(), time.monotonic()]
    worker, stand_in, busy, wall = (end - start for end, start in zip(after, before, strict=True))
    return rate, CpuUse(wall, worker, stand_in, busy)


@contextmanager
def stub_process(latency_ms: int, *extra: str) -> Iterator[tuple[str, int]]:
    """The stand-in's URL and process id."""
    port = free_port()
    args = processes.backfill_command("llm-stub", "--port", str(port), "--latency-ms",
                                      str(latency_ms), *extra)
    with started(args, f"stub-{port}", {}, "listening") as process:
        yield f"http://127.0.0.1:{port}", process.pid


@contextmanager
def stub(latency_ms: int, *extra: str) -> Iterator[str]:
    with stub_process(latency_ms, *extra) as (url, _):
        yield url


@contextmanager
def workers(stack: Stack, stub_url: str, count: int = 1, app: str = "worker.app",
            **env: str) -> Iterator[list[int]]:
    """`count` worker processes of `app`, each with the threads pool at CONCURRENCY; yields
    their process ids (the threads pool runs every task in the one process)."""
    environment = stack.env | {"ANTHROPIC_BASE_URL": stub_url,
                               "BACKFILL_WORKER_CONCURRENCY": str(CONCURRENCY)} | env
    with _workers(environment, count, app) as pids:
        yield pids


@contextmanager
def _workers(env: dict[str, str], count: int, app: str) -> Iterator[list[int]]:
    if count == 0:
        yield []
        return
    name = f"worker-{secrets.token_hex(3)}"
    args = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "threads",
            "--concurrency", str(CONCURRENCY), "--queues", env["BACKFILL_QUEUE"],
            "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"{name}@%h"]
    with started(args, name, env, "ready.") as process, _workers(env, count - 1, app) as rest:
        yield [process.pid, *rest]


# --------------------------------------------------------------------------- data


def seed_workspace(db: Database, workspace_id: str, sessions: int,
                   fields: list[dict[str, Any]] | None = None) -> None:
    """One agent (one draft) and `sessions` short ended calls, generated inside Postgres."""
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace_id})
        tx.execute(text("""
            INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                        analysis_model, analysis_data)
            VALUES (:ws, 'agent', 0, false, 'voice', 'claude-haiku-4-5', CAST(:f AS jsonb))
        """), {"ws": workspace_id, "f": json.dumps(fields or AGENT_FIELDS)})
        tx.execute(text("SELECT set_config('statement_timeout', '600000', true)"))
        tx.execute(text("""
            INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version,
                                  status, transcript)
            SELECT :ws || '_' || g, 'call', :ws, 'agent', 0, 'ended',
                   jsonb_build_array(
                       jsonb_build_object('role', 'agent', 'content', 'Hello, how can I help?'),
                       jsonb_build_object('role', 'user', 'content',
                                          'My order ' || g || ' arrived broken.'))
              FROM generate_series(1, :n) AS g
        """), {"ws": workspace_id, "n": sessions})


def create_job(stack: Stack, workspace_id: str) -> str:
    # Live mode always: above the batch threshold a job would otherwise go to the Batches API.
    return planner.create_job(stack.db, stack.settings, workspace_id, "call", [],
                              mode="live").job_id


def done_count(db: Database, job_id: str) -> int:
    with db.transaction() as tx:
        return int(tx.execute(text("""
            SELECT count(*) FROM backfill_items
             WHERE job_id = :job AND state IN ('succeeded', 'failed', 'skipped', 'cancelled')
        """), {"job": job_id}).scalar_one())


def cancel(db: Database, job_id: str) -> None:
    with db.transaction() as tx:
        tx.execute(text("UPDATE backfill_jobs SET state = 'cancelled' WHERE id = :job"),
                   {"job": job_id})


# --------------------------------------------------------------------------- measuring


def steady_rate(total: int, progress: Callable[[], int], timeout_s: float = 900) -> float:
    """Items per second between 10% and 90% done: start-up and the tail stay out."""
    low, high = int(total * 0.1), int(total * 0.9)
    start: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, now = progress(), time.monotonic()
        if start is None and done >= low:
            start = (now, done)
        if start is not None and done >= high:
            return (done - start[1]) / max(now - start[0], 1e-9)
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for progress")


def wait_until_done(total: int, progress: Callable[[], int], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while progress() < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {progress()} of {total} done within {timeout_s:.0f} s")
        time.sleep(0.1)


def task_rate(stack: Stack, task: str, count: int) -> float:
    """Tasks/s of `count` baseline tasks (`bench.noop_app`) sent to the queue at once."""
    stack.redis.delete(DONE_KEY)
    celery = make_celery(stack.settings)
    sender = threading.Thread(target=lambda: [
        celery.send_task(task, queue=stack.settings.queue_name) for _ in range(count)])
    sender.start()
    def done() -> int:
        return int(stack.redis.get(DONE_KEY) or 0)

    rate = steady_rate(count, done)
    sender.join()
    # Run the last tenth too: a task left in the queue would reach the next figure's worker.
    wait_until_done(count, done)
    celery.close()
    return rate


def pipeline_rate(stack: Stack, workspace_id: str, sessions: int) -> float:
    job_id = create_job(stack, workspace_id)
    rate = steady_rate(sessions, lambda: done_count(stack.db, job_id))
    # Finish the job: its last tenth would otherwise still be dispatched, and share the
    # workers of the next figure with that figure's own job.
    wait_until_done(sessions, lambda: done_count(stack.db, job_id))
    return rate


def figure_a(stack: Stack) -> list[Figure]:
    seed_workspace(stack.db, "ws_a", THROUGHPUT_SESSIONS)
    with stub_process(0) as (url, stub_pid):
        with workers(stack, url, app="bench.noop_app") as (pid,):
            noop, noop_cpu = measured(pid, stub_pid, lambda: task_rate(stack, NOOP, NOOP_TASKS))
            call, call_cpu = measured(
                pid, stub_pid, lambda: task_rate(stack, SDK_CALL, THROUGHPUT_SESSIONS))
        with workers(stack, url) as (pid,):
            sessions, session_cpu = measured(
                pid, stub_pid, lambda: pipeline_rate(stack, "ws_a", THROUGHPUT_SESSIONS))
    ratio, ceiling = sessions / noop, call / noop
    noop_ms = noop_cpu.worker_s * 1000 / NOOP_TASKS
    call_ms = call_cpu.worker_s * 1000 / THROUGHPUT_SESSIONS
    session_ms = session_cpu.worker_s * 1000 / THROUGHPUT_SESSIONS
    where = f"threads pool, concurrency {CONCURRENCY}, zero-latency stand-in"
    return [
        Figure("(a) pipeline ÷ no-op task rate", ratio, "≥ 0.5", ratio >= 0.5,
               f"{sessions:.0f} sessions/s ÷ {noop:.0f} no-op tasks/s ({where}); "
               f"{session_cpu.cores()}"),
        Figure("(a) SDK-call task ÷ no-op task rate", ceiling, "(pipeline's ceiling)", None,
               f"{call:.0f} SDK-call tasks/s ÷ {noop:.0f} no-op tasks/s; pipeline ÷ SDK call "
               f"= {sessions / call:.2f}; {call_cpu.cores()}"),
        Figure("(a) worker CPU ms per session", session_ms, "(lower is better)", None,
               f"utime+stime of the worker process ÷ {THROUGHPUT_SESSIONS} sessions"),
        Figure("(a) worker CPU ms per SDK-call task", call_ms, "(lower is better)", None,
               f"÷ {THROUGHPUT_SESSIONS} tasks; session − SDK call = "
               f"{session_ms - call_ms:.2f} ms (claim, load, parse, write, events)"),
        Figure("(a) worker CPU ms per no-op task", noop_ms, "(lower is better)", None,
               f"÷ {NOOP_TASKS} no-op tasks; session ÷ no-op = {session_ms / noop_ms:.2f}; "
               f"{noop_cpu.cores()}"),
    ]


def figure_b(stack: Stack) -> Figure:
    seed_workspace(stack.db, "ws_b", LATENCY_SESSIONS)
    with stub(500) as url, workers(stack, url):
        achieved = pipeline_rate(stack, "ws_b", LATENCY_SESSIONS)
    ideal = CONCURRENCY / 0.5
    ratio = achieved / ideal
    return Figure("(b) achieved ÷ ideal at 500 ms", ratio, "≥ 0.9", ratio >= 0.9,
                  f"{achieved:.1f} sessions/s ÷ {ideal:.0f} (C={CONCURRENCY} / 0.5 s)")


class MemorySampler:
    """The highest used_memory seen, sampled every 0.1 s."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, int(self._client.info("memory")["used_memory"]))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_memory(stack: Stack, workspace_id: str, url: str) -> tuple[int, int]:
    """(peak used_memory, sessions done) over MEMORY_SAMPLE_S of a running job. (No FLUSHDB
    between runs: it would drop kombu's queue bindings and, with them, the next messages.)"""
    job_id = create_job(stack, workspace_id)
    with workers(stack, url), MemorySampler(stack.redis) as sampler:
        time.sleep(MEMORY_SAMPLE_S)
        done = done_count(stack.db, job_id)
        cancel(stack.db, job_id)
    return sampler.peak, done


def figure_c(stack: Stack) -> Figure:
    seed_workspace(stack.db, "ws_c_big", BIG_JOB)
    seed_workspace(stack.db, "ws_c_small", SMALL_JOB)
    with stub(0) as url:
        big, big_done = peak_memory(stack, "ws_c_big", url)
        small, small_done = peak_memory(stack, "ws_c_small", url)
    mib = 1024 * 1024
    return Figure("(c) Redis peak used_memory", big / mib, "< 64 MB", big < 64 * mib,
                  f"{BIG_JOB:,}-session job: {big / mib:.1f} MiB ({big_done:,} done in "
                  f"{MEMORY_SAMPLE_S:.0f} s, then cancelled); {SMALL_JOB:,}-session job: "
                  f"{small / mib:.1f} MiB ({small_done:,} done); big ÷ small {big / small:.2f}")


def max_in_window(times: list[float], window_s: float) -> int:
    ordered = sorted(times)
    return max((bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)),
               default=0)


def mean_per_window(times: list[float], window_s: float) -> float:
    """Mean count over windows [t, t + W) slid in 0.5 s steps across the busy time."""
    ordered = sorted(times)
    if not ordered or ordered[-1] - ordered[0] < window_s:
        return 0.0
    starts = [ordered[0] + 0.5 * k for k in range(int((ordered[-1] - ordered[0] - window_s) / 0.5))]
    counts = [bisect_left(ordered, s + window_s) - bisect_left(ordered, s) for s in starts]
    return statistics.fmean(counts) if counts else 0.0


def figure_d(stack: Stack) -> tuple[Figure, Figure]:
    seed_workspace(stack.db, "ws_d", int(RL_LIMIT / RL_WINDOW_S * RL_RUN_S * 2))
    limit_env = {"BACKFILL_RL_REQUESTS_PER_MIN": str(RL_LIMIT),
                 "BACKFILL_RL_PERIOD_S": str(RL_WINDOW_S)}
    limited = ("--rpm-limit", str(RL_LIMIT), "--rl-window-s", str(RL_WINDOW_S))
    with stub(0, *limited) as url, workers(stack, url, count=2, **limit_env):
        job_id = create_job(stack, "ws_d")
        time.sleep(RL_RUN_S)
        cancel(stack.db, job_id)
        window = stub_admin_get(url + "/_ratelimit")
    admitted, rejected = window["admitted"], window["rejected"]
    most = max_in_window(admitted, RL_WINDOW_S) / RL_LIMIT
    mean = mean_per_window(admitted, RL_WINDOW_S) / RL_LIMIT
    scale = (f"R = {RL_LIMIT} per {RL_WINDOW_S:g} s window (scaled from 60 s), "
             f"2 worker processes × {CONCURRENCY} threads, {RL_RUN_S:g} s, "
             f"{len(admitted)} requests, {len(rejected)} refused by the stand-in")
    return (Figure("(d) highest window count ÷ R", most, "≤ 1.0", most <= 1.0, scale),
            Figure("(d) mean window count ÷ R", mean, "≥ 0.95", mean >= 0.95, scale))


def stub_admin_get(url: str) -> dict[str, Any]:
    """A plain GET of the stand-in's admin route (no SDK: it is not an API route)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (local stand-in)
        document: dict[str, Any] = json.load(answer)
        return document


def long_fields(marker: str) -> list[dict[str, Any]]:
    """Field definitions of ~6,000 characters: a prefix above the 1,024-token minimum."""
    words = ("Read the whole conversation carefully and note every detail that bears on "
             "this question, including corrections the caller makes later on. ") * 3
    return [{"type": "string", "name": f"detail_{n}",
             "description": f"[{marker}] Detail {n}. {words}"} for n in range(12)]


def billed_input_per_session(stack: Stack, job_id: str) -> float:
    with stack.db.transaction() as tx:
        row = tx.execute(text("""
            SELECT count(*) AS n, sum(input_tokens) AS input, sum(cache_read_tokens) AS rd,
                   sum(cache_write_tokens) AS wr FROM analysis_runs WHERE job_id = :job
        """), {"job": job_id}).one()
    tokens = Tokens(input=int(row.input or 0), cache_read=int(row.rd or 0),
                    cache_write=int(row.wr or 0))
    settings = stack.settings
    billed = (tokens.input + tokens.cache_write * settings.price_cache_write_multiplier
              + tokens.cache_read * settings.price_cache_read_multiplier)
    return billed / max(int(row.n), 1)


def run_job_to_end(stack: Stack, workspace_id: str, sessions: int) -> str:
    job_id = create_job(stack, workspace_id)
    wait_until_done(sessions, lambda: done_count(stack.db, job_id))
    return job_id


def figure_e(stack: Stack) -> Figure:
    marker = secrets.token_hex(4)
    for workspace_id in ("ws_e_on", "ws_e_off"):
        seed_workspace(stack.db, workspace_id, CACHE_SESSIONS, long_fields(marker))
    with stub(0) as url:
        with workers(stack, url, BACKFILL_PROMPT_CACHING="true"):
            cached = billed_input_per_session(
                stack, run_job_to_end(stack, "ws_e_on", CACHE_SESSIONS))
        with workers(stack, url, BACKFILL_PROMPT_CACHING="false"):
            plain = billed_input_per_session(
                stack, run_job_to_end(stack, "ws_e_off", CACHE_SESSIONS))
    ratio = cached / plain
    return Figure("(e) billed input/session cached ÷ not", ratio, "< 1 (lower is better)",
                  ratio < 1, f"{cached:.0f} ÷ {plain:.0f} input-token equivalents per session "
                  f"({CACHE_SESSIONS} sessions each; writes ×1.25, reads ×0.1)")


# --------------------------------------------------------------------------- report


def machine(stack: Stack, load_at_start: str) -> dict[str, str]:
    with stack.db.transaction() as tx:
        postgres = str(tx.execute(text("SHOW server_version")).scalar_one())
    memory_kb = next((int(line.split()[1]) for line in
                      Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:")), 0)
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": postgres,
        "redis server": str(stack.redis.info("server")["redis_version"]),
        **{package: version(package) for package in
           ("celery", "kombu", "redis", "anthropic", "httpx", "sqlalchemy", "psycopg")},
        "load average 1/5/15 min": f"{load_at_start} at start, {load} at end",
    }


def print_report(figures: list[Figure], about: dict[str, str]) -> None:
    print(f"\n{'figure':<40}{'measured':>10}  {'target':<22}{'result':<6}")
    for figure in figures:
        result = "-" if figure.passed is None else ("pass" if figure.passed else "FAIL")
        print(f"{figure.name:<40}{figure.measured:>10.3f}  {figure.target:<22}{result:<6}")
    print("\ndetails:")
    for figure in figures:
        print(f"  {figure.name}: {figure.detail}")
    print("\nmachine:")
    for key, value in about.items():
        print(f"  {key}: {value}")
    if QUICK:
        print("\nBENCH_QUICK=1: small sizes, not figures to quote.")


STEPS: tuple[tuple[str, Callable[[Stack], list[Figure]]], ...] = (
    ("a", figure_a),
    ("b", lambda stack: [figure_b(stack)]),
    ("c", lambda stack: [figure_c(stack)]),
    ("d", lambda stack: list(figure_d(stack))),
    ("e", lambda stack: [figure_e(stack)]),
)


def run(server: str, broker_url: str) -> None:
    load_at_start = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    with scratch_database(server, "bf_bench_pipeline") as url:
        settings = Settings(database_url=url, broker_url=broker_url,
                            queue_name=f"bench_{secrets.token_hex(3)}")
        stack = Stack(settings, Database.from_settings(settings, pool_size=3),
                      redis.Redis.from_url(redis_client_url(broker_url)), base_env(settings))
        try:
            with started(processes.backfill_command("scheduler"), "scheduler", stack.env,
                         "scheduler running"):
                figures: list[Figure] = []
                for name, step in STEPS:
                    if name not in CHOSEN:
                        continue
                    print(f"measuring ({name}) …", file=sys.stderr, flush=True)
                    figures += step(stack)
            print_report(figures, machine(stack, load_at_start))
        finally:
            stack.db.dispose()
            stack.redis.close()


def main() -> None:
    server = postgres_url()
    broker_url = start_embedded_redis(RUN_DIR)
    try:
        run(server, broker_url)
    finally:
        stop_embedded(RUN_DIR)  # the bench's own Redis, and Postgres when embedded here


if __name__ == "__main__":
    main()
