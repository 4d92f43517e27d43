"""The `/v1` endpoints: backfills (preview, create, list, show, operations, items) and sessions.

Shapes are those of DESIGN.md ("HTTP shapes", job and session JSON). Endpoints are plain `def`
functions over sync SQLAlchemy; FastAPI runs them in its thread pool.

Tenancy: the workspace comes from the caller's API key (see `guard`), never from a body, and
every lookup filters by it in SQL, so another workspace's job or session is a 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, StringConstraints

from scheduler.http.guard import PRINCIPAL
from scheduler.http.schemas import (
    CreateRequest,
    ErrorBody,
    ItemPage,
    ItemState,
    Job,
    JobPage,
    Preview,
    PreviewRequest,
    ReasonRequest,
    Requeued,
    RequeueRequest,
    Rerun,
    RerunRequest,
    ResumeRequest,
    SessionAnalysis,
    storable,
)
from scheduler.jobs import documents, estimates, operations
from scheduler.jobs.keys import Principal
from shared.db import Database
from shared.errors import NotFound
from shared.settings import Settings

MAX_ID_LENGTH = 128
RERUN_POLL_S = 0.2

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="A workspace API key (`backfill api-key create --workspace W`).")


def error_response_spec(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_response_spec("The body is not JSON."),
    401: error_response_spec("Missing, unknown or revoked API key."),
    413: error_response_spec("The body is larger than 1 MiB."),
    422: error_response_spec("Invalid input; filter errors name `filters[i]`."),
    503: error_response_spec("The database is unavailable."),
}
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: error_response_spec("No such job or session in the key's workspace.")}
CONFLICT: Responses = {409: error_response_spec("The job's state does not allow this action.")}


# ------------------------------------------------------------------------------ dependencies


def _principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    principal = request.scope.get("state", {}).get(PRINCIPAL)
    if not isinstance(principal, Principal):
        # The guard authenticates every /v1 request before routing; this is the backstop.
        raise HTTPException(401, "a valid API key is required",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Caller = Annotated[Principal, Depends(_principal)]
Db = Annotated[Database, Depends(_database)]
Conf = Annotated[Settings, Depends(_settings)]
JobId = Annotated[str, PathParam(description="A job id (`bf_…`).")]
SessionId = Annotated[str, PathParam(description="A call_id or chat_id.")]
Cursor = Annotated[str | None, Query(max_length=2000, description="`next_cursor` of the "
                                                                   "previous page.")]
Limit = Annotated[int, Query(ge=1, le=documents.MAX_PAGE)]
KeyText = Annotated[str, StringConstraints(min_length=1, max_length=200),
                    AfterValidator(storable)]
IdempotencyKey = Annotated[
    KeyText | None,
    Header(alias="Idempotency-Key", description="Reuse answers 200 with the same job."),
]


def known_id(identifier: str) -> str:
    """An id that no row can have (NUL, or longer than any id column) is simply not found,
    rather than an error from the database."""
    try:
        storable(identifier)
    except ValueError:
        raise NotFound("no such object") from None
    if len(identifier) > MAX_ID_LENGTH:
        raise NotFound(f"no object {identifier[:MAX_ID_LENGTH]!r}…")
    return identifier


# ------------------------------------------------------------------------------ backfills

v1 = APIRouter(prefix="/v1", responses=COMMON_ERRORS)


@v1.post("/backfills/preview", response_model=Preview, tags=["backfills"])
def preview_backfill(body: PreviewRequest, caller: Caller, db: Db, settings: Conf
                     ) -> dict[str, Any]:
    """How many sessions a backfill with these filters and options would take now, and the
    estimated tokens and USD of analysing them."""
    return estimates.preview_estimate(db, settings, caller.workspace_id, body.kind, body.filters,
                                    options=body.options)


@v1.post("/backfills", status_code=201, response_model=Job, response_model_exclude_unset=True,
         responses={200: {"model": Job,
                          "description": "The job created earlier with this Idempotency-Key."}},
         tags=["backfills"])
def create_backfill(body: CreateRequest, caller: Caller, db: Db, settings: Conf,
                    response: Response, idempotency_key: IdempotencyKey = None
                    ) -> dict[str, Any]:
    """Create a backfill job in the key's workspace; the scheduler dispatches it."""
    created = operations.create_job(
        db, settings, caller.workspace_id, body.kind, body.filters, actor=caller.actor,
        options=body.options, idempotency_key=idempotency_key, reason=body.reason,
    )
    if not created.created:
        response.status_code = 200
    return job_document(db, settings, created.job_id, caller)


@v1.get("/backfills", response_model=JobPage, tags=["backfills"])
def list_backfills(caller: Caller, db: Db, settings: Conf, cursor: Cursor = None,
                   limit: Limit = documents.DEFAULT_PAGE) -> dict[str, Any]:
    """The workspace's jobs, newest first."""
    with db.transaction() as tx:
        return documents.jobs_page(tx, settings, caller.workspace_id, cursor=cursor,
                                   limit=limit).as_json()


@v1.get("/backfills/{job_id}", response_model=Job, responses=NOT_FOUND, tags=["backfills"])
def get_backfill(job_id: JobId, caller: Caller, db: Db, settings: Conf) -> dict[str, Any]:
    """One job: state, counts by item state, error kinds, audit trail."""
    return job_document(db, settings, known_id(job_id), caller)


@v1.post("/backfills/{job_id}/pause", response_model=Job, responses=NOT_FOUND | CONFLICT,
         tags=["operations"])
def pause_backfill(job_id: JobId, caller: Caller, db: Db, settings: Conf,
                   body: ReasonRequest | None = None) -> dict[str, Any]:
    """Stop dispatching (calls in flight finish). Only a running job pauses."""
    return _operate(operations.pause, db, settings, job_id, caller, body)


@v1.post("/backfills/{job_id}/resume", response_model=Job, responses=NOT_FOUND | CONFLICT,
         tags=["operations"])
def resume_backfill(job_id: JobId, caller: Caller, db: Db, settings: Conf,
                    body: ResumeRequest | None = None) -> dict[str, Any]:
    """Dispatch a paused job again; `max_cost_usd` gives it a new budget cap (a job paused at
    its cap resumes only with one)."""
    request = body or ResumeRequest()
    operations.resume(db, known_id(job_id), actor=caller.actor, reason=request.reason,
                      workspace_id=caller.workspace_id, settings=settings,
                      max_cost_usd=request.max_cost_usd)
    return job_document(db, settings, job_id, caller)


@v1.post("/backfills/{job_id}/cancel", response_model=Job, responses=NOT_FOUND | CONFLICT,
         tags=["operations"])
def cancel_backfill(job_id: JobId, caller: Caller, db: Db, settings: Conf,
                    body: ReasonRequest | None = None) -> dict[str, Any]:
    """Pending and queued items end as cancelled; running ones finish their call."""
    return _operate(operations.cancel, db, settings, job_id, caller, body)


def _operate(action: Callable[..., str], db: Database, settings: Settings, job_id: str,
             caller: Principal, body: ReasonRequest | None) -> dict[str, Any]:
    """Pause, resume and cancel share one shape: act for the caller, answer the job."""
    action(db, known_id(job_id), actor=caller.actor, reason=_reason(body),
           workspace_id=caller.workspace_id)
    return job_document(db, settings, job_id, caller)


@v1.post("/backfills/{job_id}/requeue", response_model=Requeued,
         responses=NOT_FOUND | CONFLICT, tags=["operations"])
def requeue_backfill(job_id: JobId, caller: Caller, db: Db,
                     body: RequeueRequest | None = None) -> dict[str, Any]:
    """Failed items back to pending (every failed item when the body is empty); a completed
    job runs again."""
    request = body or RequeueRequest()
    count = operations.requeue(
        db, known_id(job_id), actor=caller.actor, error_kinds=request.error_kinds,
        session_ids=request.session_ids, dry_run=request.dry_run, reason=request.reason,
        workspace_id=caller.workspace_id,
    )
    return {"requeued": count, "dry_run": request.dry_run}


@v1.get("/backfills/{job_id}/items", response_model=ItemPage, responses=NOT_FOUND,
        tags=["backfills"])
def list_items(job_id: JobId, caller: Caller, db: Db, state: ItemState | None = None,
               cursor: Cursor = None, limit: Limit = documents.DEFAULT_PAGE) -> dict[str, Any]:
    """A job's items by session id (`?state=failed` for the failures)."""
    with db.transaction() as tx:
        page = documents.items_page(tx, known_id(job_id), workspace_id=caller.workspace_id,
                                  state=state, cursor=cursor, limit=limit)
    return page.as_json()


# ------------------------------------------------------------------------------ sessions


@v1.get("/sessions/{session_id}/analysis", response_model=SessionAnalysis,
        response_model_exclude_unset=True, responses=NOT_FOUND, tags=["sessions"])
def get_analysis(session_id: SessionId, caller: Caller, db: Db) -> dict[str, Any]:
    """The session's current analysis and its provenance."""
    with db.transaction() as tx:
        return documents.session_json(tx, known_id(session_id), caller.workspace_id)


@v1.post("/sessions/{session_id}/rerun", status_code=202, response_model=Rerun,
         response_model_exclude_unset=True,
         responses={**NOT_FOUND, 200: {"model": Rerun, "description": "Waited: the job ended."}},
         tags=["sessions"])
def rerun_session(
    session_id: SessionId, caller: Caller, db: Db, settings: Conf, response: Response,
    body: RerunRequest | None = None,
    wait: Annotated[bool, Query(description="Answer when the rerun has finished.")] = False,
    timeout_s: Annotated[float, Query(gt=0, le=300)] = 60.0,
) -> dict[str, Any]:
    """Re-analyse one session now with the latest draft configuration, as a one-item job."""
    job_id = operations.rerun_session(db, settings, known_id(session_id), actor=caller.actor,
                                      workspace_id=caller.workspace_id)
    job = (_wait_for(db, settings, job_id, caller, timeout_s) if wait
           else job_document(db, settings, job_id, caller))
    if job["state"] == "running":
        return {"job": job, "analysis": None}
    response.status_code = 200
    done = job["state"] == "completed" and job["counts"]["succeeded"] == 1
    with db.transaction() as tx:
        analysis = documents.session_json(tx, session_id, caller.workspace_id) if done else None
    return {"job": job, "analysis": analysis}


# ------------------------------------------------------------------------------ helpers


def job_document(db: Database, settings: Settings, job_id: str,
                 caller: Principal) -> dict[str, Any]:
    with db.transaction() as tx:
        return documents.job_json(tx, settings, job_id, caller.workspace_id)


def _reason(body: ReasonRequest | None) -> str | None:
    return body.reason if body else None


def _wait_for(db: Database, settings: Settings, job_id: str, caller: Principal,
              timeout_s: float) -> dict[str, Any]:
    """Poll the job's SQL counts until it leaves `running` or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = job_document(db, settings, job_id, caller)
        if job["state"] != "running" or time.monotonic() >= deadline:
            return job
        time.sleep(RERUN_POLL_S)
