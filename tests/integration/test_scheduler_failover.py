"""Two real `backfill scheduler` processes: one holds the Postgres advisory lock and dispatches,
the other stands by; when the leader is SIGKILLed or loses its lock connection, the standby
takes over within seconds.

They run against a database and a queue of their own: the session's pipeline scheduler
dispatches every running job of the shared test database, and a session worker would drain the
shared queue, either of which would hide who dispatched what here. Nobody consumes the queue, so
dispatched items stay `queued` and their messages stay in the Redis list that KEDA watches.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from scheduler.dev import processes
from scheduler.run.leader import LeaderLock, lock_key_parts
from shared.broker import redis_client_url
from shared.migrate import upgrade_to_head
from shared.settings import DEFAULT_LEADER_LOCK_KEY, Settings
from tests.integration.conftest import LOG_DIR, service_env, wait_for_log

pytestmark = pytest.mark.integration

LEADER = "scheduler is the leader"
STANDBY = "scheduler is on standby"
LOST = "scheduler lost the leader lock"
# The standby asks every BACKFILL_LEADER_RETRY_S (1 s); a killed leader's lock goes at once.
TAKEOVER_LIMIT_S = 5.0

_LOCK_HOLDERS = text("""
    SELECT l.pid AS backend, a.application_name
      FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.classid = :classid AND l.objid = :objid
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
""")


@pytest.fixture
def failover_url(database_url: str) -> Iterator[str]:
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"backfill_failover_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def failover_db(failover_url: str) -> Iterator[Engine]:
    engine = create_engine(failover_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def failover_env(settings: Settings, stub_url: str, failover_url: str,
                 broker_url: str) -> Iterator[dict[str, str]]:
    queue = f"backfill_failover_{secrets.token_hex(4)}"
    env = service_env(settings, stub_url)
    # The real default lock key: this database is ours alone, and advisory locks are per
    # database, so no other scheduler of the test run competes for it.
    env.update(DATABASE_URL=failover_url, BACKFILL_QUEUE=queue)
    env.pop("BACKFILL_LEADER_LOCK_KEY", None)
    yield env
    with redis.Redis.from_url(redis_client_url(broker_url)) as client:
        client.delete(queue)


def backfill(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(processes.backfill_command(*args), env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def create_job(env: dict[str, str]) -> str:
    document = json.loads(backfill(env, "create", "--workspace", "ws_acme", "--kind", "call",
                                   "--filters", "[]", "--json"))
    return str(document["id"])


def start_scheduler(env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = LOG_DIR / f"{name}.log"
    log_path.unlink(missing_ok=True)
    process = processes.start(processes.backfill_command("scheduler"), log_path, env)
    wait_for_log(log_path, "scheduler running", process)
    return process, log_path


def lock_holders(engine: Engine) -> list[int]:
    """OS pids of the schedulers holding the default lock (from their application_name)."""
    classid, objid = lock_key_parts(DEFAULT_LEADER_LOCK_KEY)
    with engine.connect() as connection:
        rows = connection.execute(_LOCK_HOLDERS, {"classid": classid, "objid": objid}).all()
    return [int(row.application_name.rsplit("-", 1)[1]) for row in rows]


def item_states(engine: Engine, job_id: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT state, count(*) AS n FROM backfill_items WHERE job_id = :job GROUP BY state"
        ), {"job": job_id}).all()
    return {row.state: int(row.n) for row in rows}


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:.0f}s: {what}")


def dispatched(engine: Engine, job_id: str) -> bool:
    states = item_states(engine, job_id)
    return bool(states) and states.get("pending", 0) == 0


def last_status(log_path: Path) -> str:
    """The last leadership line of a scheduler's log (JSON lines: the log is not a terminal)."""
    events = [json.loads(line).get("event", "") for line in log_path.read_text().splitlines()
              if line.startswith("{")]
    lines = [event for event in events if event.startswith("scheduler ")]
    return lines[-1] if lines else ""


def test_one_scheduler_dispatches_and_the_other_takes_over_when_it_is_killed(
        failover_env: dict[str, str], failover_db: Engine, broker_url: str,
        examples_dir: Path) -> None:
    backfill(failover_env, "import", str(examples_dir / "sessions.jsonl"))
    first, first_log = start_scheduler(failover_env, "scheduler-failover-a")
    try:
        wait_for_log(first_log, LEADER, first)
        second, second_log = start_scheduler(failover_env, "scheduler-failover-b")
        try:
            wait_for_log(second_log, STANDBY, second)
            assert lock_holders(failover_db) == [first.pid]
            before = create_job(failover_env)
            wait_until(lambda: dispatched(failover_db, before), 10, "the leader dispatches")
            assert LEADER not in second_log.read_text()

            first.kill()  # SIGKILL: no chance to release anything
            killed_at = time.monotonic()
            first.wait(10)
            wait_for_log(second_log, LEADER, second, timeout_s=TAKEOVER_LIMIT_S)
            print(f"takeover after {time.monotonic() - killed_at:.2f}s")
            assert lock_holders(failover_db) == [second.pid]

            after = create_job(failover_env)
            wait_until(lambda: dispatched(failover_db, after), 10, "the new leader dispatches")
            queued = sum(item_states(failover_db, job).get("queued", 0)
                         for job in (before, after))
            # KEDA's listName is BACKFILL_QUEUE: every queued item is one message in that list.
            with redis.Redis.from_url(redis_client_url(broker_url)) as client:
                assert client.llen(failover_env["BACKFILL_QUEUE"]) == queued > 0
        finally:
            processes.stop(second)
    finally:
        processes.stop(first)


def test_a_leader_whose_lock_connection_dies_steps_down_and_one_scheduler_leads_again(
        failover_env: dict[str, str], failover_db: Engine) -> None:
    first, first_log = start_scheduler(failover_env, "scheduler-lost-lock-a")
    try:
        wait_for_log(first_log, LEADER, first)
        second, second_log = start_scheduler(failover_env, "scheduler-lost-lock-b")
        try:
            wait_for_log(second_log, STANDBY, second)
            # What a Postgres restart does to the leader's session: the lock is gone with it.
            classid, objid = lock_key_parts(DEFAULT_LEADER_LOCK_KEY)
            with failover_db.connect() as connection:
                connection.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = :classid AND objid = :objid"),
                    {"classid": classid, "objid": objid})
            wait_for_log(first_log, LOST, first, timeout_s=TAKEOVER_LIMIT_S)
            wait_until(lambda: len(lock_holders(failover_db)) == 1, TAKEOVER_LIMIT_S,
                       "one scheduler holds the lock again")
            logs = {first.pid: first_log, second.pid: second_log}
            (holder,) = lock_holders(failover_db)
            (other,) = set(logs) - {holder}
            wait_until(lambda: last_status(logs[holder]).startswith(LEADER), TAKEOVER_LIMIT_S,
                       "the holder says it leads")
            assert not last_status(logs[other]).startswith(LEADER)
        finally:
            processes.stop(second)
    finally:
        processes.stop(first)


def test_lock_is_exclusive_lost_with_its_connection_and_released_on_request(
        failover_url: str, failover_db: Engine) -> None:
    key = secrets.randbits(62)
    first, second = LeaderLock(failover_url, key), LeaderLock(failover_url, key)
    try:
        assert first.try_acquire() and first.still_held()
        assert not second.try_acquire()
        classid, objid = lock_key_parts(key)
        with failover_db.connect() as connection:
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = :classid AND objid = :objid"), {"classid": classid, "objid": objid})
        assert not first.still_held() and first.last_error
        assert second.try_acquire()
        assert not first.try_acquire()
        second.release()
        assert first.try_acquire()
    finally:
        first.release()
        second.release()
