"""Message Batches mode end to end: the session's scheduler submits batch-mode jobs to the
stand-in's batch endpoints, polls them and writes the results through the live write path.
A live-mode job (Celery worker) over the same sessions must end with the same analyses."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.dev import processes
from scheduler.dev.llm_stub import StubServer
from scheduler.dev.llm_stub import batches as stub_batches
from scheduler.jobs import planner
from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings

pytestmark = pytest.mark.integration

FRONT_DESK = [
    {"type": "system-presets", "name": "call_summary", "description": "Summarise in 5 words."},
    {"type": "enum", "name": "intent", "description": "Why?", "choices": ["booking", "billing",
                                                                          "other"]},
    {"type": "number", "name": "party_size", "description": "How many people?"},
    {"type": "boolean", "name": "is_new_customer", "description": "First call?"},
    {"type": "string", "name": "callback_time", "description": "When to call back?"},
]
BILLING = [{"type": "number", "name": "disputed_amount", "description": "Amount disputed?"}]

TRANSCRIPTS = {
    "a": "user: I want a booking for 4 people tonight\nagent: Sure.",
    "b": "customer: my billing shows 120 dollars twice\nagent: Let me check.",
    "c": "caller: just calling to say thanks\nagent: You are welcome.",
    "d": "user: can you call me back tomorrow at 9\nagent: Of course.",
}


def seed_workspace(db: Database, transcripts: dict[str, str]) -> tuple[str, list[str]]:
    """A workspace of its own: two agents, one session per transcript (+ one not connected,
    + one transferred to billing with both agents' fields)."""
    ws = f"ws_batch_{secrets.token_hex(3)}"
    sessions: list[str] = []
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": ws})
        for agent, fields, model in (("front", FRONT_DESK, "claude-haiku-4-5"),
                                     ("billing", BILLING, "claude-4.5-sonnet")):
            tx.execute(text("""INSERT INTO agent_versions (workspace_id, agent_id, version,
                               is_published, kind, analysis_model, analysis_data)
                               VALUES (:ws, :agent, 1, false, 'voice', :model,
                                       CAST(:fields AS jsonb))"""),
                       {"ws": ws, "agent": agent, "model": model, "fields": json.dumps(fields)})
        rows = [(f"{ws}_{key}", "ended", transcript, []) for key, transcript in transcripts.items()]
        rows.append((f"{ws}_nc", "not_connected", "user: hello?", []))
        rows.append((f"{ws}_tr", "ended", "user: refund 75 dollars please", [
            {"to_agent_id": "billing", "post_call_analysis_setting": "both_agents"}]))
        for sid, status, transcript, transfers in rows:
            tx.execute(text("""INSERT INTO sessions (session_id, kind, workspace_id, agent_id,
                               agent_version, status, transcript, agent_transfers, summary)
                               VALUES (:sid, 'call', :ws, 'front', 1, :status,
                                       CAST(:t AS jsonb), CAST(:tr AS jsonb), 'old summary')"""),
                       {"sid": sid, "ws": ws, "status": status, "tr": json.dumps(transfers),
                        "t": json.dumps(_turns(transcript))})
            sessions.append(sid)
    return ws, sessions


def _turns(transcript: str) -> list[dict[str, str]]:
    """`role: text` lines as transcript turns."""
    turns = []
    for line in transcript.splitlines():
        role, _, content = line.partition(": ")
        turns.append({"role": "agent" if role == "agent" else "user", "content": content})
    return turns


def wait_for_job(db: Database, job_id: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            job = tx.execute(text("SELECT * FROM backfill_jobs WHERE id = :id"),
                             {"id": job_id}).one()
        if job.state in ("completed", "cancelled", "paused"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout_s:.0f}s")


def current_analyses(db: Database, sessions: list[str]) -> dict[str, tuple[Any, ...]]:
    with db.transaction() as tx:
        rows = tx.execute(text("""SELECT session_id, summary, successful, user_sentiment,
                                         custom_analysis_data FROM sessions
                                   WHERE session_id = ANY(:ids)"""), {"ids": sessions}).all()
    return {row.session_id: tuple(row[1:]) for row in rows}


def runs_of(db: Database, job_id: str) -> dict[str, Any]:
    with db.transaction() as tx:
        rows = tx.execute(text("""SELECT session_id, result, config_hash, model, input_tokens,
                                         output_tokens FROM analysis_runs WHERE job_id = :j"""),
                          {"j": job_id}).all()
    return {row.session_id: row for row in rows}


def items_of(db: Database, job_id: str) -> dict[str, Any]:
    with db.transaction() as tx:
        rows = tx.execute(text("SELECT * FROM backfill_items WHERE job_id = :j"),
                          {"j": job_id}).all()
    return {row.session_id: row for row in rows}


def create(db: Database, settings: Settings, ws: str, mode: str | None) -> str:
    return planner.create_job(db, settings, ws, "call", [], mode=mode,
                              created_by="test").job_id


@pytest.fixture
def batch_faults(stub_server: StubServer) -> Iterator[StubServer]:
    yield stub_server
    stub_batches.configure(stub_server)  # no faults for the tests after this one


def test_batch_and_live_jobs_write_the_same_analyses(pipeline: Any, db: Database,
                                                     settings: Settings) -> None:
    ws, sessions = seed_workspace(db, TRANSCRIPTS)

    live_job = create(db, settings, ws, "live")
    assert wait_for_job(db, live_job).state == "completed"
    after_live = current_analyses(db, sessions)

    batch_job = create(db, settings, ws, "batch")
    assert wait_for_job(db, batch_job).state == "completed"
    after_batch = current_analyses(db, sessions)

    assert after_batch == after_live
    live_runs, batch_runs = runs_of(db, live_job), runs_of(db, batch_job)
    assert len(live_runs) == len(batch_runs) == len(TRANSCRIPTS) + 1  # not_connected skipped
    for sid, run in live_runs.items():
        other = batch_runs[sid]
        assert (other.result, other.config_hash, other.model) == (
            run.result, run.config_hash, run.model)
        assert other.input_tokens > 0 and other.output_tokens > 0
    batch_items = items_of(db, batch_job)
    assert {item.state for item in batch_items.values()} == {"succeeded", "skipped"}
    assert batch_items[f"{ws}_nc"].state == "skipped"
    with db.transaction() as tx:
        batches = tx.execute(text("SELECT state, request_count FROM backfill_batches "
                                  "WHERE job_id = :j"), {"j": batch_job}).all()
    assert batches and {row.state for row in batches} == {"ended"}
    assert sum(row.request_count for row in batches) == len(TRANSCRIPTS) + 1


def test_errored_and_expired_results_follow_the_retry_policy(
    pipeline: Any, db: Database, settings: Settings, batch_faults: StubServer
) -> None:
    tag = secrets.token_hex(2)
    markers = {f"bexp{tag}": "expired", f"berr{tag}": "errored:overloaded_error",
               f"bbad{tag}": "errored:invalid_request_error", f"bdead{tag}": "expired",
               f"bauth{tag}": "errored:authentication_error"}
    stub_batches.configure(batch_faults, fail_session_ids=markers,
                               fail_limit={f"bexp{tag}": 1, f"berr{tag}": 1,
                                           f"bauth{tag}": 1})
    ws, _ = seed_workspace(db, {
        marker[: -len(tag)]: f"user: hello session_id={marker}" for marker in markers})
    job_id = create(db, settings, ws, "batch")

    job = wait_for_job(db, job_id, timeout_s=180)
    if job.state == "paused":  # the authentication error pauses the job, as live does
        assert job.state_reason.startswith("llm_auth")
        with db.transaction() as tx:
            tx.execute(text("UPDATE backfill_jobs SET state = 'running' WHERE id = :id"),
                       {"id": job_id})
        job = wait_for_job(db, job_id, timeout_s=180)
    assert job.state == "completed"

    items = items_of(db, job_id)
    outcome = {sid[len(ws) + 1:]: (item.state, item.error_kind if item.state == "failed"
                                   else None, item.attempts) for sid, item in items.items()}
    assert outcome["bexp"] == ("succeeded", None, 2)
    assert outcome["berr"] == ("succeeded", None, 2)
    assert outcome["bauth"] == ("succeeded", None, 1)  # the paused attempt was not charged
    assert outcome["bbad"] == ("failed", "llm_bad_request", 1)
    assert outcome["bdead"] == ("failed", "llm_timeout", settings.max_attempts)


def test_mode_is_stored_only_for_batch_jobs_and_automatic_above_threshold(
    db: Database, settings: Settings
) -> None:
    ws, _ = seed_workspace(db, {"x": "user: hi"})  # 3 sessions
    auto = settings.model_copy(update={"batch_auto_threshold": 2})
    never = settings.model_copy(update={"batch_auto_threshold": 0})
    jobs = {
        "auto": create(db, auto, ws, None),
        "never": create(db, never, ws, None),
        "explicit_live": create(db, auto, ws, "live"),
        "explicit_batch": create(db, never, ws, "batch"),
    }
    with db.transaction() as tx:
        options = {name: tx.execute(text("SELECT options FROM backfill_jobs WHERE id = :id"),
                                    {"id": job}).scalar_one() for name, job in jobs.items()}
        # These jobs are only about the stored mode: nothing should run them.
        tx.execute(text("UPDATE backfill_jobs SET state = 'cancelled' WHERE id = ANY(:ids)"),
                   {"ids": list(jobs.values())})
    assert options["auto"].get("mode") == "batch"
    assert options["explicit_batch"].get("mode") == "batch"
    assert "mode" not in options["never"] and "mode" not in options["explicit_live"]
    with pytest.raises(InvalidInput, match="mode"):
        create(db, settings, ws, "bulk")


def test_items_in_a_running_batch_hold_the_long_lease(
    pipeline: Any, db: Database, settings: Settings, batch_faults: StubServer
) -> None:
    stub_batches.configure(batch_faults, delay_ms=3000)
    ws, _ = seed_workspace(db, {"x": "user: a slow batch"})
    job_id = create(db, settings, ws, "batch")
    deadline = time.monotonic() + 30
    leases: list[Any] = []
    while time.monotonic() < deadline and not leases:
        with db.transaction() as tx:
            leases = tx.execute(text("""
                SELECT i.lease_expires_at - now() AS left FROM backfill_items AS i
                  JOIN backfill_batches AS b ON b.job_id = i.job_id AND b.state = 'in_progress'
                 WHERE i.job_id = :j AND i.state = 'running'"""), {"j": job_id}).all()
        time.sleep(0.1)
    # Far beyond the live lease: the reconciler leaves them to the batch.
    assert leases and all(row.left.total_seconds() > 3600 for row in leases)
    assert wait_for_job(db, job_id).state == "completed"


def test_live_dispatch_leaves_batch_jobs_alone(db: Database, settings: Settings) -> None:
    from shared.state import jobs

    ws, _ = seed_workspace(db, {"x": "user: hi"})
    live, batch = create(db, settings, ws, "live"), create(db, settings, ws, "batch")
    with db.transaction() as tx:
        dispatched_live = set(jobs.running_jobs(tx, "live"))
        sent_as_batches = set(jobs.running_jobs(tx, "batch"))
        tx.execute(text("UPDATE backfill_jobs SET state = 'cancelled' WHERE id = ANY(:ids)"),
                   {"ids": [live, batch]})
    assert live in dispatched_live and batch not in dispatched_live
    assert batch in sent_as_batches and live not in sent_as_batches


def test_cli_create_takes_a_mode(pipeline: Any, db: Database) -> None:
    ws, _ = seed_workspace(db, {"x": "user: from the command line"})
    env = {**os.environ, **pipeline.env}
    base = ["create", "--workspace", ws, "--kind", "call", "--filters", "[]"]
    bad = subprocess.run(processes.backfill_command(*base, "--mode", "bulk"), env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mode" in bad.stderr
    made = subprocess.run(processes.backfill_command(*base, "--mode", "batch", "--json"),
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)
    assert job["options"]["mode"] == "batch"
    assert wait_for_job(db, job["id"]).state == "completed"
