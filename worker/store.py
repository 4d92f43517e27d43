"""The worker's SQL: claim an item, load what the analysis needs, write the outcome.

Every state change is conditional on the state we expect, so a second delivery of the same
message, or a run whose lease was taken over, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from shared.analysis import AgentVersionInfo


@dataclass(frozen=True)
class Claim:
    job_id: str
    session_id: str
    attempt: int
    started_at: datetime


@dataclass(frozen=True)
class SessionData:
    session_id: str
    kind: str
    workspace_id: str
    agent_id: str
    status: str | None
    transcript: list[dict[str, Any]]
    agent_transfers: list[dict[str, Any]]


_CLAIM = text("""
    UPDATE backfill_items AS i
       SET state = 'running', attempts = i.attempts + 1, started_at = clock_timestamp(),
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM backfill_jobs AS j
     WHERE i.job_id = :job_id AND i.session_id = :session_id AND i.state = 'queued'
       AND j.id = i.job_id AND j.state = 'running'
 RETURNING i.attempts, i.started_at
""")


def claim_item(db: Session, job_id: str, session_id: str, lease_s: float) -> Claim | None:
    row = db.execute(
        _CLAIM, {"job_id": job_id, "session_id": session_id, "lease_s": lease_s}
    ).one_or_none()
    if row is None:
        return None
    return Claim(job_id, session_id, attempt=row.attempts, started_at=row.started_at)


_RENEW_LEASES = text("""
    UPDATE backfill_items AS i
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM unnest(CAST(:job_ids AS text[]), CAST(:session_ids AS text[]),
                  CAST(:attempts AS integer[])) AS c(job_id, session_id, attempt)
     WHERE i.job_id = c.job_id AND i.session_id = c.session_id
       AND i.state = 'running' AND i.attempts = c.attempt
""")


def renew_leases(db: Session, claims: list[Claim], lease_s: float) -> int:
    """Extend the leases of claims still ours (fenced on the attempt, like every write)."""
    if not claims:
        return 0
    result = cast(CursorResult[Any], db.execute(_RENEW_LEASES, {
        "lease_s": lease_s, "job_ids": [c.job_id for c in claims],
        "session_ids": [c.session_id for c in claims], "attempts": [c.attempt for c in claims],
    }))
    return result.rowcount


_RELEASE_UNCLAIMABLE = text("""
    UPDATE backfill_items AS i
       SET state = CASE j.state WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END,
           finished_at = CASE j.state WHEN 'cancelled' THEN clock_timestamp() END
      FROM backfill_jobs AS j
     WHERE i.job_id = :job_id AND i.session_id = :session_id AND i.state = 'queued'
       AND j.id = i.job_id AND j.state IN ('paused', 'cancelled')
""")


def release_unclaimable(db: Session, job_id: str, session_id: str) -> None:
    """A message for a paused job goes back to pending (resume re-sends it); cancelled ends."""
    db.execute(_RELEASE_UNCLAIMABLE, {"job_id": job_id, "session_id": session_id})


_LOAD_SESSION = text("""
    SELECT session_id, kind, workspace_id, agent_id, status, transcript, agent_transfers
      FROM sessions AS s
     WHERE s.session_id = :session_id
       AND s.workspace_id = (SELECT workspace_id FROM backfill_jobs WHERE id = :job_id)
""")


def load_session(db: Session, job_id: str, session_id: str) -> SessionData | None:
    row = db.execute(_LOAD_SESSION, {"session_id": session_id, "job_id": job_id}).one_or_none()
    if row is None:
        return None
    return SessionData(
        session_id=row.session_id, kind=row.kind, workspace_id=row.workspace_id,
        agent_id=row.agent_id, status=row.status, transcript=list(row.transcript or []),
        agent_transfers=list(row.agent_transfers or []),
    )


_LOAD_VERSIONS = text("""
    SELECT agent_id, version, is_published, kind, analysis_model, analysis_data
      FROM agent_versions
     WHERE workspace_id = :workspace_id AND agent_id = ANY(:agent_ids)
""")


def load_agent_versions(
    db: Session, workspace_id: str, agent_ids: list[str]
) -> dict[str, list[AgentVersionInfo]]:
    """Read at run time, so a rerun always sees the draft as it is now."""
    versions: dict[str, list[AgentVersionInfo]] = {}
    rows = db.execute(_LOAD_VERSIONS, {"workspace_id": workspace_id, "agent_ids": agent_ids})
    for row in rows:
        versions.setdefault(row.agent_id, []).append(
            AgentVersionInfo(
                agent_id=row.agent_id, version=row.version, is_published=row.is_published,
                kind=row.kind, model=row.analysis_model, fields=list(row.analysis_data or []),
            )
        )
    return versions


_FINISH = text("""
    UPDATE backfill_items
       SET state = :state, error_kind = :error_kind, error = :error,
           finished_at = clock_timestamp(), lease_expires_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
 RETURNING 1
""")


def finish_item(
    db: Session, claim: Claim, state: str, error_kind: str | None = None, error: str | None = None
) -> bool:
    """False when our claim was superseded (lease expired and the item was sent again)."""
    params = {
        "state": state, "error_kind": error_kind, "error": _clip(error),
        "job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt,
    }
    return db.execute(_FINISH, params).one_or_none() is not None


_RETRY_LATER = text("""
    UPDATE backfill_items
       SET state = 'pending', error_kind = :error_kind, error = :error,
           not_before = clock_timestamp() + make_interval(secs => :delay_s),
           lease_expires_at = NULL, queued_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
""")


def retry_later(db: Session, claim: Claim, error_kind: str, error: str, delay_s: float) -> None:
    db.execute(_RETRY_LATER, {
        "error_kind": error_kind, "error": _clip(error), "delay_s": delay_s,
        "job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt,
    })


_PAUSE_JOB = text("""
    UPDATE backfill_jobs SET state = 'paused', state_reason = :reason
     WHERE id = :job_id AND state = 'running'
""")

_UNCOUNT_ATTEMPT = text("""
    UPDATE backfill_items
       SET state = 'pending', attempts = attempts - 1, error_kind = :error_kind, error = :error,
           lease_expires_at = NULL, queued_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
""")


def pause_job_for(db: Session, claim: Claim, error_kind: str, error: str) -> None:
    """Job-fatal errors pause the whole job; this item is not charged an attempt."""
    reason = f"{error_kind}: {_clip(error)}"
    db.execute(_PAUSE_JOB, {"job_id": claim.job_id, "reason": reason})
    db.execute(_UNCOUNT_ATTEMPT, {
        "error_kind": error_kind, "error": _clip(error),
        "job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt,
    })


_INSERT_RUN = text("""
    INSERT INTO analysis_runs (
        session_id, job_id, workspace_id, agent_id, agent_version, used_draft, model,
        requested_model, config_hash, result, input_tokens, output_tokens, cache_read_tokens,
        cache_write_tokens, latency_ms, started_at)
    VALUES (
        :session_id, :job_id, :workspace_id, :agent_id, :agent_version, :used_draft, :model,
        :requested_model, :config_hash, CAST(:result AS jsonb), :input_tokens, :output_tokens,
        :cache_read_tokens, :cache_write_tokens, :latency_ms, :started_at)
    ON CONFLICT (job_id, session_id) WHERE job_id IS NOT NULL DO NOTHING
    RETURNING id
""")

_UPDATE_SESSION_ANALYSIS = text("""
    UPDATE sessions
       SET summary = :summary, successful = :successful, user_sentiment = :user_sentiment,
           custom_analysis_data = CAST(:custom AS jsonb),
           analysis_run_id = :run_id, analysis_started_at = :started_at
     WHERE session_id = :session_id
       AND (analysis_started_at IS NULL OR analysis_started_at <= :started_at)
""")


def insert_run(db: Session, params: dict[str, Any]) -> int | None:
    """None when this (job, session) already has its successful run."""
    row = db.execute(_INSERT_RUN, params).one_or_none()
    return None if row is None else int(row.id)


def update_session_analysis(db: Session, params: dict[str, Any]) -> None:
    """A run that started earlier than the current analysis's run never overwrites it."""
    db.execute(_UPDATE_SESSION_ANALYSIS, params)


def _clip(message: str | None, limit: int = 2000) -> str | None:
    return None if message is None else message[:limit]
