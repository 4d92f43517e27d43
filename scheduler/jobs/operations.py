"""Operator actions on a job: create, list failures, requeue, pause, resume, cancel, rerun.

Every action is a transition of `shared.state` in one transaction with its audit event (who,
what, why); the dispatcher and the workers honour the new state on their next pass (a paused
job's queued messages go back to pending when a worker receives them).

`workspace_id` scopes a call to one workspace (the HTTP API passes the caller's): a job or
session of another workspace is not found. The operator CLI passes None.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from scheduler.jobs import audit, estimates, planner
from scheduler.jobs.options import parse_max_cost_usd, parse_options
from shared.db import Database
from shared.errors import InvalidInput, NotFound
from shared.settings import Settings
from shared.state import budget, items, jobs
from shared.state.budget import SessionEstimate


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
    replay records nothing). A job with `options.max_cost_usd` gets its cap and the
    per-session estimate its reservations hold; a cap below the estimated cost of one
    session is refused before anything is created."""
    cap = parse_options(options).max_cost_usd
    session = None
    if cap is not None:
        estimate = estimates.job_estimate(db, settings, workspace_id, kind, filters,
                                          options=options, mode=mode)
        _require_one_session(cap, Decimal(str(estimate.mean_session_usd)),
                             "options.max_cost_usd")
        session = estimate.session

    def audited(tx: Connection, job_id: str) -> None:
        audit.record(tx, workspace_id=workspace_id, job_id=job_id, actor=actor,
                     action="create", reason=reason,
                     details={"kind": kind, "idempotency_key": idempotency_key,
                              "max_cost_usd": cap})
        if cap is not None:
            budget.set_cap(tx, job_id, Decimal(str(cap)), session)

    return planner.create_job(
        db, settings, workspace_id, kind, filters, options=options,
        idempotency_key=idempotency_key, created_by=actor, mode=mode, on_created=audited,
    )


_FAILED = text("""
    SELECT session_id, error_kind, error, attempts FROM backfill_items
     WHERE job_id = :job_id AND state = 'failed' ORDER BY session_id LIMIT :limit
""")
_JOB_IN_WORKSPACE = text("""
    SELECT 1 FROM backfill_jobs
     WHERE id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
""")


def failed_items(tx: Connection, job_id: str, limit: int = 1000,
                 workspace_id: str | None = None) -> list[dict[str, Any]]:
    if tx.execute(_JOB_IN_WORKSPACE, {"id": job_id, "ws": workspace_id}).first() is None:
        raise NotFound(f"no backfill job {job_id!r}")
    rows = tx.execute(_FAILED, {"job_id": job_id, "limit": limit})
    return [dict(row._mapping) for row in rows]


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
    with db.transaction() as tx:
        job = jobs.lock(tx, job_id, workspace_id)
        if job.state == "cancelled":
            raise JobStateConflict(f"job {job_id} is cancelled; create a new backfill instead")
        if dry_run:
            return items.count_failed(tx, job_id, error_kinds, session_ids)
        count = items.requeue_failed(tx, job_id, error_kinds, session_ids)
        if count and job.state == "completed":
            jobs.reopen(tx, job, reason or "requeued")
        audit.record(tx, workspace_id=job.workspace_id, job_id=job_id, actor=actor,
                     action="requeue", reason=reason,
                     details={"error_kinds": error_kinds or [], "session_ids": session_ids or [],
                              "requeued": count, "from_state": job.state})
        return count


def pause(db: Database, job_id: str, *, actor: str, reason: str | None = None,
          workspace_id: str | None = None) -> str:
    """Stop dispatching (calls in flight finish). Only a running job pauses."""
    with db.transaction() as tx:
        job = _locked_in(tx, job_id, workspace_id, allowed={"running"}, target="paused")
        jobs.pause(tx, job, reason or "paused by an operator")
        _audit_transition(tx, job, actor, "pause", reason)
    return "paused"


_STATE_AND_OPTIONS = text("""
    SELECT state, options FROM backfill_jobs
     WHERE id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
""")


def resume(db: Database, job_id: str, *, actor: str, reason: str | None = None,
           workspace_id: str | None = None, settings: Settings | None = None,
           max_cost_usd: object = None) -> str:
    """Dispatch a paused job again; `max_cost_usd` gives it a new cap (a job paused at its
    cap resumes only with one that leaves room for another session)."""
    cap = None if max_cost_usd is None else Decimal(str(parse_max_cost_usd(
        max_cost_usd, "max_cost_usd")))
    session = _estimate_for_new_cap(db, settings, job_id, workspace_id, cap)
    with db.transaction() as tx:
        job = _locked_in(tx, job_id, workspace_id, allowed={"paused"}, target="running")
        spend = budget.spend_of(tx, [job_id])[job_id]
        if cap is None and spend.pause_reason == budget.BUDGET_EXHAUSTED:
            raise JobStateConflict(
                f"job {job_id} is paused at its cap (${spend.spent_usd:,.4f} spent of "
                f"${spend.max_cost_usd or 0:,.4f}); resume it with a higher max_cost_usd")
        if cap is not None:
            one = (spend.estimate or session or SessionEstimate(Decimal(0), Decimal(0))).base_usd
            _require_one_session(cap, spend.spent_usd + spend.reserved_usd + one, "max_cost_usd",
                                 spent=spend.spent_usd)
            budget.set_cap(tx, job_id, cap, None if spend.estimate else session)
        jobs.resume(tx, job, reason)
        budget.clear_pause_reason(tx, job_id)
        audit.record(tx, workspace_id=job.workspace_id, job_id=job_id, actor=actor,
                     action="resume", reason=reason, details={
                         "from_state": job.state, "pause_reason": spend.pause_reason,
                         "max_cost_usd": None if cap is None else float(cap),
                         "previous_max_cost_usd": _float(spend.max_cost_usd)})
    return "running"


def _estimate_for_new_cap(db: Database, settings: Settings | None, job_id: str,
                          workspace_id: str | None, cap: Decimal | None
                          ) -> SessionEstimate | None:
    """A job that had no cap has no per-session estimate yet: it is made from the job's
    sessions still to analyse (outside any transaction: it asks the provider)."""
    if cap is None:
        return None
    with db.transaction() as tx:
        job = tx.execute(_STATE_AND_OPTIONS, {"id": job_id, "ws": workspace_id}).one_or_none()
        spend = budget.spend_of(tx, [job_id]).get(job_id)
    if job is None or spend is None:
        raise NotFound(f"no backfill job {job_id!r}")
    if spend.estimate is not None or settings is None or job.state != "paused":
        return None
    return estimates.open_items_estimate(db, settings, job_id, jobs.mode_of(job.options)).session


def _require_one_session(cap: float | Decimal, needed: Decimal, name: str, *,
                         spent: Decimal | None = None) -> None:
    """A cap must leave room for at least one session's estimated cost."""
    if Decimal(str(cap)) >= needed:
        return
    if spent is None:
        raise InvalidInput(f"{name}: {_usd(cap)} is below the estimated cost of one session "
                           f"({_usd(needed)})")
    raise InvalidInput(f"{name}: {_usd(cap)} leaves no room for another session: the job has "
                       f"spent {_usd(spent)} and needs about {_usd(needed - spent)} more for "
                       f"the next one")


def _usd(amount: float | Decimal) -> str:
    """Six significant digits: a cap of a fraction of a cent still reads as what it is."""
    return f"${float(amount):,.6g}"


def _float(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def cancel(db: Database, job_id: str, *, actor: str, reason: str | None = None,
           workspace_id: str | None = None) -> str:
    """Pending and queued items end as cancelled; running ones finish their current call."""
    with db.transaction() as tx:
        job = jobs.lock(tx, job_id, workspace_id)
        if job.state not in {"running", "paused"}:
            raise JobStateConflict(
                f"job {job_id} is {job.state}; only running or paused jobs cancel")
        cancelled = items.cancel_open(tx, job_id)
        jobs.cancel(tx, job, reason or "cancelled by an operator")
        audit.record(tx, workspace_id=job.workspace_id, job_id=job_id, actor=actor,
                     action="cancel", reason=reason,
                     details={"from_state": job.state, "items_cancelled": cancelled})
    return "cancelled"


_SESSION = text("""
    SELECT workspace_id, kind FROM sessions
     WHERE session_id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
""")


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
        row = tx.execute(_SESSION, {"id": session_id, "ws": workspace_id}).one_or_none()
    if row is None:
        raise NotFound(f"no session {session_id!r}")
    filters = [{"field": f"{row.kind}_id", "op": "eq", "value": session_id}]

    def audited(tx: Connection, job_id: str) -> None:
        audit.record(tx, workspace_id=row.workspace_id, job_id=job_id, actor=actor,
                     action="rerun", reason=reason, details={"session_id": session_id})

    return planner.create_job(db, settings, row.workspace_id, row.kind, filters,
                              created_by=actor, on_created=audited).job_id


def _locked_in(tx: Connection, job_id: str, workspace_id: str | None, *, allowed: set[str],
               target: str) -> jobs.LockedJob:
    job = jobs.lock(tx, job_id, workspace_id)
    if job.state not in allowed:
        raise JobStateConflict(f"job {job_id} is {job.state}; cannot move it to {target}")
    return job


def _audit_transition(tx: Connection, job: jobs.LockedJob, actor: str, action: str,
                      reason: str | None) -> None:
    audit.record(tx, workspace_id=job.workspace_id, job_id=job.job_id, actor=actor,
                 action=action, reason=reason, details={"from_state": job.state})
