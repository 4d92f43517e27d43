"""Operator actions on a job: list failures, requeue, pause, resume, cancel, rerun one session.

Every action is a conditional state change in Postgres; the dispatcher and the workers honour
the new state on their next pass (a paused job's queued messages go back to pending when a
worker receives them).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from scheduler import planner
from shared.db import Database
from shared.errors import InvalidInput, NotFound
from shared.settings import Settings


def failed_items(tx: Session, job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    _job_state(tx, job_id)
    rows = tx.execute(text("""
        SELECT session_id, error_kind, error, attempts FROM backfill_items
         WHERE job_id = :job_id AND state = 'failed' ORDER BY session_id LIMIT :limit
    """), {"job_id": job_id, "limit": limit})
    return [dict(row._mapping) for row in rows]


_REQUEUE = text("""
    UPDATE backfill_items
       SET state = 'pending', attempts = 0, error_kind = NULL, error = NULL,
           finished_at = NULL, not_before = NULL
     WHERE job_id = :job_id AND state = 'failed'
       AND (CAST(:kinds AS text[]) IS NULL OR error_kind = ANY(CAST(:kinds AS text[])))
       AND (CAST(:sessions AS text[]) IS NULL OR session_id = ANY(CAST(:sessions AS text[])))
""")

_COUNT_REQUEUABLE = text("""
    SELECT count(*) FROM backfill_items
     WHERE job_id = :job_id AND state = 'failed'
       AND (CAST(:kinds AS text[]) IS NULL OR error_kind = ANY(CAST(:kinds AS text[])))
       AND (CAST(:sessions AS text[]) IS NULL OR session_id = ANY(CAST(:sessions AS text[])))
""")


def requeue(
    db: Database,
    job_id: str,
    *,
    error_kinds: list[str] | None = None,
    session_ids: list[str] | None = None,
    dry_run: bool = False,
    reason: str | None = None,
) -> int:
    """Failed items back to pending (all of them, or those of the given kinds/sessions)."""
    params = {"job_id": job_id, "kinds": error_kinds or None, "sessions": session_ids or None}
    with db.transaction() as tx:
        state = _job_state(tx, job_id, for_update=True)
        if state == "cancelled":
            raise InvalidInput(f"job {job_id} is cancelled; create a new backfill instead")
        if dry_run:
            return int(tx.execute(_COUNT_REQUEUABLE, params).scalar_one())
        count = cast(CursorResult[Any], tx.execute(_REQUEUE, params)).rowcount
        if count and state == "completed":
            _set_state(tx, job_id, "running", reason or "requeued")
        return count


def pause(db: Database, job_id: str, reason: str | None = None) -> str:
    return _transition(db, job_id, {"running"}, "paused", reason or "paused by an operator")


def resume(db: Database, job_id: str, reason: str | None = None) -> str:
    return _transition(db, job_id, {"paused"}, "running", reason)


def cancel(db: Database, job_id: str, reason: str | None = None) -> str:
    """Pending and queued items end as cancelled; running ones finish their current call."""
    with db.transaction() as tx:
        state = _job_state(tx, job_id, for_update=True)
        if state not in {"running", "paused"}:
            raise InvalidInput(f"job {job_id} is {state}; only running or paused jobs cancel")
        tx.execute(text("""
            UPDATE backfill_items SET state = 'cancelled', finished_at = clock_timestamp()
             WHERE job_id = :job_id AND state IN ('pending', 'queued')
        """), {"job_id": job_id})
        _set_state(tx, job_id, "cancelled", reason or "cancelled by an operator", finished=True)
    return "cancelled"


def rerun_session(db: Database, settings: Settings, session_id: str, created_by: str) -> str:
    """The product's single-session "rerun analysis": a one-item job with the latest draft."""
    with db.transaction() as tx:
        row = tx.execute(text("SELECT workspace_id, kind FROM sessions WHERE session_id = :id"),
                         {"id": session_id}).one_or_none()
    if row is None:
        raise NotFound(f"no session {session_id!r}")
    filters = [{"field": f"{row.kind}_id", "op": "eq", "value": session_id}]
    return planner.create_job(
        db, settings, row.workspace_id, row.kind, filters, created_by=created_by
    ).job_id


def _transition(db: Database, job_id: str, allowed: set[str], target: str,
                reason: str | None) -> str:
    with db.transaction() as tx:
        state = _job_state(tx, job_id, for_update=True)
        if state not in allowed:
            raise InvalidInput(f"job {job_id} is {state}; cannot move it to {target}")
        _set_state(tx, job_id, target, reason)
    return target


def _job_state(tx: Session, job_id: str, *, for_update: bool = False) -> str:
    lock = " FOR UPDATE" if for_update else ""
    state = tx.execute(text(f"SELECT state FROM backfill_jobs WHERE id = :id{lock}"),
                       {"id": job_id}).scalar_one_or_none()
    if state is None:
        raise NotFound(f"no backfill job {job_id!r}")
    return str(state)


def _set_state(tx: Session, job_id: str, state: str, reason: str | None,
               finished: bool = False) -> None:
    tx.execute(text("""
        UPDATE backfill_jobs
           SET state = :state, state_reason = :reason,
               finished_at = CASE WHEN :finished THEN clock_timestamp() END
         WHERE id = :id
    """), {"state": state, "reason": reason, "finished": finished, "id": job_id})
