"""Minimal rows for reliability tests: a workspace, one agent, calls with chosen transcripts.

A transcript line `session_id=<marker>` is how a test steers the LLM stand-in's per-session
fault rules (the worker's prompt carries the transcript, never the session id itself).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import Connection, text

from shared.db import Database

AGENT_FIELDS = [{"type": "boolean", "name": "resolved", "description": "Was it resolved?"}]


def workspace_with_calls(db: Database, workspace_id: str, calls: Mapping[str, str],
                         *, agent_id: str = "agent") -> None:
    """`calls`: session id -> the user's line. The agent has one draft version."""
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace_id})
        tx.execute(text("""
            INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                        analysis_model, analysis_data)
            VALUES (:ws, :agent, 0, false, 'voice', 'claude-haiku-4-5', CAST(:fields AS jsonb))
        """), {"ws": workspace_id, "agent": agent_id, "fields": json.dumps(AGENT_FIELDS)})
        for session_id, line in calls.items():
            add_call(tx, workspace_id, session_id, line, agent_id=agent_id)


def add_call(tx: Connection, workspace_id: str, session_id: str, line: str, *,
             agent_id: str = "agent") -> None:
    transcript = [{"role": "agent", "content": "Hello, how can I help?"},
                  {"role": "user", "content": line}]
    tx.execute(text("""
        INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version, status,
                              transcript)
        VALUES (:sid, 'call', :ws, :agent, 0, 'ended', CAST(:transcript AS jsonb))
    """), {"sid": session_id, "ws": workspace_id, "agent": agent_id,
           "transcript": json.dumps(transcript)})


def running_job(db: Database, job_id: str, workspace_id: str, session_ids: list[str],
                *, state: str = "pending") -> None:
    """A running job whose items are in `state` (queued: as if just dispatched)."""
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO backfill_jobs (id, workspace_id, kind, filters, matched)
            VALUES (:job, :ws, 'call', '[]', :n)
        """), {"job": job_id, "ws": workspace_id, "n": len(session_ids)})
        tx.execute(text("""
            INSERT INTO backfill_items (job_id, session_id, state, queued_at)
            SELECT :job, sid, CAST(:state AS text),
                   CASE WHEN CAST(:state AS text) = 'queued' THEN clock_timestamp() END
              FROM unnest(CAST(:sids AS text[])) AS sid
        """), {"job": job_id, "sids": session_ids, "state": state})
