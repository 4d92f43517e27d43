"""The console's pages and actions, mounted at `/console` by `scheduler.http.console.mount`.

Reading pages are GETs; every state change is a POST carrying the session's CSRF token, and
answers with a redirect to the page it came from (so a reload never posts twice). An htmx
poll asks the same URLs for fragments. Operations go through `scheduler.jobs.operations` (the
API's own path), audited as the signed-in admin key.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler.http.console import pages, reads, views
from scheduler.http.console.charts import throughput_chart
from scheduler.http.console.errors import CsrfRefused, SignInRequired
from scheduler.http.console.forms import optional_text, read_form
from scheduler.http.console.sessions import (
    COOKIE_PATH,
    NO_SECRET_KEY_MESSAGE,
    SESSION_COOKIE,
    SESSION_TTL_S,
    SIGN_IN_COOKIE,
    SIGN_IN_TTL_S,
    ConsoleSession,
    Sealer,
    csrf_matches,
    new_csrf_token,
    new_session,
)
from scheduler.http.routes import MAX_ID_LENGTH
from scheduler.http.schemas import storable
from scheduler.jobs import audit, documents, keys, operations
from scheduler.jobs import changes as job_changes
from scheduler.jobs import report as job_report
from scheduler.web.report_view import report_view
from shared.db import Database
from shared.errors import InvalidInput, NotFound
from shared.settings import Settings
from shared.vocabulary import JOB_STATES

router = APIRouter()

SIGNED_OUT = "signed-out"
# What a finished action says on the page it returns to; anything else in `done` is ignored.
NOTICES = {
    "pause": "Paused: nothing more is dispatched; calls in flight finish.",
    "resume": "Resumed: the job is dispatched again.",
    "cancel": "Cancelled: pending and queued sessions ended as cancelled.",
    "requeue": "Requeued {count} failed session(s); the job runs them again.",
    "revert": "Reverted {count} session(s) to their analysis before this job; "
              "{left} written later were left alone.",
}


# ------------------------------------------------------------------------------ dependencies


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _sealer(request: Request) -> Sealer | None:
    sealer: Sealer | None = request.app.state.console_sealer
    return sealer


def _signed_in(request: Request) -> ConsoleSession:
    """The operator's session: a genuine, fresh cookie whose admin key is still unrevoked."""
    sealer = _sealer(request)
    session = sealer.open_session(request.cookies.get(SESSION_COOKIE)) if sealer else None
    if session is None or not keys.admin_key_active(_db(request), session.key_id):
        raise SignInRequired()
    return session


Db = Annotated[Database, Depends(_db)]
Conf = Annotated[Settings, Depends(_settings)]
Signed = Annotated[ConsoleSession, Depends(_signed_in)]


def _known(identifier: str, what: str) -> str:
    """An id no row can have is simply not found (as in the API)."""
    try:
        storable(identifier)
    except ValueError:
        raise NotFound(f"no {what}") from None
    if len(identifier) > MAX_ID_LENGTH:
        raise NotFound(f"no {what} {identifier[:MAX_ID_LENGTH]!r}…")
    return identifier


def _require_csrf(session: ConsoleSession, fields: dict[str, str], back: str) -> None:
    if not csrf_matches(session.csrf_token, fields.get("csrf_token")):
        raise CsrfRefused(back)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int
                ) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_secure(request))


def _drop_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=_secure(request))


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=pages.PAGE_HEADERS)


def _safe_next(base: str, target: str | None) -> str:
    """Only a console path, so the sign-in form cannot send anyone elsewhere."""
    if target and target.startswith(f"{base}/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return f"{base}/jobs"


# ------------------------------------------------------------------------------ sign-in


@router.get("/")
def index(request: Request) -> RedirectResponse:
    return _redirect(f"{pages.root(request)}/jobs")


NextPage = Annotated[str | None, Query(alias="next", max_length=2000)]


@router.get("/sign-in")
def sign_in_page(request: Request, next_page: NextPage = None,
                 status: str | None = None) -> Response:
    sealer = _sealer(request)
    if sealer is None:
        return pages.render(request, "sign_in.html", session=None, status=503,
                            problem=NO_SECRET_KEY_MESSAGE, csrf_token=None, next=None,
                            signed_out=False, error=None)
    return _sign_in_form(request, sealer, next_page=next_page,
                         signed_out=status == SIGNED_OUT)


def _sign_in_form(request: Request, sealer: Sealer, *, next_page: str | None,
                  signed_out: bool = False, error: str | None = None,
                  status: int = 200) -> Response:
    csrf_token = new_csrf_token()
    response = pages.render(request, "sign_in.html", session=None, status=status,
                            problem=None, csrf_token=csrf_token,
                            next=_safe_next(pages.root(request), next_page),
                            signed_out=signed_out, error=error)
    _set_cookie(response, request, SIGN_IN_COOKIE, sealer.seal_sign_in(csrf_token),
                SIGN_IN_TTL_S)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    sealer = _sealer(request)
    if sealer is None:
        return pages.error_page(request, 503, "Sign-in is not set up", NO_SECRET_KEY_MESSAGE,
                                back=f"{pages.root(request)}/sign-in",
                                back_label="Back to sign-in")
    fields = await read_form(request)
    expected = sealer.open_sign_in(request.cookies.get(SIGN_IN_COOKIE))
    if expected is None or not csrf_matches(expected, fields.get("csrf_token")):
        raise CsrfRefused(f"{pages.root(request)}/sign-in")
    next_page = fields.get("next")
    found = await run_in_threadpool(keys.identify, _db(request), fields.get("key", "").strip())
    if found is None:
        return _sign_in_form(request, sealer, next_page=next_page, status=401,
                             error="That key is unknown or revoked.")
    if not isinstance(found, keys.Admin):
        return _sign_in_form(request, sealer, next_page=next_page, status=403,
                             error="That is a workspace key. The console opens only with an "
                                   "admin key (backfill api-key create --admin).")
    await run_in_threadpool(_audit_sign_in, _db(request), found)
    response = _redirect(_safe_next(pages.root(request), next_page))
    _set_cookie(response, request, SESSION_COOKIE,
                sealer.seal_session(new_session(found.key_id)), SESSION_TTL_S)
    _drop_cookie(response, request, SIGN_IN_COOKIE)
    return response


def _audit_sign_in(db: Database, admin: keys.Admin) -> None:
    with db.transaction() as tx:
        audit.record(tx, workspace_id=None, job_id=None, actor=admin.actor,
                     action="console_sign_in")


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    base = pages.root(request)
    fields = await read_form(request)
    try:
        session = await run_in_threadpool(_signed_in, request)
    except SignInRequired:
        session = None  # already signed out (expired, revoked): nothing to protect
    if session is not None:
        _require_csrf(session, fields, f"{base}/jobs")
    response = _redirect(f"{base}/sign-in?status={SIGNED_OUT}")
    _drop_cookie(response, request, SESSION_COOKIE)
    return response


# ------------------------------------------------------------------------------ jobs

StateFilter = Annotated[str, Query(max_length=16)]
WorkspaceFilter = Annotated[str, Query(max_length=MAX_ID_LENGTH)]
CursorParam = Annotated[str | None, Query(max_length=2000)]


@router.get("/jobs")
def jobs_page(request: Request, session: Signed, db: Db, settings: Conf,
              state: StateFilter = "", workspace: WorkspaceFilter = "",
              cursor: CursorParam = None) -> Response:
    filters = {"state": state.strip() or None, "workspace": workspace.strip() or None}
    with db.transaction() as tx:
        page = reads.jobs_page(tx, settings, state=filters["state"],
                               workspace=filters["workspace"], cursor=cursor)
        activity = reads.activity(tx, [job["id"] for job in page.items])
        # A page scoped to one workspace names no other one, not even among suggestions.
        suggest = not pages.is_fragment_request(request) and filters["workspace"] is None
        workspaces = reads.workspace_choices(tx) if suggest else []
    jobs = [views.job_view(job, activity.get(job["id"])) for job in page.items]
    query = {key: value for key, value in filters.items() if value}
    next_url = (f"{request.url.path}?{urlencode(query | {'cursor': page.next_cursor})}"
                if page.next_cursor else None)
    template = "_jobs_table.html" if pages.is_fragment_request(request) else "jobs.html"
    return pages.render(request, template, session=session, jobs=jobs, filters=filters,
                        states=JOB_STATES, workspaces=workspaces, next_url=next_url,
                        first_page=cursor is None,
                        poll_url=f"{request.url.path}?{urlencode(query)}" if cursor is None
                        else None)


def _job_view(db: Database, settings: Settings, job_id: str) -> views.JobView:
    with db.transaction() as tx:
        job = documents.job_json(tx, settings, _known(job_id, "backfill job"))
        activity = reads.activity(tx, [job_id])
    return views.job_view(job, activity.get(job_id))


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: Signed, db: Db, settings: Conf,
             failed_cursor: CursorParam = None, done: str | None = None,
             count: int = 0, left: int = 0) -> Response:
    job = _job_view(db, settings, job_id)
    with db.transaction() as tx:
        failed = documents.items_page(tx, job_id, state="failed", cursor=failed_cursor)
        chart = throughput_chart(reads.throughput(tx, job_id))
        report = job_report.change_report(tx, job_id)
    report_display = report_view(report) if report is not None else None
    notice = NOTICES[done].format(count=count, left=left) if done in NOTICES else None
    next_failed = (f"{request.url.path}?{urlencode({'failed_cursor': failed.next_cursor})}"
                   if failed.next_cursor else None)
    return pages.render(request, "job.html", session=session, view=job, chart=chart,
                        failed=failed.items, next_failed=next_failed,
                        first_failed_page=failed_cursor is None, notice=notice,
                        report=report_display)


@router.get("/jobs/{job_id}/live")
def job_live(request: Request, job_id: str, session: Signed, db: Db,
             settings: Conf) -> Response:
    """The part of the job page that changes while it runs (counts, progress, buttons)."""
    return pages.render(request, "_job_live.html", session=session,
                        view=_job_view(db, settings, job_id))


@router.get("/jobs/{job_id}/chart")
def job_chart(request: Request, job_id: str, session: Signed, db: Db,
              settings: Conf) -> Response:
    job = _job_view(db, settings, job_id)
    with db.transaction() as tx:
        chart = throughput_chart(reads.throughput(tx, job_id))
    return pages.render(request, "_job_chart.html", session=session, view=job, chart=chart)


@router.post("/jobs/{job_id}/{action}")
async def job_action(request: Request, job_id: str, action: str) -> Response:
    if action not in views.ACTIONS:
        raise NotFound(f"no action {action[:40]!r}")
    job_url = f"{pages.root(request)}/jobs/{job_id}"
    session = await run_in_threadpool(_signed_in, request)
    fields = await read_form(request)
    _require_csrf(session, fields, job_url)
    db, settings = _db(request), _settings(request)
    if action in views.CONFIRMED_ACTIONS and fields.get("confirm") != "yes":
        return await run_in_threadpool(_confirm_page, request, session, db, settings, job_id,
                                       action, fields)
    done = await run_in_threadpool(_perform, db, job_id, action, keys.Admin(session.key_id),
                                   fields)
    return _redirect(f"{job_url}?{urlencode({'done': action, **done})}#notice")


def _perform(db: Database, job_id: str, action: str, admin: keys.Admin,
             fields: dict[str, str]) -> dict[str, int]:
    """Do the action for the operator; what the notice needs to say about it."""
    job_id = _known(job_id, "backfill job")
    reason = optional_text(fields, "reason")
    if action == "requeue":
        kind = optional_text(fields, "error_kind", max_chars=64)
        count = operations.requeue(db, job_id, actor=admin.actor, reason=reason,
                                   error_kinds=[kind] if kind else None)
        return {"count": count}
    if action == "revert":
        outcome = job_changes.revert(db, job_id, actor=admin.actor, reason=reason)
        return {"count": outcome.reverted, "left": outcome.left_newer}
    transition = {"pause": operations.pause, "resume": operations.resume,
                  "cancel": operations.cancel}[action]
    transition(db, job_id, actor=admin.actor, reason=reason)
    return {}


def _confirm_page(request: Request, session: ConsoleSession, db: Database, settings: Settings,
                  job_id: str, action: str, fields: dict[str, str]) -> Response:
    """Say what an irreversible action will do before doing it."""
    job = _job_view(db, settings, job_id)
    if action not in job.actions:
        raise operations.JobStateConflict(f"job {job_id} is {job.state}: {action} is not "
                                          "possible in that state")
    preview: dict[str, Any] = {}
    if action == "revert":
        preview = job_changes.revert(db, job_id, actor=keys.Admin(session.key_id).actor,
                                     dry_run=True).as_json()
    return pages.render(request, "confirm.html", session=session, view=job, action=action,
                        preview=preview, reason=optional_text(fields, "reason") or "")


# ------------------------------------------------------------------------------ sessions


@router.get("/sessions")
def find_session(request: Request, _: Signed,
                 session_id: Annotated[str, Query(max_length=MAX_ID_LENGTH)] = "") -> Response:
    """The header's look-up box: straight to the session's page."""
    wanted = session_id.strip()
    if not wanted:
        raise InvalidInput("session_id: give a call_id or chat_id")
    return _redirect(f"{pages.root(request)}/sessions/{quote(wanted, safe='')}")


@router.get("/sessions/{session_id}")
def session_page(request: Request, session_id: str, session: Signed, db: Db) -> Response:
    with db.transaction() as tx:
        document = documents.session_json(tx, _known(session_id, "session"))
        runs = reads.history(tx, session_id)
    analysis = document.get("call_analysis") or document.get("chat_analysis")
    return pages.render(request, "session.html", session=session, document=document,
                        analysis=views.analysis_rows(analysis), runs=runs,
                        rows=views.analysis_rows)
