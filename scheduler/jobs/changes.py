"""Operator actions of DESIGN "Safe to apply": promote a completed trial, revert a job.

Both are transitions of `shared.state` with an audit event, like every operation
(`scheduler.jobs.operations`); `workspace_id` scopes a call to one workspace (the HTTP API
passes the caller's), the CLI passes None.

- **Promote** creates an ordinary job over the trial's filters and options without the trial,
  through the planner (one transaction: the job, its items, `promoted_from`, the audit). The
  pipeline then reuses the trial's results where the configuration is unchanged. A trial is
  promoted once: promoting it again answers the job it was promoted to.
- **Revert** restores the befores of a job's runs in pages of `REVERT_PAGE` sessions, one
  short transaction each, so reverting a million sessions never holds a long transaction or
  locks sessions for more than one page. A session-level advisory lock keeps two reverts of
  one job from interleaving; before each page the job is read again, so a job resumed meanwhile
  stops the revert (what was reverted stays reverted; reverting again finishes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from scheduler.jobs import audit, planner
from scheduler.jobs.operations import JobStateConflict
from scheduler.jobs.options import parse_options
from shared.db import Database
from shared.errors import NotFound
from shared.settings import Settings
from shared.state import jobs, reverts, trials
from shared.vocabulary import BATCH

# Sessions per revert transaction: a page's row locks are held for a fraction of a second.
REVERT_PAGE = 1000
# States a job can be reverted in: nothing more of it will be dispatched.
REVERTIBLE_STATES = frozenset({"completed", "cancelled", "paused"})

_JOB = text("""
    SELECT workspace_id, kind, filters, options, state FROM backfill_jobs
     WHERE id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
""")
_IN_FLIGHT = text("""
    SELECT count(*) FROM backfill_items WHERE job_id = :id AND state = 'running'
""")
_STATE = text("SELECT state FROM backfill_jobs WHERE id = :id")
# One revert of a job at a time, across processes: the key is the job id's hash.
_TRY_REVERT_LOCK = text("SELECT pg_try_advisory_lock(hashtextextended('revert:' || :id, 0))")
_REVERT_UNLOCK = text("SELECT pg_advisory_unlock(hashtextextended('revert:' || :id, 0))")


@dataclass(frozen=True)
class _Job:
    job_id: str
    workspace_id: str
    kind: str
    filters: Any
    options: Mapping[str, Any]
    state: str


def _job(tx: Connection, job_id: str, workspace_id: str | None) -> _Job:
    row = tx.execute(_JOB, {"id": job_id, "ws": workspace_id}).one_or_none()
    if row is None:
        raise NotFound(f"no backfill job {job_id!r}")
    return _Job(job_id, row.workspace_id, row.kind, row.filters, row.options or {}, row.state)


# --------------------------------------------------------------------------- promote


class _PromotedMeanwhile(Exception):
    """Another promote of the same trial committed first (its transaction rolls back)."""


def _promotable(job: _Job) -> None:
    if not trials.is_trial(job.options):
        raise JobStateConflict(f"job {job.job_id} is not a trial; only a completed trial can "
                               "be promoted")
    if job.state != "completed":
        raise JobStateConflict(f"trial {job.job_id} is {job.state}; only a completed trial "
                               "can be promoted")


def promote(db: Database, settings: Settings, job_id: str, *, actor: str,
            reason: str | None = None, workspace_id: str | None = None) -> planner.CreatedJob:
    """A completed trial becomes an applied job over its filters and options. The trial's
    mode carries over when it was batch; otherwise the size of the new job decides, as for
    any job. `created` is False when the trial had been promoted already (that job)."""
    with db.transaction() as tx:
        trial = _job(tx, job_id, workspace_id)
        _promotable(trial)
        earlier = trials.promoted_to(tx, job_id)
    if earlier is not None:
        return planner.CreatedJob(earlier, created=False)
    selection = {key: value for key, value in trial.options.items() if key != "mode"}
    options = parse_options(selection).without_trial()

    def promoted(tx: Connection, new_job_id: str) -> None:
        jobs.lock(tx, job_id)  # concurrent promotes of one trial take turns here
        if trials.promoted_to(tx, job_id) is not None:
            raise _PromotedMeanwhile
        trials.mark_promoted(tx, new_job_id, job_id)
        audit.record(tx, workspace_id=trial.workspace_id, job_id=new_job_id, actor=actor,
                     action="promote", reason=reason, details={"promoted_from": job_id})
        audit.record(tx, workspace_id=trial.workspace_id, job_id=job_id, actor=actor,
                     action="promote", reason=reason, details={"promoted_to": new_job_id})

    try:
        return planner.create_job(
            db, settings, trial.workspace_id, trial.kind, trial.filters,
            options=options.as_json(), created_by=actor,
            mode=BATCH if trial.options.get("mode") == BATCH else None, on_created=promoted)
    except _PromotedMeanwhile:
        with db.transaction() as tx:
            winner = trials.promoted_to(tx, job_id)
        assert winner is not None  # it committed before we saw it
        return planner.CreatedJob(winner, created=False)


# --------------------------------------------------------------------------- revert


@dataclass(frozen=True)
class Reverted:
    reverted: int
    left_newer: int
    dry_run: bool

    def as_json(self) -> dict[str, Any]:
        return {"reverted": self.reverted, "left_newer": self.left_newer,
                "dry_run": self.dry_run}


def _revertible(tx: Connection, job_id: str, state: str) -> None:
    if state not in REVERTIBLE_STATES:
        raise JobStateConflict(f"job {job_id} is {state}; pause or cancel it before reverting "
                               "(only a completed, cancelled or paused job can be reverted)")
    # A paused or cancelled job's calls in flight still write their results: a revert now
    # would miss them.
    in_flight = int(tx.execute(_IN_FLIGHT, {"id": job_id}).scalar_one())
    if in_flight:
        sessions = "1 session" if in_flight == 1 else f"{in_flight} sessions"
        raise JobStateConflict(f"job {job_id} still has {sessions} being analysed; revert it "
                               "once they have finished")


def revert(db: Database, job_id: str, *, actor: str, dry_run: bool = False,
           reason: str | None = None, workspace_id: str | None = None,
           page_size: int = REVERT_PAGE) -> Reverted:
    """Every session whose current analysis the job wrote gets its before back; a dry run
    counts and changes (and audits) nothing."""
    with db.transaction() as tx:
        job = _job(tx, job_id, workspace_id)
        _revertible(tx, job_id, job.state)
        if dry_run:
            counts = reverts.count_revertible(tx, job_id)
            return Reverted(counts.reverted, counts.left_newer, dry_run=True)
    with db.engine.connect() as connection:
        if not connection.execute(_TRY_REVERT_LOCK, {"id": job_id}).scalar_one():
            connection.rollback()
            raise JobStateConflict(f"job {job_id} is being reverted already")
        connection.commit()
        try:
            return _revert_pages(connection, job, actor, reason, page_size)
        finally:
            connection.execute(_REVERT_UNLOCK, {"id": job_id})
            connection.commit()


def _revert_pages(connection: Connection, job: _Job, actor: str, reason: str | None,
                  page_size: int) -> Reverted:
    done = Reverted(0, 0, dry_run=False)
    after = ""
    while True:
        try:
            with connection.begin():
                state = connection.execute(_STATE, {"id": job.job_id}).scalar_one()
                _revertible(connection, job.job_id, state)
                page = reverts.revert_page(connection, job.job_id, after, page_size)
                done = Reverted(done.reverted + page.reverted,
                                done.left_newer + page.left_newer, dry_run=False)
                if page.last_session_id is None:
                    # The audit commits with the last page: the trail says the revert ran
                    # to the end.
                    _audit_revert(connection, job, actor, reason, done, state)
                    return done
        except JobStateConflict as exc:
            # The job moved on mid-way: the pages done stay reverted, and the trail says so.
            with connection.begin():
                _audit_revert(connection, job, actor, reason, done, job.state,
                              interrupted=str(exc))
            raise
        after = page.last_session_id


def _audit_revert(tx: Connection, job: _Job, actor: str, reason: str | None, done: Reverted,
                  from_state: str, interrupted: str | None = None) -> None:
    details: dict[str, Any] = {"reverted": done.reverted, "left_newer": done.left_newer,
                               "from_state": from_state}
    if interrupted is not None:
        details["interrupted"] = interrupted
    audit.record(tx, workspace_id=job.workspace_id, job_id=job.job_id, actor=actor,
                 action="revert", reason=reason, details=details)
