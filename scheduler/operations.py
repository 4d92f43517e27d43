"""Operator actions on a job: create, list failures, requeue, pause, resume, cancel, rerun.

Every action is a conditional state change in Postgres; the dispatcher and the workers honour
the new state on their next pass (a paused job's queued messages go back to pending when a
worker receives them). Each change is audited in the same transaction: who, what, why.

`workspace_id` scopes a call to one workspace (the HTTP API passes the caller's): a job or
session of another workspace is not found. The operator CLI passes None.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, CursorResult, text

from scheduler import audit, planner
from shared.db import Database
from shared.errors import InvalidInput, NotFound
from shared.settings import Settings


class JobStateConflict(InvalidInput):
    """The job is in a state that does not allow this action (HTTP 409, CLI exit 2)."""


def create_job(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    filters: object,
    *,
    actor: str,
    options: object = None,
    idempotency_key: str | None = None,
    reason: str | None = None,
    mode: str | None = None,
) -> planner.CreatedJob:
    """The planner's create with its audit event in the same transaction (an idempotent
    replay records nothing)."""
    def audited(tx: Connection, job_id: str) -> None:
        audit.record(tx, workspace_id=workspace_id, job_id=job_id, actor=actor,
                     action="create", reason=reason,
                     details={"kind": kind, "idempotency_key": idempotency_key})

    return planner.create_job(
        db, settings, workspace_id, kind, filters, options=options,
        idempotency_key=idempotency_key, created_by=actor, mode=mode, on_created=audited,
    )


_FAILED = text("""
    SELECT session_id, error_kind, error, attempts FROM backfill_items
     WHERE job_id = :job_id AND state = 'failed' ORDER BY session_id LIMIT :limit
""")


def failed_items(tx: Connection, job_id: str, limit: int = 1000,
                 workspace_id: str | None = None) -> list[dict[str, Any]]:
    _job(tx, job_id, workspace_id)
    rows = tx.execute(_FAILED, {"job_id": job_id, "limit": limit})
    return [dict(row._mapping) for row in rows]


_REQUEUABLE = """
     WHERE job_id = :job_id AND state = 'failed'
       AND (CAST(:kinds AS text[]) IS NULL OR error_kind = ANY(CAST(:kinds AS text[])))
       AND (CAST(:sessions AS text[]) IS NULL OR session_id = ANY(CAST(:sessions AS text[])))
"""
_REQUEUE = text("""
    UPDATE backfill_items
       SET state = 'pending', attempts = 0, error_kind = NULL, error = NULL,
           finished_at = NULL, not_before = NULL
""" + _REQUEUABLE)
_COUNT_REQUEUABLE = text("SELECT count(*) FROM backfill_items" + _REQUEUABLE)


def requeue(
    db: Database,
    job_id: str,
    *,
    actor: str,
    error_kinds: list[str] | None = None,
    session_ids: list[str] | None = None,
    dry_run: bool = False,
    reason: str | None = None,
    workspace_id: str | None = None,
) -> int:
    """Failed items back to pending (all of them, or those of the given kinds/sessions).

    A completed job goes back to running, so the dispatcher picks the items up. A dry run
    counts what would move and changes (and audits) nothing.
    """
    params = {"job_id": job_id, "kinds": error_kinds or None, "sessions": session_ids or None}
    with db.transaction() as tx:
        workspace, state = _job(tx, job_id, workspace_id, for_update=True)
        if state == "cancelled":
            raise JobStateConflict(f"job {job_id} is cancelled; create a new backfill instead")
        if dry_run:
            return int(tx.execute(_COUNT_REQUEUABLE, params).scalar_one())
        count = cast(CursorResult[Any], tx.execute(_REQUEUE, params)).rowcount
        if count and state == "completed":
            _set_state(tx, job_id, "running", reason or "requeued")
        audit.record(tx, workspace_id=workspace, job_id=job_id, actor=actor, action="requeue",
                     reason=reason, details={"error_kinds": error_kinds or [],
                                             "session_ids": session_ids or [],
                                             "requeued": count, "from_state": state})
        return count


def pause(db: Database, job_id: str, *, actor: str, reason: str | None = None,
          workspace_id: str | None = None) -> str:
    return _transition(db, job_id, {"running"}, "paused", actor=actor,
                       reason=reason, workspace_id=workspace_id)


def resume(db: Database, job_id: str, *, actor: str, reason: str | None = None,
           workspace_id: str | None = None) -> str:
    return _transition(db, job_id, {"paused"}, "running", actor=actor,
                       reason=reason, workspace_id=workspace_id)


_CANCEL_ITEMS = text("""
    UPDATE backfill_items SET state = 'cancelled', finished_at = clock_timestamp()
     WHERE job_id = :job_id AND state IN ('pending', 'queued')
""")


def cancel(db: Database, job_id: str, *, actor: str, reason: str | None = None,
           workspace_id: str | None = None) -> str:
    """Pending and queued items end as cancelled; running ones finish their current call."""
    with db.transaction() as tx:
        workspace, state = _job(tx, job_id, workspace_id, for_update=True)
        if state not in {"running", "paused"}:
            raise JobStateConflict(
                f"job {job_id} is {state}; only running or paused jobs cancel")
        cancelled = cast(CursorResult[Any], tx.execute(_CANCEL_ITEMS, {"job_id": job_id}))
        _set_state(tx, job_id, "cancelled", reason or "cancelled by an operator", finished=True)
        audit.record(tx, workspace_id=workspace, job_id=job_id, actor=actor, action="cancel",
                     reason=reason, details={"from_state": state,
                                             "items_cancelled": cancelled.rowcount})
    return "cancelled"


def rerun_session(
    db: Database,
    settings: Settings,
    session_id: str,
    *,
    actor: str,
    reason: str | None = None,
    workspace_id: str | None = None,
) -> str:
    """The product's single-session "rerun analysis": a one-item job with the latest draft."""
    with db.transaction() as tx:
        row = tx.execute(text("""
            SELECT workspace_id, kind FROM sessions
             WHERE session_id = :id
               AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
        """), {"id": session_id, "ws": workspace_id}).one_or_none()
    if row is None:
        raise NotFound(f"no session {session_id!r}")
    filters = [{"field": f"{row.kind}_id", "op": "eq", "value": session_id}]
    def audited(tx: Connection, job_id: str) -> None:
        audit.record(tx, workspace_id=row.workspace_id, job_id=job_id, actor=actor,
                     action="rerun", reason=reason, details={"session_id": session_id})

    return planner.create_job(db, settings, row.workspace_id, row.kind, filters,
                              created_by=actor, on_created=audited).job_id


def _transition(db: Database, job_id: str, allowed: set[str], target: str, *,
                actor: str, reason: str | None, workspace_id: str | None) -> str:
    action = {"paused": "pause", "running": "resume"}[target]
    with db.transaction() as tx:
        workspace, state = _job(tx, job_id, workspace_id, for_update=True)
        if state not in allowed:
            raise JobStateConflict(f"job {job_id} is {state}; cannot move it to {target}")
        default = "paused by an operator" if target == "paused" else None
        _set_state(tx, job_id, target, reason or default)
        audit.record(tx, workspace_id=workspace, job_id=job_id, actor=actor, action=action,
                     reason=reason, details={"from_state": state})
    return target


def _job(tx: Connection, job_id: str, workspace_id: str | None = None, *,
         for_update: bool = False) -> tuple[str, str]:
    """(workspace, state) of the job, locked when asked; NotFound outside `workspace_id`."""
    lock = " FOR UPDATE" if for_update else ""
    row = tx.execute(text(f"""
        SELECT workspace_id, state FROM backfill_jobs
         WHERE id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text)){lock}
    """), {"id": job_id, "ws": workspace_id}).one_or_none()
    if row is None:
        raise NotFound(f"no backfill job {job_id!r}")
    return str(row.workspace_id), str(row.state)


def _set_state(tx: Connection, job_id: str, state: str, reason: str | None,
               finished: bool = False) -> None:
    tx.execute(text("""
        UPDATE backfill_jobs
           SET state = :state, state_reason = :reason,
               finished_at = CASE WHEN :finished THEN clock_timestamp() END
         WHERE id = :id
    """), {"state": state, "reason": reason, "finished": finished, "id": job_id})
