"""Read side: the job and session JSON documents of DESIGN.md, from SQL counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.errors import NotFound
from shared.models import ITEM_STATES

_JOB = text("""
    SELECT id, workspace_id, kind, filters, state, state_reason, matched, created_at, finished_at
      FROM backfill_jobs WHERE id = :id
""")
_STATE_COUNTS = text("""
    SELECT state, count(*) AS n FROM backfill_items WHERE job_id = :id GROUP BY state
""")
_ERROR_KINDS = text("""
    SELECT error_kind, count(*) AS n FROM backfill_items
     WHERE job_id = :id AND state = 'failed' AND error_kind IS NOT NULL GROUP BY error_kind
""")


def job_json(tx: Session, job_id: str) -> dict[str, Any]:
    job = tx.execute(_JOB, {"id": job_id}).one_or_none()
    if job is None:
        raise NotFound(f"no backfill job {job_id!r}")
    counts: dict[str, int] = {"matched": job.matched} | {state: 0 for state in ITEM_STATES}
    counts |= {row.state: row.n for row in tx.execute(_STATE_COUNTS, {"id": job_id})}
    return {
        "id": job.id,
        "workspace_id": job.workspace_id,
        "kind": job.kind,
        "filters": job.filters,
        "state": job.state,
        "state_reason": job.state_reason,
        "counts": counts,
        "error_kinds": {row.error_kind: row.n for row in tx.execute(_ERROR_KINDS, {"id": job_id})},
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
    }


def list_jobs(tx: Session, workspace_id: str | None, limit: int = 50) -> list[dict[str, Any]]:
    rows = tx.execute(text("""
        SELECT id FROM backfill_jobs
         WHERE (CAST(:ws AS text) IS NULL OR workspace_id = :ws)
         ORDER BY created_at DESC LIMIT :limit
    """), {"ws": workspace_id, "limit": limit})
    return [job_json(tx, row.id) for row in rows]


_SESSION = text("""
    SELECT s.session_id, s.kind, s.workspace_id, s.agent_id, s.agent_version, s.summary,
           s.successful, s.user_sentiment, s.in_voicemail, s.custom_analysis_data,
           r.agent_id AS run_agent_id, r.agent_version AS run_agent_version, r.model,
           r.config_hash, r.job_id, r.created_at AS analyzed_at, r.used_draft
      FROM sessions AS s LEFT JOIN analysis_runs AS r ON r.id = s.analysis_run_id
     WHERE s.session_id = :id
""")


def session_json(tx: Session, session_id: str) -> dict[str, Any]:
    row = tx.execute(_SESSION, {"id": session_id}).one_or_none()
    if row is None:
        raise NotFound(f"no session {session_id!r}")
    prefix = "call" if row.kind == "call" else "chat"
    analysis: dict[str, Any] = {
        f"{prefix}_summary": row.summary,
        f"{prefix}_successful": row.successful,
        "user_sentiment": row.user_sentiment,
        "custom_analysis_data": row.custom_analysis_data or {},
    }
    if row.kind == "call":
        analysis["in_voicemail"] = row.in_voicemail
    return {
        "session_id": row.session_id,
        "kind": row.kind,
        "workspace_id": row.workspace_id,
        "agent_id": row.agent_id,
        "agent_version": row.agent_version,
        f"{prefix}_analysis": analysis,
        "analysis_source": _analysis_source(row),
    }


def _analysis_source(row: Any) -> dict[str, Any] | None:
    if row.run_agent_id is None:
        return None
    return {
        "agent_id": row.run_agent_id,
        "agent_version": row.run_agent_version,
        "used_draft": row.used_draft,
        "model": row.model,
        "config_hash": row.config_hash,
        "job_id": row.job_id,
        "analyzed_at": _iso(row.analyzed_at),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
