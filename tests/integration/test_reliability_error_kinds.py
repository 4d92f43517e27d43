"""Every error kind of DESIGN.md, produced for real and followed to the state DESIGN gives it.

The LLM kinds come from the stand-in over HTTP through the real SDK (a fault per transcript
marker); `config_missing` from an agent without versions; `db_unavailable` from a statement
timeout while the session row is locked. The worker service runs against a database of its
own; between attempts the test does the dispatcher's part (the item back to `queued`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from chaos.cluster import scratch_database
from chaos.seed import add_call, running_job, workspace_with_calls
from scheduler.dev import processes
from scheduler.dev.llm_stub import FaultConfig, make_server
from shared.db import Database
from shared.settings import Settings
from tests.integration.conftest import worker_context
from worker.context import WorkerContext
from worker.service import analyze_session

pytestmark = pytest.mark.integration

TRANSIENT = {"429": "llm_rate_limited", "529": "llm_overloaded", "500": "llm_server_error",
             "hang": "llm_timeout", "reset": "llm_connection"}
INVALID_OUTPUT = ("malformed_json", "max_tokens")
PERMANENT = {"refusal": "llm_refusal", "400": "llm_bad_request", "413": "llm_bad_request"}
JOB_FATAL = {"401": "llm_auth", "403": "llm_auth", "402": "llm_billing"}
MAX_ATTEMPTS = 3
INVALID_OUTPUT_ATTEMPTS = 2
RETRY_AFTER_S = 2.0


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    faults = [*TRANSIENT, *INVALID_OUTPUT, *PERMANENT, *JOB_FATAL]
    config = FaultConfig(fail_session_ids={f"m{fault}": fault for fault in faults},
                         retry_after_s=RETRY_AFTER_S, hang_s=1.5)
    server = make_server("127.0.0.1", 0, faults=config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def scratch_url(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "backfill_kinds") as url:
        yield url


@pytest.fixture(scope="module")
def settings(scratch_url: str, stub_url: str) -> Settings:
    return Settings(database_url=scratch_url, anthropic_base_url=stub_url, backfill_llm="stub",
                    llm_timeout_s=0.5, max_attempts=MAX_ATTEMPTS,
                    invalid_output_attempts=INVALID_OUTPUT_ATTEMPTS,
                    retry_base_s=0.01, retry_cap_s=0.05)


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings, pool_size=3)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def context(settings: Settings, db: Database) -> Iterator[WorkerContext]:
    with worker_context(settings, db) as context:
        yield context


def queued_item(db: Database, line: str) -> tuple[str, str]:
    """A running job in a workspace of its own, with one queued call saying `line`."""
    suffix = secrets.token_hex(4)
    ws, job, sid = f"ws_{suffix}", f"bf_{suffix}", f"call_{suffix}"
    workspace_with_calls(db, ws, {sid: line})
    running_job(db, job, ws, [sid], state="queued")
    return job, sid


def marked_item(db: Database, fault: str) -> tuple[str, str]:
    return queued_item(db, f"I need help. session_id=m{fault}")


def item(db: Database, job: str, sid: str) -> Any:
    with db.transaction() as tx:
        return tx.execute(text("""
            SELECT i.*, i.not_before - clock_timestamp() AS wait, j.state AS job_state,
                   j.state_reason
              FROM backfill_items AS i JOIN backfill_jobs AS j ON j.id = i.job_id
             WHERE i.job_id = :j AND i.session_id = :s
        """), {"j": job, "s": sid}).one()


def redispatch(db: Database, job: str, sid: str) -> None:
    """The dispatcher's part: a pending item whose wait is over is queued again."""
    with db.transaction() as tx:
        tx.execute(text("""UPDATE backfill_items SET state = 'queued', queued_at = now(),
                           not_before = NULL WHERE job_id = :j AND session_id = :s
                           AND state = 'pending'"""), {"j": job, "s": sid})


def drive(ctx: WorkerContext, db: Database, job: str, sid: str) -> list[str]:
    """Run the item until it stops asking for a retry; check every retry on the way."""
    outcomes = [analyze_session(ctx, job, sid)]
    while outcomes[-1] == "retry":
        row = item(db, job, sid)
        assert (row.state, row.lease_expires_at) == ("pending", None)
        assert row.not_before is not None and row.error_kind is not None
        redispatch(db, job, sid)
        outcomes.append(analyze_session(ctx, job, sid))
    return outcomes


@pytest.mark.parametrize(("fault", "kind"), sorted(TRANSIENT.items()))
def test_transient_kinds_are_retried_then_failed_at_the_cap(
        context: WorkerContext, db: Database, fault: str, kind: str) -> None:
    job, sid = marked_item(db, fault)
    assert drive(context, db, job, sid) == ["retry"] * (MAX_ATTEMPTS - 1) + ["failed"]
    row = item(db, job, sid)
    assert (row.state, row.error_kind, row.attempts, row.job_state) == (
        "failed", kind, MAX_ATTEMPTS, "running")


@pytest.mark.parametrize("fault", INVALID_OUTPUT)
def test_invalid_output_is_retried_a_few_times_then_failed(
        context: WorkerContext, db: Database, fault: str) -> None:
    job, sid = marked_item(db, fault)
    expected = ["retry"] * (INVALID_OUTPUT_ATTEMPTS - 1) + ["failed"]
    assert drive(context, db, job, sid) == expected
    row = item(db, job, sid)
    assert (row.state, row.error_kind, row.attempts) == (
        "failed", "llm_invalid_output", INVALID_OUTPUT_ATTEMPTS)


@pytest.mark.parametrize(("fault", "kind"), sorted(PERMANENT.items()))
def test_permanent_kinds_fail_at_once(context: WorkerContext, db: Database, fault: str,
                                      kind: str) -> None:
    job, sid = marked_item(db, fault)
    assert drive(context, db, job, sid) == ["failed"]
    row = item(db, job, sid)
    assert (row.state, row.error_kind, row.attempts) == ("failed", kind, 1)
    assert row.error  # the provider's message, for `backfill failed`


def test_config_missing_fails_at_once(context: WorkerContext, db: Database) -> None:
    job, sid = queued_item(db, "hello")
    with db.transaction() as tx:  # the session's agent has no versions at all
        tx.execute(text("UPDATE sessions SET agent_id = 'ghost' WHERE session_id = :s"),
                   {"s": sid})
    assert drive(context, db, job, sid) == ["failed"]
    assert item(db, job, sid).error_kind == "config_missing"


@pytest.mark.parametrize(("fault", "kind"), sorted(JOB_FATAL.items()))
def test_job_fatal_kinds_pause_the_job_and_say_why(
        context: WorkerContext, db: Database, settings: Settings, fault: str,
        kind: str) -> None:
    job, sid = marked_item(db, fault)
    with db.transaction() as tx:  # a sibling waiting its turn must not be failed either
        add_call(tx, job.replace("bf_", "ws_"), f"{sid}_b", "hello")
        tx.execute(text("INSERT INTO backfill_items (job_id, session_id) VALUES (:j, :s)"),
                   {"j": job, "s": f"{sid}_b"})
    assert drive(context, db, job, sid) == ["paused"]
    row = item(db, job, sid)
    assert (row.state, row.attempts, row.job_state) == ("pending", 0, "paused")
    assert row.state_reason.startswith(kind)
    assert item(db, job, f"{sid}_b").state == "pending"
    shown = show_json(settings, job)
    assert (shown["state"], shown["state_reason"]) == ("paused", row.state_reason)
    assert shown["counts"]["failed"] == 0


def show_json(settings: Settings, job: str) -> Any:
    import json

    result = subprocess.run(
        processes.backfill_command("show", job, "--json"), capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": settings.require_database_url()}, timeout=60,
        check=True)
    return json.loads(result.stdout)


def test_rate_limit_waits_at_least_retry_after(settings: Settings, db: Database) -> None:
    patient = settings.model_copy(update={"retry_cap_s": 60.0})
    with worker_context(patient, db) as context:
        job, sid = marked_item(db, "429")
        assert analyze_session(context, job, sid) == "retry"
    wait = item(db, job, sid).wait.total_seconds()
    assert RETRY_AFTER_S - 0.5 <= wait <= 60


def test_database_unavailable_is_retried(settings: Settings, db: Database,
                                         stub_url: str) -> None:
    """The result write times out on a locked session row: the item goes back to pending as
    db_unavailable (nothing half-written), and the next attempt succeeds."""
    impatient = settings.model_copy(update={"db_statement_timeout_ms": 300})
    short_db = Database.from_settings(impatient, pool_size=2)
    job, sid = queued_item(db, "please call me back")
    try:
        with worker_context(impatient, short_db) as context:
            with db.transaction() as tx:
                tx.execute(text("SELECT 1 FROM sessions WHERE session_id = :s FOR UPDATE"),
                           {"s": sid})
                outcome = analyze_session(context, job, sid)
            assert outcome == "retry"
            row = item(db, job, sid)
            assert (row.state, row.error_kind, row.not_before is not None) == (
                "pending", "db_unavailable", True)
            assert runs_of(db, job, sid) == 0
            redispatch(db, job, sid)
            assert analyze_session(context, job, sid) == "succeeded"
    finally:
        short_db.dispose()
    assert runs_of(db, job, sid) == 1


def runs_of(db: Database, job: str, sid: str) -> int:
    with db.transaction() as tx:
        return int(tx.execute(text("SELECT count(*) FROM analysis_runs WHERE job_id = :j "
                                   "AND session_id = :s"), {"j": job, "s": sid}).scalar_one())


def test_claim_while_the_database_is_down_leaves_the_item_queued(settings: Settings,
                                                                  db: Database) -> None:
    """Nothing can be written: the item stays queued for the reconciler's lost-message check."""
    dead = settings.model_copy(update={
        "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "db_connect_timeout_s": 1})
    dead_db = Database.from_settings(dead, pool_size=1)
    job, sid = queued_item(db, "hello")
    started = time.monotonic()
    try:
        with worker_context(dead, dead_db) as context:
            assert analyze_session(context, job, sid) == "db_unavailable"
    finally:
        dead_db.dispose()
    assert time.monotonic() - started < 10
    assert item(db, job, sid).state == "queued"
