"""The `/v1` endpoints of DESIGN "Safe to apply": a job's change report, promote, revert.

Same rules as `routes`: the workspace comes from the caller's key and every lookup filters by
it, so another workspace's job is a 404; a job whose state does not allow the action is a 409.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from scheduler.http.routes import (
    COMMON_ERRORS,
    CONFLICT,
    NOT_FOUND,
    Caller,
    Conf,
    Db,
    JobId,
    job_document,
    known_id,
)
from scheduler.http.schemas import ChangeReport, Job, ReasonRequest, Reverted, RevertRequest
from scheduler.jobs import changes
from scheduler.jobs.report import change_report

v1 = APIRouter(prefix="/v1", responses=COMMON_ERRORS, tags=["changes"])


@v1.get("/backfills/{job_id}/report", response_model=ChangeReport,
        response_model_exclude_unset=True, responses=NOT_FOUND)
def get_report(job_id: JobId, caller: Caller, db: Db) -> dict[str, Any]:
    """What the job's runs changed (a trial: what applying it would change), field by field:
    counts, before/after matrices of boolean and enum fields, means, examples."""
    with db.transaction() as tx:
        return change_report(tx, known_id(job_id), caller.workspace_id)


@v1.post("/backfills/{job_id}/promote", status_code=201, response_model=Job,
         response_model_exclude_unset=True,
         responses=NOT_FOUND | CONFLICT | {200: {
             "model": Job, "description": "The trial was promoted already: that job."}})
def promote_trial(job_id: JobId, caller: Caller, db: Db, settings: Conf, response: Response,
                  body: ReasonRequest | None = None) -> dict[str, Any]:
    """A completed trial becomes an applied job over its filters and options; the trial's
    results are reused where the configuration is unchanged (no second LLM call)."""
    promoted = changes.promote(db, settings, known_id(job_id), actor=caller.actor,
                               reason=body.reason if body else None,
                               workspace_id=caller.workspace_id)
    if not promoted.created:
        response.status_code = 200
    return job_document(db, settings, promoted.job_id, caller)


@v1.post("/backfills/{job_id}/revert", response_model=Reverted,
         responses=NOT_FOUND | CONFLICT)
def revert_backfill(job_id: JobId, caller: Caller, db: Db,
                    body: RevertRequest | None = None) -> dict[str, Any]:
    """Every session whose current analysis the job wrote gets its analysis from before the
    job back; sessions a later job or rerun wrote are left alone (`left_newer`). Only a
    completed, cancelled or paused job."""
    request = body or RevertRequest()
    done = changes.revert(db, known_id(job_id), actor=caller.actor, dry_run=request.dry_run,
                          reason=request.reason, workspace_id=caller.workspace_id)
    return done.as_json()
