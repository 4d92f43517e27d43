"""What each kind of LLM failure does to the item and the job (worker service, real Postgres,
stand-in over HTTP with faults chosen per session)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.dev.llm_stub import FaultConfig, make_server
from shared.db import Database
from shared.settings import Settings
from tests.integration.conftest import worker_context
from worker.context import WorkerContext
from worker.service import analyze_session

pytestmark = pytest.mark.integration

AGENT_FIELDS = [{"type": "boolean", "name": "resolved", "description": "Was it resolved?"}]


@pytest.fixture(scope="module")
def faulty_stub() -> Iterator[str]:
    # The stand-in fails requests whose transcript carries `session_id=<marker>`.
    faults = FaultConfig(fail_session_ids={"m429": 429, "m401": 401, "m400": 400})
    server = make_server("127.0.0.1", 0, faults=faults)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def context(settings: Settings, db: Database, faulty_stub: str) -> Iterator[WorkerContext]:
    worker_settings = settings.model_copy(update={
        "anthropic_base_url": faulty_stub, "backfill_llm": "stub",
        # Far in the future: the test run's own scheduler must not re-send these items.
        "retry_base_s": 3000.0, "retry_cap_s": 3000.0,
    })
    with worker_context(worker_settings, db) as context:
        yield context


def queued_item(db: Database, marker: str) -> tuple[str, str]:
    """A running job in its own workspace with one queued item whose transcript names marker."""
    suffix = secrets.token_hex(3)
    ws, job, sid = f"ws_fail_{suffix}", f"bf_fail_{suffix}", f"sess_{marker}_{suffix}"
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": ws})
        tx.execute(text("""INSERT INTO agent_versions (workspace_id, agent_id, version,
                           is_published, kind, analysis_model, analysis_data)
                           VALUES (:ws, 'agent', 0, false, 'voice', 'claude-haiku-4-5',
                                   CAST(:fields AS jsonb))"""),
                   {"ws": ws, "fields": json.dumps(AGENT_FIELDS)})
        tx.execute(text("""INSERT INTO sessions (session_id, kind, workspace_id, agent_id,
                           agent_version, status, transcript)
                           VALUES (:sid, 'call', :ws, 'agent', 0, 'ended', CAST(:t AS jsonb))"""),
                   {"sid": sid, "ws": ws, "t": json.dumps(
                       [{"role": "user", "content": f"hello session_id={marker}"}])})
        tx.execute(text("""INSERT INTO backfill_jobs (id, workspace_id, kind, filters, matched)
                           VALUES (:job, :ws, 'call', '[]', 1)"""), {"job": job, "ws": ws})
        tx.execute(text("""INSERT INTO backfill_items (job_id, session_id, state, queued_at)
                           VALUES (:job, :sid, 'queued', now())"""), {"job": job, "sid": sid})
    return job, sid


def item_and_job(db: Database, job: str, sid: str) -> tuple[Any, Any]:
    with db.transaction() as tx:
        item = tx.execute(
            text("SELECT * FROM backfill_items WHERE job_id = :j AND session_id = :s"),
            {"j": job, "s": sid},
        ).one()
        job_row = tx.execute(text("SELECT * FROM backfill_jobs WHERE id = :j"), {"j": job}).one()
    return item, job_row


def test_rate_limited_goes_back_to_pending_with_a_delay(context: WorkerContext,
                                                        db: Database) -> None:
    job, sid = queued_item(db, "m429")
    assert analyze_session(context, job, sid) == "retry"
    item, job_row = item_and_job(db, job, sid)
    assert (item.state, item.error_kind, item.attempts, job_row.state) == (
        "pending", "llm_rate_limited", 1, "running")
    assert item.not_before is not None


def test_auth_error_pauses_the_job_without_charging_an_attempt(context: WorkerContext,
                                                               db: Database) -> None:
    job, sid = queued_item(db, "m401")
    assert analyze_session(context, job, sid) == "paused"
    item, job_row = item_and_job(db, job, sid)
    assert (item.state, item.attempts, job_row.state) == ("pending", 0, "paused")
    assert job_row.state_reason.startswith("llm_auth")


def test_bad_request_fails_at_once(context: WorkerContext, db: Database) -> None:
    job, sid = queued_item(db, "m400")
    assert analyze_session(context, job, sid) == "failed"
    item, _ = item_and_job(db, job, sid)
    assert (item.state, item.error_kind) == ("failed", "llm_bad_request")


def test_success_then_second_delivery_is_a_no_op(context: WorkerContext, db: Database) -> None:
    job, sid = queued_item(db, "fine")
    assert analyze_session(context, job, sid) == "succeeded"
    assert analyze_session(context, job, sid) == "not_claimed"
    with db.transaction() as tx:
        runs = tx.execute(text("SELECT count(*) FROM analysis_runs WHERE session_id = :s"),
                          {"s": sid}).scalar()
        custom = tx.execute(text("SELECT custom_analysis_data FROM sessions "
                                 "WHERE session_id = :s"), {"s": sid}).scalar()
    assert runs == 1 and set(custom) == {"resolved"}


def test_concurrent_deliveries_write_once(context: WorkerContext, db: Database) -> None:
    job, sid = queued_item(db, "twice")
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(analyze_session(context, job, sid)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["not_claimed"] * 3 + ["succeeded"]
