"""Helpers for the safe-to-apply tests (trials, promote, revert): a workspace of our own with an
agent draft and imported analyses, the sessions' current analysis, a job's runs, waiting for a
job. (This module holds no tests itself.)"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from shared.db import Database

FIELDS: list[dict[str, Any]] = [
    {"type": "system-presets", "name": "call_summary", "description": "Summarise in 5 words."},
    {"type": "enum", "name": "intent", "description": "Why they called.",
     "choices": ["booking", "cancellation", "billing", "other"]},
    {"type": "number", "name": "party_size", "description": "How many people?"},
    {"type": "boolean", "name": "callback", "description": "Asked to be called back?"},
]
IMPORTED = {"summary": "imported summary", "successful": False, "user_sentiment": "Neutral",
            "custom_analysis_data": {"intent": "other", "legacy_score": 3}}
LINES = ("I want a booking for 4 people tonight", "please cancel my table, cancellation",
         "my billing shows 120 dollars twice", "can you call me back tomorrow",
         "just calling to say thanks", "a booking for 2 on friday")


@dataclass(frozen=True)
class Seeded:
    workspace_id: str
    session_ids: list[str]
    """The sessions in creation order; the last two are skipped by any job (not connected,
    no transcript)."""

    @property
    def analysable(self) -> list[str]:
        return self.session_ids[:-2]


def seed(db: Database, calls: int, *, fields: list[dict[str, Any]] | None = None,
         label: str = "safe") -> Seeded:
    """A workspace with one voice agent (a draft with `fields`) and `calls` ended calls, plus
    one not connected and one without a transcript, each with an imported analysis."""
    workspace = f"ws_{label}_{secrets.token_hex(4)}"
    ids = [f"{workspace}_c{n:03d}" for n in range(calls)]
    ids += [f"{workspace}_nc", f"{workspace}_empty"]
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace})
        tx.execute(text("""
            INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                        analysis_model, analysis_data)
            VALUES (:ws, 'agent', 1, false, 'voice', 'claude-haiku-4-5', CAST(:fields AS jsonb))
        """), {"ws": workspace, "fields": json.dumps(fields or FIELDS)})
        for n, session_id in enumerate(ids):
            status = "not_connected" if session_id.endswith("_nc") else "ended"
            line = "" if session_id.endswith("_empty") else LINES[n % len(LINES)]
            transcript = [{"role": "agent", "content": "Hello, how can I help?" if line else ""},
                          {"role": "user", "content": line}]
            tx.execute(text("""
                INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version,
                                      status, start_timestamp, transcript, summary, successful,
                                      user_sentiment, custom_analysis_data)
                VALUES (:sid, 'call', :ws, 'agent', 1, :status, :start, CAST(:t AS jsonb),
                        :summary, :successful, :sentiment, CAST(:custom AS jsonb))
            """), {"sid": session_id, "ws": workspace, "status": status,
                   "start": 1_762_000_000_000 + n, "t": json.dumps(transcript),
                   "summary": IMPORTED["summary"], "successful": IMPORTED["successful"],
                   "sentiment": IMPORTED["user_sentiment"],
                   "custom": json.dumps(IMPORTED["custom_analysis_data"])})
    return Seeded(workspace, ids)


def imported_document() -> dict[str, Any]:
    """The imported analysis in the shape of a run's result (what a first run's before is)."""
    return {"call_summary": IMPORTED["summary"], "call_successful": IMPORTED["successful"],
            "user_sentiment": IMPORTED["user_sentiment"],
            "custom_analysis_data": IMPORTED["custom_analysis_data"]}


def set_draft_fields(db: Database, workspace_id: str, fields: list[dict[str, Any]]) -> None:
    """An edit of the agent's draft: the configuration (and its hash) changes."""
    with db.transaction() as tx:
        tx.execute(text("""
            UPDATE agent_versions SET analysis_data = CAST(:fields AS jsonb)
             WHERE workspace_id = :ws AND agent_id = 'agent'
        """), {"ws": workspace_id, "fields": json.dumps(fields)})


# Where the provenance is in the tuples of `current`.
RUN_ID = 5


def current(db: Database, session_ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """Everything of a session's current analysis, its provenance (the run, at `RUN_ID`) and its
    no-lost-update time."""
    with db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT session_id, summary, successful, user_sentiment, in_voicemail,
                   custom_analysis_data, analysis_run_id, analysis_started_at
              FROM sessions WHERE session_id = ANY(:ids)
        """), {"ids": session_ids}).all()
    return {row.session_id: tuple(row[1:]) for row in rows}


def runs_of(db: Database, job_id: str) -> dict[str, Any]:
    with db.transaction() as tx:
        rows = tx.execute(text("SELECT * FROM analysis_runs WHERE job_id = :j"),
                          {"j": job_id}).all()
    return {row.session_id: row for row in rows}


def job_row(db: Database, job_id: str) -> Any:
    with db.transaction() as tx:
        return tx.execute(text("SELECT * FROM backfill_jobs WHERE id = :id"),
                          {"id": job_id}).one()


def wait_for_job(db: Database, job_id: str, timeout_s: float = 120.0) -> Any:
    """The job once it rests (completed, cancelled, paused)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = job_row(db, job_id)
        if job.state in ("completed", "cancelled", "paused"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state}"
        time.sleep(0.2)


def audit_of(db: Database, job_id: str, action: str) -> list[Any]:
    with db.transaction() as tx:
        return tx.execute(text("""
            SELECT actor, reason, details FROM audit_events
             WHERE job_id = :j AND action = :action ORDER BY id
        """), {"j": job_id, "action": action}).all()
